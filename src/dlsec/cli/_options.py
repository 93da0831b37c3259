"""Option types shared by the command modules, defined without importing PyTorch or dlsec.core.

A command module that only needs these (``dlsec data pii``) starts without the heavy libraries;
:mod:`dlsec.cli.commands` re-exports them for the modules that import them from there.
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = [
    "ArchArgOpt",
    "ArchOpt",
    "DataOpt",
    "LabelColOpt",
    "ModelOpt",
    "SeedOpt",
    "SplitSeedOpt",
    "TestSizeOpt",
]

DataOpt = Annotated[
    str,
    typer.Option(
        "--data", "-d", help="builtin:digits, builtin:breast-cancer, a .npz, a .csv or an image folder."
    ),
]
ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="zoo:NAME, a .safetensors file (with --arch) or an .onnx file.")
]
ArchOpt = Annotated[
    str | None, typer.Option("--arch", help="Architecture: a built-in name (cnn, mlp) or module:factory.")
]
ArchArgOpt = Annotated[
    list[str] | None, typer.Option("--arch-arg", help="Architecture keyword argument key=value (repeatable).")
]
LabelColOpt = Annotated[
    str | None, typer.Option("--label-column", help="CSV label column (default: label/target/class/y).")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice; recorded in outputs.")]
TestSizeOpt = Annotated[
    float, typer.Option("--test-size", help="Fraction of rows held out as the test split.")
]
SplitSeedOpt = Annotated[
    int, typer.Option("--split-seed", help="Seed of the deterministic train/test split.")
]
