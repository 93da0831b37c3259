"""TensorFlow graphs (``saved_model.pb``, MetaGraph ``.meta``): the ops they run, without TensorFlow.

A SavedModel is a protobuf: ``SavedModel.meta_graphs`` (field 2) holds ``MetaGraphDef``s; a
``.meta`` file (``tf.compat.v1.train.export_meta_graph``, written beside every TF1 checkpoint) is
one ``MetaGraphDef`` on its own. Its ``graph_def`` (field 2) holds ``NodeDef``s (field 1) and a
function library (field 2) of ``FunctionDef``s whose bodies are ``NodeDef``s too (field 3); each
``NodeDef`` names its op in field 2. Loading the graph and running it runs those ops, so ops
that run Python, touch files or open connections are findings (:data:`RISKY_OPS`, one list for
both formats). Checkpoint save and restore ops, present in every SavedModel, are not.

Keras 2 SavedModels carry ``keras_metadata.pb`` beside the graph: a ``SavedMetadata`` of
``SavedObject`` nodes (``node_id`` 2, ``node_path`` 3, ``identifier`` 4 such as
``_tf_keras_layer``, ``metadata`` 5 as JSON, ``version`` 6). ``tf.keras.models.load_model``
rebuilds each layer from that JSON, Lambda layers' marshalled bytecode included; the JSON is
returned for the Keras config checks.

An op TensorFlow does not register (:data:`dlsec.scan._opnames.TF_OPS`) and that is not a
function of the graph's own library is a custom op: its kernel is native code from a library
loaded with ``tf.load_op_library`` outside the file, named as code dlsec does not vet. Asset
files (``asset_file_def``) whose names leave the assets folder are findings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from dlsec.scan._findings import Finding, Malformed, Severity
from dlsec.scan._onnx import _LEN, _VARINT, _Bad, _fields
from dlsec.scan._opnames import TF_OPS, TF_VERSION

__all__ = [
    "RISKY_OPS",
    "keras_metadata",
    "looks_like_keras_metadata",
    "looks_like_metagraph",
    "looks_like_saved_model",
    "scan_metagraph_buffer",
    "scan_saved_model_buffer",
]

_PY: tuple[Severity, str] = ("critical", "runs a Python function")
_READS: tuple[Severity, str] = ("high", "reads files named at run time")
_WRITES: tuple[Severity, str] = ("high", "writes files named at run time")
_NET: tuple[Severity, str] = ("high", "opens a network connection to an address in the graph")
_DEBUG: tuple[Severity, str] = ("medium", "sends debug tensors to the URLs in its attributes")
# op -> (severity, what it does)
RISKY_OPS: dict[str, tuple[Severity, str]] = {
    "PyFunc": _PY,
    "PyFuncStateless": _PY,
    "EagerPyFunc": _PY,
    "ReadFile": ("high", "reads a file named at run time"),
    "WriteFile": ("high", "writes a file named at run time"),
    "MatchingFiles": ("high", "lists files matching a pattern"),
    "MatchingFilesDataset": ("high", "lists files matching a pattern"),
    "ExperimentalMatchingFilesDataset": ("high", "lists files matching a pattern"),
    "ImmutableConst": ("high", "memory-maps a file region as a tensor"),
    "FileSystemSetConfiguration": ("high", "changes the configuration of a file system"),
    "PrintV2": ("medium", "prints to a stream or file"),
    **{
        op: _READS
        for op in (
            "WholeFileReader",
            "WholeFileReaderV2",
            "TFRecordReader",
            "TFRecordReaderV2",
            "TextLineReader",
            "TextLineReaderV2",
            "FixedLengthRecordReader",
            "FixedLengthRecordReaderV2",
            "LMDBReader",
            "TFRecordDataset",
            "TFRecordDatasetV2",
            "TextLineDataset",
            "FixedLengthRecordDataset",
            "FixedLengthRecordDatasetV2",
            "CSVDataset",
            "CSVDatasetV2",
            "ExperimentalCSVDataset",
            "LMDBDataset",
            "ExperimentalLMDBDataset",
            "SqlDataset",
            "ExperimentalSqlDataset",
            "LoadDataset",
            "SnapshotDatasetReader",
            "SnapshotNestedDatasetReader",
            "SnapshotChunkDataset",
            "ListSnapshotChunksDataset",
            "LoadAndRemapMatrix",
            "GenerateVocabRemapping",
        )
    },
    **{
        op: _WRITES
        for op in (
            "SaveDataset",
            "SaveDatasetV2",
            "DatasetToTFRecord",
            "ExperimentalDatasetToTFRecord",
            "SnapshotDataset",
            "SnapshotDatasetV2",
            "CacheDataset",
            "CacheDatasetV2",
            "CreateSummaryFileWriter",
            "CreateSummaryDbWriter",
            "DebugIdentityV2",
            "DebugIdentityV3",
        )
    },
    **{
        op: _DEBUG
        for op in ("DebugIdentity", "DebugNanCount", "DebugNumericSummary", "DebugNumericSummaryV2")
    },
    **{
        op: _NET
        for op in (
            "DataServiceDataset",
            "DataServiceDatasetV2",
            "DataServiceDatasetV3",
            "DataServiceDatasetV4",
            "RpcClient",
            "RpcServer",
            "RpcServerStart",
            "RpcCall",
        )
    },
}
_META_FIELDS = frozenset(range(1, 8))  # meta_info_def ... object_graph_def, all messages
_MAX_UNVETTED = 20


def _children(buf: memoryview, start: int, end: int, field: int) -> Iterator[tuple[int, int]]:
    for f, wire, s, e in _fields(buf, start, end):
        if f == field and wire == _LEN:
            yield s, e


def _text(buf: memoryview, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", "replace")


def _node_ops(buf: memoryview, start: int, end: int) -> Iterator[str]:
    for s, e in _children(buf, start, end, 2):
        yield _text(buf, s, e)


def _ops(buf: memoryview, meta_start: int, meta_end: int) -> Iterator[str]:
    """Op names of one MetaGraphDef: its graph's nodes and its library functions' nodes."""
    for g_start, g_end in _children(buf, meta_start, meta_end, 2):  # graph_def
        for n_start, n_end in _children(buf, g_start, g_end, 1):  # node
            yield from _node_ops(buf, n_start, n_end)
        for lib_start, lib_end in _children(buf, g_start, g_end, 2):  # library
            for fn_start, fn_end in _children(buf, lib_start, lib_end, 1):  # function
                for n_start, n_end in _children(buf, fn_start, fn_end, 3):  # node_def
                    yield from _node_ops(buf, n_start, n_end)


def _functions(buf: memoryview, meta_start: int, meta_end: int) -> set[str]:
    """Names of the library's functions (``FunctionDef.signature.name``): a node may call one as its op."""
    names: set[str] = set()
    for g_start, g_end in _children(buf, meta_start, meta_end, 2):
        for lib_start, lib_end in _children(buf, g_start, g_end, 2):
            for fn_start, fn_end in _children(buf, lib_start, lib_end, 1):
                for sig_start, sig_end in _children(buf, fn_start, fn_end, 1):
                    names.update(_text(buf, s, e) for s, e in _children(buf, sig_start, sig_end, 1))
    return names


