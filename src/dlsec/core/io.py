"""Safe model I/O: safetensors in and out, ONNX as a black box, pickle never.

The format of a file is decided by its content, not its name (the scanner's detection,
``dlsec.scan.detect_format``). Only two formats are ever loaded, and only after the
scanner's checks pass: safetensors (tensors and a JSON header, nothing executable) and ONNX (run by
onnxruntime as a black-box model). Pickle-based files (PyTorch ``.pt``/``.pth``/``.bin``
checkpoints, TorchScript, joblib, NumPy object arrays, compressed pickles) can run code when
loaded; they are refused with a pointer to ``dlsec scan`` and safetensors. Anything
unrecognised is refused too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlsec.core.arch import ARCHITECTURES, build_architecture
from dlsec.core.model import DecisionModel, ScoreModel, WhiteBoxModel
from dlsec.core.spec import InputSpec
from dlsec.errors import ModelLoadError, SpecError, UnsafeModelFileError

__all__ = [
    "sniff_format",
    "save_safetensors_model",
    "load_safetensors_model",
    "load_onnx_model",
    "read_safetensors_metadata",
    "read_dlsec_metadata",
    "PICKLE_FAMILY",
    "METADATA_KEY",
]

# Formats that can execute code when loaded by their usual loader.
PICKLE_FAMILY = frozenset({"pickle", "torch-zip", "torchscript", "numpy-object", "compressed", "keras"})

METADATA_KEY = "dlsec"


def sniff_format(path: str | Path) -> str:
    """Name a file's format from its bytes (never by extension, never by loading it).

    The detection is the scanner's (:func:`dlsec.scan.detect_format`), so loading and
    ``dlsec scan`` always agree on what a file is. Returns one of ``safetensors``, ``onnx``,
    ``pickle``, ``torch-zip``, ``torchscript``, ``numpy``, ``numpy-object``, ``npz``, ``keras``,
    ``zip``, ``compressed``, ``hdf5``, ``json``, ``empty`` or ``unknown``.
    """
    from dlsec.scan import detect_format

    return detect_format(path)


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (strings only), after format checks."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a valid safetensors file ({exc})") from None
    return {str(k): str(v) for k, v in meta.items()}


def save_safetensors_model(
    module: nn.Module,
    spec: InputSpec,
    path: str | Path,
    *,
    arch: str,
    arch_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Save weights as safetensors, with the architecture and input spec as metadata.

    The metadata is one key, ``dlsec``, holding canonical JSON, so that the same weights always
    give the same bytes (safetensors orders several metadata keys arbitrarily). The write is
    atomic. Returns the path written.
    """
    from safetensors.torch import save_file

    from dlsec.fsutil import atomic_write_with

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {"arch": arch, "arch_kwargs": arch_kwargs or {}, "spec": spec.to_dict()}
    metadata = {METADATA_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":"))}
    return atomic_write_with(Path(path), lambda tmp: save_file(state, str(tmp), metadata=metadata))


def read_dlsec_metadata(path: str | Path) -> dict[str, Any]:
    """dlsec's own metadata in a safetensors file (``{}`` when absent), checked for shape."""
    meta = read_safetensors_metadata(path)
    if METADATA_KEY not in meta:
        return {}
    try:
        value = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError:
        raise ModelLoadError(f"{path}: metadata '{METADATA_KEY}' is not valid JSON") from None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("arch", ""), str)
        or not isinstance(value.get("arch_kwargs", {}), dict)
        or not isinstance(value.get("spec", {}), dict)
    ):
        raise ModelLoadError(f"{path}: metadata '{METADATA_KEY}' has an unexpected layout")
    return value


def refuse_unsafe(path: Path, fmt: str) -> None:
    """Raise unless ``fmt`` is a format dlsec loads and the file passes the scanner's checks.

    Pickle-family files are refused outright (they are never loaded, only scanned). A
    safetensors file must have a valid header (dtypes, offsets in bounds, contiguous, nothing
    trailing); an ONNX file must not point its external data outside its folder.
    """
    if fmt in PICKLE_FAMILY or fmt in ("numpy", "npz"):
        kind = {
            "pickle": "a pickle",
            "torch-zip": "a pickle-based PyTorch checkpoint",
            "torchscript": "a TorchScript archive",
            "numpy-object": "a NumPy file with pickled objects",
            "compressed": "a compressed file (likely a pickle or joblib dump)",
            "keras": "a Keras archive",
            "numpy": "a NumPy array file",
            "npz": "a NumPy archive",
        }[fmt]
        raise UnsafeModelFileError(
            f"{path}: refusing to load {kind}, which can run code or is not a model format dlsec "
            "loads; check it with `dlsec scan` and convert the weights to .safetensors (`dlsec convert`)"
        )
    if fmt not in ("safetensors", "onnx"):
        raise ModelLoadError(
            f"{path}: unrecognised model format ({fmt}); dlsec loads .safetensors (with --arch) "
            "and .onnx files"
        )
    from dlsec.scan import scan_file

    result = scan_file(path)
    if fmt == "safetensors" and result.verdict != "safe":
        raise ModelLoadError(f"{path}: not a valid safetensors file ({result.error})")
    if result.verdict == "unsafe":
        raise UnsafeModelFileError(
            f"{path}: refusing to load: {result.findings[0].reason}; see `dlsec scan {path}`"
        )
    if result.verdict == "unscannable":
        raise ModelLoadError(f"{path}: not a valid {fmt} file ({result.error})")


