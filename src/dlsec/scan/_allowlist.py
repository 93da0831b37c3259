"""The allowlist: the only globals a pickle may import, and the few of them it may call.

A pickle imports a global with ``GLOBAL``/``STACK_GLOBAL``/``INST`` (importing runs the module's
top-level code) and calls it with ``REDUCE``/``NEWOBJ``/``OBJ``/``INST``. Two tiers:

- **callables**: constructors that build data from data (tensor and storage rebuilds, NumPy array
  reconstruction, ``collections.OrderedDict``, plain containers). Nothing here runs code, reads
  or writes files, or looks a name up from a string.
- **values**: objects a checkpoint names but never calls (dtypes, storage types, layouts,
  memory formats, ``numpy.ndarray`` as an argument of ``_reconstruct``). Calling one is a
  finding.

Everything else is a finding. The list is deliberately short; ``--allow module.name`` extends it
for one scan and is reported in the output.
"""

from __future__ import annotations

import _compat_pickle
from collections.abc import Iterable
from dataclasses import dataclass, field

from dlsec.errors import UsageError

__all__ = ["Allowlist", "DEFAULT_ALLOWLIST", "STORAGE_ELEMENT_SIZES", "parse_allow", "resolve_name"]

# Storage classes named in persistent ids, with their element size in bytes.
STORAGE_ELEMENT_SIZES: dict[str, int] = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "BFloat16Storage": 2,
    "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8,
    "QInt8Storage": 1,
    "QInt32Storage": 4,
    "QUInt8Storage": 1,
    "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
    "UntypedStorage": 1,
}

_TORCH_DTYPES = [
    "bfloat16",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bool",
    "complex128",
    "complex32",
    "complex64",
    "float16",
    "float32",
    "float4_e2m1fn_x2",
    "float64",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "int1",
    "int16",
    "int2",
    "int3",
    "int32",
    "int4",
    "int5",
    "int6",
    "int64",
    "int7",
    "int8",
    "qint32",
    "qint8",
    "quint2x4",
    "quint4x2",
    "quint8",
    "uint1",
    "uint16",
    "uint2",
    "uint3",
    "uint32",
    "uint4",
    "uint5",
    "uint6",
    "uint64",
    "uint7",
    "uint8",
]
_TORCH_MISC_VALUES = [
    "strided",
    "sparse_coo",
    "sparse_csr",
    "sparse_csc",
    "sparse_bsr",
    "sparse_bsc",
    "_mkldnn",
    "jagged",
    "contiguous_format",
    "channels_last",
    "channels_last_3d",
    "preserve_format",
    "per_tensor_affine",
    "per_channel_affine",
    "per_channel_affine_float_qparams",
    "per_tensor_symmetric",
    "per_channel_symmetric",
    "Tensor",
]
_TENSOR_TYPES = ["Double", "Float", "Half", "Long", "Int", "Short", "Char", "Byte", "Bool", "BFloat16"]

_CALLABLES: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("collections", "Counter"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
        ("builtins", "slice"),
        # protocol 0-2 pickles encode bytes as _codecs.encode(str, 'latin1')
        ("_codecs", "encode"),
        ("torch", "Size"),
        ("torch", "device"),
        ("torch.serialization", "_get_layout"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        *(
            ("torch._utils", name)
            for name in (
                "_rebuild_tensor",
                "_rebuild_tensor_v2",
                "_rebuild_tensor_v3",
                "_rebuild_parameter",
                "_rebuild_parameter_with_state",
                "_rebuild_sparse_tensor",
                "_rebuild_nested_tensor",
                "_rebuild_qtensor",
                "_rebuild_meta_tensor_no_storage",
                "_rebuild_wrapper_subclass",
                "_rebuild_device_tensor_from_numpy",
                "_rebuild_device_tensor_from_cpu_tensor",
            )
        ),
        *(
            (mod, name)
            for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
            for name in ("_reconstruct", "scalar")
        ),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "dtype"),
        *(("datetime", name) for name in ("datetime", "date", "time", "timedelta", "timezone")),
        # joblib's array wrapper: its raw array bytes follow in the stream (the scanner skips them)
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    }
)

_VALUES: frozenset[tuple[str, str]] = frozenset(
    {
        *(("torch", name) for name in _TORCH_DTYPES),
        *(("torch", name) for name in _TORCH_MISC_VALUES),
        *(("torch", name) for name in STORAGE_ELEMENT_SIZES if name != "UntypedStorage"),
        *(("torch.cuda", name) for name in STORAGE_ELEMENT_SIZES if name != "UntypedStorage"),
        ("torch", "UntypedStorage"),
        ("torch.storage", "UntypedStorage"),
        ("torch.storage", "TypedStorage"),
        *(("torch", f"{t}Tensor") for t in _TENSOR_TYPES),
        ("torch._tensor", "Tensor"),
        ("torch.nn.parameter", "Parameter"),
        ("numpy", "ndarray"),
    }
)


@dataclass(frozen=True)
class Allowlist:
    """Globals a pickle may import (``values``) and call (``callables``), plus user extensions.

    ``extra`` holds what the user added with ``--allow``: each entry may be imported and called,
    and every use of one is reported so that a scan never hides a decision the user made.

    Example:
        >>> allow = DEFAULT_ALLOWLIST.extended(["argparse.Namespace"])
        >>> allow.may_call("argparse", "Namespace"), allow.is_extra("argparse", "Namespace")
        (True, True)
    """

    callables: frozenset[tuple[str, str]] = _CALLABLES
    values: frozenset[tuple[str, str]] = _VALUES
    extra: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    def may_import(self, module: str, name: str) -> bool:
        key = (module, name)
        return key in self.values or key in self.callables or key in self.extra

    def may_call(self, module: str, name: str) -> bool:
        key = (module, name)
        return key in self.callables or key in self.extra

    def is_extra(self, module: str, name: str) -> bool:
        key = (module, name)
        return key in self.extra and key not in self.callables and key not in self.values

    def extended(self, names: Iterable[str]) -> Allowlist:
        """A copy that also allows each ``module.name`` (or ``module:qual.name``) in ``names``."""
        extra = set(self.extra)
        for item in names:
            extra.add(parse_allow(item))
        return Allowlist(callables=self.callables, values=self.values, extra=frozenset(extra))


DEFAULT_ALLOWLIST = Allowlist()


def parse_allow(item: str) -> tuple[str, str]:
    """Split ``module.name`` (last dot) or ``module:qual.name`` into ``(module, name)``."""
    text = item.strip()
    if ":" in text:
        module, _, name = text.partition(":")
    else:
        module, _, name = text.rpartition(".")
    ident_ok = all(part.isidentifier() for part in module.split(".")) and all(
        part.isidentifier() for part in name.split(".")
    )
    if not module or not name or not ident_ok:
        raise UsageError(f"--allow takes module.name (e.g. argparse.Namespace), got {item!r}")
    return module, name


def resolve_name(proto: int, module: str, name: str) -> tuple[str, str]:
    """The global that ``pickle`` actually imports for ``(module, name)`` at protocol ``proto``.

    Protocols 0-2 map Python 2 names (``__builtin__.eval`` is ``builtins.eval``), exactly as
    ``pickle.Unpickler.find_class`` does with ``fix_imports=True``.
    """
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        if module in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[module], name
    return module, name