def _assets(buf: memoryview, meta_start: int, meta_end: int) -> Iterator[str]:
    for a_start, a_end in _children(buf, meta_start, meta_end, 6):  # asset_file_def
        for s, e in _children(buf, a_start, a_end, 2):  # filename
            yield _text(buf, s, e)


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


def looks_like_metagraph(buf: memoryview) -> bool:
    """Whether the bytes parse as one ``MetaGraphDef``: known message fields, a graph of named ops."""
    if not len(buf) or buf[0] not in (0x0A, 0x12):
        return False
    try:
        top = list(_fields(buf, 0, len(buf)))
        if not top or any(f not in _META_FIELDS or w != _LEN for f, w, _, _ in top):
            return False
        for s, e in _children(buf, 0, len(buf), 1):  # MetaInfoDef: strings and messages, one bool (7)
            if any(w != (_VARINT if f == 7 else _LEN) for f, w, _, _ in _fields(buf, s, e)):
                return False
        for g_start, g_end in _children(buf, 0, len(buf), 2):
            for n_start, n_end in _children(buf, g_start, g_end, 1):
                node = {f: w for f, w, _, _ in _fields(buf, n_start, n_end)}
                if node.get(1) != _LEN or node.get(2) != _LEN:
                    return False
        return any(True for _ in _ops(buf, 0, len(buf)))
    except _Bad:
        return False