def load_safetensors_model(
    path: str | Path,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    spec: InputSpec | None = None,
    spec_hint: InputSpec | None = None,
    device: torch.device | str | None = None,
) -> WhiteBoxModel:
    """Load a white-box model from a safetensors file.

    The architecture is ``arch`` (a registered name, or ``module:factory`` that the caller
    chose to trust); without it, the file's metadata may name a *registered* architecture.
    The input spec is ``spec``, else the file's metadata, else ``spec_hint`` (e.g. the spec of
    the dataset it will be evaluated on).

    Raises:
        UnsafeModelFileError: the file is pickle-based (it is never loaded).
        ModelLoadError: wrong format, unknown architecture, weights that do not fit it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from dlsec.core.model import default_device

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    fmt = sniff_format(path)
    refuse_unsafe(path, fmt)
    if fmt != "safetensors":
        raise ModelLoadError(f"{path}: expected a safetensors file, found {fmt}")
    meta = read_dlsec_metadata(path)
    meta_arch = meta.get("arch")
    meta_kwargs = meta.get("arch_kwargs", {})
    if arch is None:
        if meta_arch is None:
            raise ModelLoadError(
                f"{path}: the file does not name its architecture; pass --arch module:factory"
            )
        arch = meta_arch
        module = build_architecture(
            arch, meta_kwargs if arch_kwargs is None else arch_kwargs, allow_import=arch in ARCHITECTURES
        )
    else:
        kwargs = arch_kwargs if arch_kwargs is not None else (meta_kwargs if arch == meta_arch else {})
        module = build_architecture(arch, kwargs)
    if spec is None:
        if "spec" in meta:
            try:
                spec = InputSpec.from_dict(meta["spec"])
            except SpecError as exc:
                raise ModelLoadError(f"{path}: bad input spec in metadata: {exc}") from None
        elif spec_hint is not None:
            spec = spec_hint
        else:
            raise ModelLoadError(f"{path}: no input spec in the file; give the data the model expects")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not a valid safetensors file ({exc})") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise ModelLoadError(f"{path}: weights do not fit architecture {arch!r}: {detail[:300]}") from None
    target = torch.device(device) if device is not None else default_device()
    module.to(target).eval()
    return WhiteBoxModel(module, spec, device=target)


def load_onnx_model(
    path: str | Path,
    *,
    spec: InputSpec | None = None,
    spec_hint: InputSpec | None = None,
    output: str = "logits",
    labels_only: bool = False,
) -> ScoreModel | DecisionModel:
    """Load an ONNX classifier as a black-box model run by onnxruntime (on the CPU).

    Args:
        path: the ``.onnx`` file.
        spec: the input spec; else ``spec_hint`` completed with the graph's input shape.
        output: whether the first output holds ``logits`` (softmax applied) or ``probs``.
        labels_only: expose predicted labels only (decision-based access).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    fmt = sniff_format(path)
    refuse_unsafe(path, fmt)
    if fmt != "onnx":
        raise ModelLoadError(f"{path}: expected an ONNX file, found {fmt}")
    if output not in ("logits", "probs"):
        raise ModelLoadError(f"ONNX output must be 'logits' or 'probs', got {output!r}")
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelLoadError(
            f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})"
        ) from None
    inp = session.get_inputs()[0]
    out = session.get_outputs()[0]
    if spec is None:
        if spec_hint is None:
            raise ModelLoadError(f"{path}: an ONNX model needs the data it expects to fix its input spec")
        spec = spec_hint
    graph_shape = [d if isinstance(d, int) else None for d in inp.shape[1:]]
    if len(graph_shape) != len(spec.shape) or any(
        g is not None and g != s for g, s in zip(graph_shape, spec.shape, strict=False)
    ):
        raise ModelLoadError(
            f"{path}: the graph takes inputs of shape {inp.shape}, the data have "
            f"(N, {', '.join(map(str, spec.shape))})"
        )
    out_classes = out.shape[-1] if out.shape and isinstance(out.shape[-1], int) else None
    if out_classes is not None and out_classes != spec.num_classes:
        raise ModelLoadError(
            f"{path}: the graph outputs {out_classes} classes, the data have {spec.num_classes}"
        )
    fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def run(x: torch.Tensor) -> np.ndarray:
        arr = x.numpy().astype(np.float32)
        if fixed_batch is not None and arr.shape[0] != fixed_batch:
            chunks = [session.run([out.name], {inp.name: arr[i : i + 1]})[0] for i in range(arr.shape[0])]
            res = np.concatenate(chunks) if chunks else np.zeros((0, spec.num_classes), np.float32)
        else:
            res = session.run([out.name], {inp.name: arr})[0]
        res = np.asarray(res, dtype=np.float64).reshape(arr.shape[0], -1)
        if output == "logits":
            res = res - res.max(axis=1, keepdims=True)
            res = np.exp(res)
            res /= res.sum(axis=1, keepdims=True)
        return res

    model = ScoreModel(run, spec, batch_size=1 if fixed_batch == 1 else 256)
    return model.as_decision() if labels_only else model
