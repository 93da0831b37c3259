"""Resolve a model reference (as the CLI gets it) to a model under test."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from dlsec.core.io import load_onnx_model, load_safetensors_model, refuse_unsafe, sniff_format
from dlsec.core.model import Model
from dlsec.core.spec import InputSpec
from dlsec.errors import ModelLoadError

__all__ = ["load_model"]

_URL = re.compile(r"^https?://", re.IGNORECASE)


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
    if text.startswith("zoo:"):
        from dlsec.core.zoo import load_zoo_model

        return load_zoo_model(text.removeprefix("zoo:"), home=home, device=device)
    if text.startswith("registry:"):
        from dlsec.release import Registry

        registry = Registry.open(home=home)
        try:
            record = registry.open_for_use(text.removeprefix("registry:"))
        finally:
            registry.close()
        path = record.path / "model.safetensors" if record.kind == "dir" else record.path
        if not path.is_file():
            raise ModelLoadError(
                f"{record.ref} holds no model.safetensors; register the model folder or file"
            )
        fmt = sniff_format(path)
        refuse_unsafe(path, fmt)
        if fmt == "onnx":
            return load_onnx_model(path, spec=spec, spec_hint=spec_hint, output=onnx_output)
        return load_safetensors_model(
            path, arch=arch, arch_kwargs=arch_kwargs, spec=spec, spec_hint=spec_hint, device=device
        )
    if _URL.match(text):
        from dlsec.serve.client import connect

        return connect(text)
    path = Path(text)
    if not path.exists():
        raise ModelLoadError(f"model not found: {text} (expected zoo:NAME, a .safetensors or an .onnx file)")
    if path.is_dir():
        candidate = path / "model.safetensors"
        if not candidate.is_file():
            raise ModelLoadError(f"{path} is a folder without model.safetensors; name the model file")
        path = candidate
    fmt = sniff_format(path)
    refuse_unsafe(path, fmt)
    if fmt == "onnx":
        return load_onnx_model(path, spec=spec, spec_hint=spec_hint, output=onnx_output)
    return load_safetensors_model(
        path, arch=arch, arch_kwargs=arch_kwargs, spec=spec, spec_hint=spec_hint, device=device
    )
