"""Resolve a model reference (as the CLI gets it) to a model under test.

Files (``.safetensors``, ``.onnx``) are loaded here. A reference with a scheme (``zoo:``,
``registry:``, ``http(s)://``) is handed to the loader that the package owning the scheme
registers: core imports none of them. Owners register through the ``dlsec.model_schemes``
entry-point group (``pyproject.toml``), read the first time a scheme is used, or at run time
with :func:`register_scheme`. An unknown scheme is an error, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from dlsec.core.io import load_onnx_model, load_safetensors_model, refuse_unsafe, sniff_format
from dlsec.core.model import Model
from dlsec.core.spec import InputSpec
from dlsec.errors import ModelLoadError, UsageError

__all__ = ["SCHEMES", "LoadOptions", "load_model", "load_model_file", "register_scheme"]

ENTRY_POINT_GROUP = "dlsec.model_schemes"
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]+):", re.IGNORECASE)


@dataclass(frozen=True)
class LoadOptions:
    """What :func:`load_model` was asked besides the reference (passed on to scheme loaders)."""

    arch: str | None = None
    arch_kwargs: dict[str, Any] | None = None
    spec: InputSpec | None = None
    spec_hint: InputSpec | None = None
    home: str | Path | None = None
    device: torch.device | str | None = None
    onnx_output: str = "logits"


SchemeLoader = Callable[[str, LoadOptions], Model]
SCHEMES: dict[str, SchemeLoader] = {}


def register_scheme(name: str) -> Callable[[SchemeLoader], SchemeLoader]:
    """Decorator: ``load_model("NAME:...")`` calls the decorated ``loader(ref, options)``.

    ``ref`` is the whole reference. A duplicate name raises ``UsageError``.

    Example:
        >>> @register_scheme("s3")                                  # doctest: +SKIP
        ... def load_s3(ref: str, options: LoadOptions) -> Model: ...
    """
    key = name.lower()

    def decorator(loader: SchemeLoader) -> SchemeLoader:
        if key in SCHEMES:
            raise UsageError(f"model scheme {key!r} is already registered")
        SCHEMES[key] = loader
        return loader

    return decorator


def _scheme_loader(name: str) -> SchemeLoader | None:
    name = name.lower()
    if name not in SCHEMES:
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
            loader = ep.load()
            SCHEMES.setdefault(name, loader)
    return SCHEMES.get(name)


def load_model(
    ref: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    spec: InputSpec | None = None,
    spec_hint: InputSpec | None = None,
    home: str | Path | None = None,
    device: torch.device | str | None = None,
    onnx_output: str = "logits",
) -> Model:
    """Load a model under test from a reference.

    Args:
        ref: ``zoo:NAME`` (built in, trained on first use and cached), ``registry:NAME[@VERSION|@ALIAS]``
            (signature and scan verified first; quarantined, retired or unsigned versions refused), a
            gateway URL ``http(s)://HOST:PORT/v1/models/NAME`` (black-box; key from
            ``$DLSEC_API_KEY``), a ``.safetensors`` file
            (with ``arch``, or metadata naming a built-in architecture) or an ``.onnx`` file
            (black-box, score-based).
        arch: ``module:factory`` or a built-in architecture name, for safetensors files.
        arch_kwargs: keyword arguments for the architecture factory.
        spec: the input spec, overriding what the file says.
        spec_hint: used when the file carries no spec (typically the dataset's).
        home: the dlsec home directory (zoo cache); defaults to ``DLSEC_HOME``.
        device: where a white-box model runs (default: CUDA when present, else CPU).
        onnx_output: whether an ONNX graph outputs ``logits`` or ``probs``.

    Raises:
        UnsafeModelFileError: a pickle-based file; it is never loaded.
        ModelLoadError: anything else that prevents loading.

    Example:
        >>> model = load_model("zoo:breast-cancer-mlp")    # doctest: +SKIP
        >>> model.access.label                             # doctest: +SKIP
        'white-box'
    """
    text = str(ref)
    options = LoadOptions(arch, arch_kwargs, spec, spec_hint, home, device, onnx_output)
    m = _SCHEME.match(text)
    if m is not None and not Path(text).exists():
        loader = _scheme_loader(m.group(1))
        if loader is None:
            raise ModelLoadError(
                f"unknown model reference scheme {m.group(1)!r} in {text!r}; use zoo:NAME, "
                "registry:NAME[@VERSION], a gateway URL, or a .safetensors / .onnx file"
            )
        return loader(text, options)
    path = Path(text)
    if not path.exists():
        raise ModelLoadError(f"model not found: {text} (expected zoo:NAME, a .safetensors or an .onnx file)")
    if path.is_dir():
        candidate = path / "model.safetensors"
        if not candidate.is_file():
            raise ModelLoadError(f"{path} is a folder without model.safetensors; name the model file")
        path = candidate
    return load_model_file(path, options)


def load_model_file(path: Path, options: LoadOptions) -> Model:
    """Load a ``.safetensors`` (white-box) or ``.onnx`` (score-based) file, after its scan."""
    fmt = sniff_format(path)
    refuse_unsafe(path, fmt)
    if fmt == "onnx":
        return load_onnx_model(
            path, spec=options.spec, spec_hint=options.spec_hint, output=options.onnx_output
        )
    return load_safetensors_model(
        path,
        arch=options.arch,
        arch_kwargs=options.arch_kwargs,
        spec=options.spec,
        spec_hint=options.spec_hint,
        device=options.device,
    )
