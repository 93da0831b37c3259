"""Shared CLI plumbing: the Typer app, global options, output and the entry point."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dlsec.cli._lazy import LazyGroup
from dlsec.errors import EXIT_USAGE, Error, UsageError

app = typer.Typer(
    name="dlsec",
    cls=LazyGroup,  # commands load on first use: see dlsec.cli._lazy
    rich_markup_mode=None,  # plain Click help: typer.rich_utils (markdown-it) costs 60 ms a start
    help="Deep-learning security toolkit: attack, harden, release, serve, monitor, respond.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,  # locals can hold keys and passphrases
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
PassFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="Read the passphrase from this file (first line). Default: $DLSEC_PASSPHRASE, else a prompt.",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output if it exists.")]


@dataclass
class Settings:
    """Options given before the command (``dlsec --home DIR CMD``)."""

    home: Path | None = None
    device: str | None = None


@app.callback()
def _global(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="dlsec home (registry, keys, caches); default $DLSEC_HOME or the user data dir.",
            envvar="DLSEC_HOME",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device", help="Where white-box models run: cpu or cuda (default: cuda when present)."
        ),
    ] = None,
) -> None:
    if device is not None and device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise typer.BadParameter("use cpu, cuda or cuda:N", param_hint="--device")
    ctx.obj = Settings(home=home, device=device)


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_object(Settings)
    return obj if obj is not None else Settings()


def out_console() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def err_console() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextmanager
def progress_bar(
    description: str, *, enabled: bool
) -> Iterator[Callable[[int, int, dict[str, float]], None]]:
    """A Rich progress bar on stderr, fed by ``callback(done, total, stats)``."""
    if not enabled:
        yield lambda done, total, stats: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=err_console(),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=None, stats="")

        def callback(done: int, total: int, stats: dict[str, float]) -> None:
            text = " ".join(f"{k}={v:.3f}" for k, v in stats.items())
            progress.update(task, completed=done, total=total, stats=text)

        yield callback


def _passphrase(passphrase_file: Path | None, *, confirm: bool, prompt: str) -> str:
    if passphrase_file is not None:
        try:
            text = passphrase_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise UsageError(f"--passphrase-file {passphrase_file}: cannot read it ({reason})") from None
        line = text.splitlines()[0] if text else ""
        if not line:
            raise UsageError(f"--passphrase-file {passphrase_file} is empty")
        return line
    env = os.environ.get("DLSEC_PASSPHRASE")
    if env:
        return env
    if not sys.stdin.isatty():
        raise UsageError(
            "no passphrase: pass --passphrase-file, set DLSEC_PASSPHRASE, or run in a terminal to be prompted"
        )
    value: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    if not value:
        raise UsageError("the passphrase is empty")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` and return the exit code (testable entry point).

    Only dlsec's own errors are mapped to one-line messages (exit 2 for bad input, 1 for a
    security finding); anything else is a bug and keeps its traceback.
    """
    command = typer.main.get_command(app)
    try:
        # Standalone mode: Typer reports its own usage errors (exit 2) and --help itself.
        command.main(args=list(argv) if argv is not None else None, prog_name="dlsec", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
    except Error as exc:
        err_console().print(f"error: {exc}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console().print("interrupted", markup=False)
        return 130
    return 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