def _scan_metas(
    buf: memoryview, metas: list[tuple[int, int]], *, member: str | None
) -> tuple[list[Finding], list[str]]:
    ops: list[str] = []
    functions: set[str] = set()
    findings: list[Finding] = []
    for start, end in metas:
        ops.extend(_ops(buf, start, end))
        functions |= _functions(buf, start, end)
        for name in _assets(buf, start, end):
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                findings.append(
                    Finding(
                        "high",
                        "tf-asset-path",
                        f"the graph names the asset file {name[:120]!r}, outside the model's assets folder",
                        member=member,
                    )
                )
    for op in sorted(set(ops)):
        if op in RISKY_OPS:
            severity, what = RISKY_OPS[op]
            findings.append(
                Finding(
                    severity,
                    "tf-op",
                    f"the graph uses {op} ({ops.count(op)}x), which {what} when the model is called",
                    import_name=f"tf.raw_ops.{op}",
                    member=member,
                )
            )
    custom = sorted({op for op in ops if op not in TF_OPS and op not in functions})
    unvetted = [
        f"custom op {op[:80]!r} (not one of TensorFlow {TF_VERSION}'s ops: a kernel from a library "
        "loaded outside the file)"
        for op in custom[:_MAX_UNVETTED]
    ]
    if len(custom) > _MAX_UNVETTED:
        unvetted.append(f"{len(custom) - _MAX_UNVETTED} more custom ops")
    return findings, unvetted


def scan_saved_model_buffer(buf: memoryview, *, member: str | None) -> tuple[list[Finding], list[str]]:
    """Findings and custom ops (code dlsec does not vet) of a ``saved_model.pb``.

    Raises:
        Malformed: the bytes are not a SavedModel dlsec can read.
    """
    try:
        metas = list(_children(buf, 0, len(buf), 2))
        if not metas:
            raise Malformed("SavedModel without a meta graph", member=member)
        return _scan_metas(buf, metas, member=member)
    except _Bad as exc:
        raise Malformed(f"not a readable SavedModel ({exc})", member=member) from None


def scan_metagraph_buffer(buf: memoryview, *, member: str | None) -> tuple[list[Finding], list[str]]:
    """Findings and custom ops of a TensorFlow MetaGraph (``.meta``).

    Raises:
        Malformed: the bytes are not a MetaGraphDef dlsec can read.
    """
    if not looks_like_metagraph(buf):
        raise Malformed("not a readable TensorFlow MetaGraph (MetaGraphDef does not parse)", member=member)
    try:
        return _scan_metas(buf, [(0, len(buf))], member=member)
    except _Bad as exc:  # pragma: no cover - looks_like_metagraph walked the same fields
        raise Malformed(f"not a readable TensorFlow MetaGraph ({exc})", member=member) from None


_KERAS_NODE = {2: _VARINT, 3: _LEN, 4: _LEN, 5: _LEN, 6: _LEN}


def looks_like_keras_metadata(buf: memoryview) -> bool:
    """A Keras ``SavedMetadata``: nodes whose fields are the schema's and whose identifier is Keras's."""
    if not len(buf) or buf[0] != 0x0A:
        return False
    try:
        nodes = list(_fields(buf, 0, len(buf)))
        if not nodes or any((f, w) != (1, _LEN) for f, w, _, _ in nodes):
            return False
        for _f, _w, s, e in nodes:
            fields = list(_fields(buf, s, e))
            if any(_KERAS_NODE.get(f) != w for f, w, _, _ in fields):
                return False
            idents = [_text(buf, a, b) for f, _, a, b in fields if f == 4]
            if len(idents) != 1 or not idents[0].startswith("_tf_keras_"):
                return False
    except _Bad:
        return False
    return True


def keras_metadata(buf: memoryview, *, member: str | None) -> list[tuple[str, str]]:
    """``(node path, metadata JSON)`` of each node of a ``keras_metadata.pb``.

    Raises:
        Malformed: the bytes are not a Keras SavedMetadata.
    """
    if not looks_like_keras_metadata(buf):
        raise Malformed("not a readable Keras SavedModel metadata (SavedMetadata)", member=member)
    out: list[tuple[str, str]] = []
    for s, e in _children(buf, 0, len(buf), 1):
        path = next((_text(buf, a, b) for a, b in _children(buf, s, e, 3)), "?")
        out.extend((path, _text(buf, a, b)) for a, b in _children(buf, s, e, 5))
    return out
