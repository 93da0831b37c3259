"""The ``dlsec`` command line: Typer commands, thin over the public library API."""

from dlsec.cli._app import app, main, run

__all__ = ["app", "main", "run"]
