"""TensorFlow SavedModel (``saved_model.pb``): the ops its graphs and functions run, without TensorFlow.

A SavedModel is a protobuf: ``SavedModel.meta_graphs`` (field 2) holds ``MetaGraphDef``s whose
``graph_def`` (field 2) holds ``NodeDef``s (field 1) and a function library (field 2) of
``FunctionDef``s whose bodies are ``NodeDef``s too (field 3); each ``NodeDef`` names its op in
field 2. Loading the model and calling a signature runs those ops, so ops that run Python or
touch files are findings. Checkpoint save and restore ops, present in every SavedModel, are not.
"""

from __future__ import annotations

from collections.abc import Iterator

from dlsec.scan._findings import Finding, Malformed, Severity
from dlsec.scan._onnx import _LEN, _VARINT, _Bad, _fields

__all__ = ["RISKY_OPS", "looks_like_saved_model", "scan_saved_model_buffer"]

# op -> (severity, what it does)
RISKY_OPS: dict[str, tuple[Severity, str]] = {
    "PyFunc": ("critical", "runs a Python function"),
    "PyFuncStateless": ("critical", "runs a Python function"),
    "EagerPyFunc": ("critical", "runs a Python function"),
    "ReadFile": ("high", "reads a file named at run time"),
    "WriteFile": ("high", "writes a file named at run time"),
    "MatchingFiles": ("high", "lists files matching a pattern"),
    "WholeFileReader": ("high", "reads whole files"),
    "WholeFileReaderV2": ("high", "reads whole files"),
    "ImmutableConst": ("high", "memory-maps a file region as a tensor"),
    "PrintV2": ("medium", "prints to a stream or file"),
}
_MAX_DEPTH = 32


def looks_like_saved_model(buf: memoryview) -> bool:
    """Whether the bytes parse as a SavedModel whose first meta graph holds a graph of named ops."""
    if not len(buf) or buf[0] not in (0x08, 0x12):
        return False
    try:
        top = list(_fields(buf, 0, len(buf)))
        if not top or any(f not in (1, 2) or w != (_VARINT if f == 1 else _LEN) for f, w, _, _ in top):
            return False
        return any(True for _ in _ops(buf, *next((s, e) for f, _, s, e in top if f == 2)))
    except (_Bad, StopIteration):
        return False


def _children(buf: memoryview, start: int, end: int, field: int) -> Iterator[tuple[int, int]]:
    for f, wire, s, e in _fields(buf, start, end):
        if f == field and wire == _LEN:
            yield s, e


def _node_ops(buf: memoryview, start: int, end: int) -> Iterator[str]:
    for s, e in _children(buf, start, end, 2):
        yield bytes(buf[s:e]).decode("utf-8", "replace")


def _ops(buf: memoryview, meta_start: int, meta_end: int) -> Iterator[str]:
    """Op names of one MetaGraphDef: its graph's nodes and its library functions' nodes."""
    for g_start, g_end in _children(buf, meta_start, meta_end, 2):  # graph_def
        for n_start, n_end in _children(buf, g_start, g_end, 1):  # node
            yield from _node_ops(buf, n_start, n_end)
        for lib_start, lib_end in _children(buf, g_start, g_end, 2):  # library
            for fn_start, fn_end in _children(buf, lib_start, lib_end, 1):  # function
                for n_start, n_end in _children(buf, fn_start, fn_end, 3):  # node_def
                    yield from _node_ops(buf, n_start, n_end)


def scan_saved_model_buffer(buf: memoryview, *, member: str | None) -> list[Finding]:
    """Findings for the ops a ``saved_model.pb`` runs.

    Raises:
        Malformed: the bytes are not a SavedModel dlsec can read.
    """
    try:
        metas = list(_children(buf, 0, len(buf), 2))
        ops = [op for start, end in metas for op in _ops(buf, start, end)]
    except _Bad as exc:
        raise Malformed(f"not a readable SavedModel ({exc})", member=member) from None
    if not metas:
        raise Malformed("SavedModel without a meta graph", member=member)
    findings = []
    for op in sorted(set(ops)):
        if op in RISKY_OPS:
            severity, what = RISKY_OPS[op]
            count = ops.count(op)
            findings.append(
                Finding(
                    severity,
                    "tf-op",
                    f"the graph uses {op} ({count}x), which {what} when the model is called",
                    import_name=f"tf.raw_ops.{op}",
                    member=member,
                )
            )
    return findings
