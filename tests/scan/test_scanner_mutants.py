"""The pickle scanner's opcode loop, nested pickles, joblib arrays and file views, pinned exactly.

Mutation testing (issue 28) of what ``tests/scan/test_verdict_mutants.py`` does not cover: the
abstract value each opcode leaves on the stack, the exact refusal of each malformed stream, the
bytes a nested pickle or a joblib array occupies and the way the C unpickler's view of a file
reads them. Every stream is written by hand, opcode by opcode, and only read by the analyser;
nothing is unpickled. Offsets are counted from the streams as written.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest

from dlsec.scan._allowlist import DEFAULT_ALLOWLIST, Allowlist
from dlsec.scan._findings import Finding, Malformed
from dlsec.scan._opcodes import CFileView, genops
from dlsec.scan._pickle import (
    MAX_FINDINGS,
    DictV,
    Global,
    Instance,
    Opaque,
    Persistent,
    PickleStream,
    ScanContext,
    SetV,
    _describe,
    _legacy_key,
    _short,
    _skip,
    analyse_stream,
    at_eof,
    iter_streams,
    looks_like_pickle_start,
)
from dlsec.scan._scanner import make_allowlist
from tests.scan.corpus import EMPTY_TUPLE, MARK, NEWOBJ, REDUCE, STOP, TUPLE, by, const, proto, sglobal, u

Found = tuple[str, str, str, str | None, int | None, str | None]


def scan(
    data: bytes,
    *,
    allow: Allowlist | None = None,
    member: str | None = None,
    plain: bool = False,
    torchscript: bool = False,
    trace: list[Any] | None = None,
) -> tuple[PickleStream, ScanContext]:
    ctx = ScanContext(allow or DEFAULT_ALLOWLIST, trace=trace)
    stream = analyse_stream(io.BytesIO(data), ctx, member=member, plain=plain, torchscript=torchscript)
    return stream, ctx


def found(ctx: ScanContext) -> list[Found]:
    return [(f.severity, f.code, f.reason, f.import_name, f.offset, f.member) for f in ctx.findings]


def refusal(data: bytes, **kw: Any) -> tuple[str, int | None, str | None]:
    with pytest.raises(Malformed) as err:
        scan(data, **kw)
    return err.value.reason, err.value.offset, err.value.member


def norm(v: Any) -> Any:
    """An abstract value as plain, comparable data: every type and offset kept."""
    if isinstance(v, Global):
        return ("global", v.module, v.name, v.offset)
    if isinstance(v, Instance):
        return ("call", norm(v.func), norm(v.args), v.offset, v.allowed, norm(v.state))
    if isinstance(v, Persistent):
        return ("persistent", norm(v.pid), v.offset)
    if isinstance(v, Opaque):
        return ("opaque", v.why, v.offset)
    if isinstance(v, DictV):
        return ("dict", [(norm(k), norm(x)) for k, x in v.pairs])
    if isinstance(v, SetV):
        return ("frozenset" if v.frozen else "set", [norm(x) for x in v.items])
    if isinstance(v, list):
        return ("list", [norm(x) for x in v])
    if isinstance(v, tuple):
        return ("tuple", [norm(x) for x in v])
    if isinstance(v, bytearray):
        return ("bytearray", bytes(v))
    return (type(v).__name__, v)


def n(*items: Any) -> Any:
    """``norm`` of a tuple of plain values."""
    return norm(tuple(items))


Q = struct.Struct("<Q").pack
I4 = struct.Struct("<I").pack
K1, K2, K3, K4 = b"K\x01", b"K\x02", b"K\x03", b"K\x04"
G_OD = sglobal("collections", "OrderedDict")  # 30 bytes


# -- every opcode's value (step) ----------------------------------------------------------------------

VALUES: list[tuple[str, bytes, Any]] = [
    ("INT", b"I42\n", ("int", 42)),
    ("INT bool", b"I01\n", ("bool", True)),
    ("BININT", b"J" + struct.pack("<i", -5), ("int", -5)),
    ("BININT1", b"K\x07", ("int", 7)),
    ("BININT2", b"M\x01\x02", ("int", 513)),
    ("LONG", b"L12345678901234567890L\n", ("int", 12345678901234567890)),
    ("LONG1", b"\x8a\x02\xff\x00", ("int", 255)),
    ("LONG4", b"\x8b\x01\x00\x00\x00\xff", ("int", -1)),
    ("FLOAT", b"F1.5\n", ("float", 1.5)),
    ("BINFLOAT", b"G" + struct.pack(">d", 2.25), ("float", 2.25)),
    ("STRING", b"S'ab'\n", ("str", "ab")),
    ("BINSTRING", b"T" + I4(2) + b"ab", ("str", "ab")),
    ("SHORT_BINSTRING", b"U\x02ab", ("str", "ab")),
    ("UNICODE", b"Vab\n", ("str", "ab")),
    ("SHORT_BINUNICODE", b"\x8c\x02ab", ("str", "ab")),
    ("BINUNICODE", b"X" + I4(2) + b"ab", ("str", "ab")),
    ("BINUNICODE8", b"\x8d" + Q(2) + b"ab", ("str", "ab")),
    ("BINBYTES", b"B" + I4(2) + b"ab", ("bytes", b"ab")),
    ("SHORT_BINBYTES", b"C\x02ab", ("bytes", b"ab")),
    ("BINBYTES8", b"\x8e" + Q(2) + b"ab", ("bytes", b"ab")),
    ("BYTEARRAY8", b"\x96" + Q(2) + b"ab", ("bytearray", b"ab")),
    ("NONE", b"N", ("NoneType", None)),
    ("NEWTRUE", b"\x88", ("bool", True)),
    ("NEWFALSE", b"\x89", ("bool", False)),
    ("EMPTY_LIST", b"]", ("list", [])),
    ("EMPTY_TUPLE", b")", ("tuple", [])),
    ("EMPTY_DICT", b"}", ("dict", [])),
    ("EMPTY_SET", b"\x8f", ("set", [])),
    ("LIST", K1 + b"(" + K2 + K3 + b"l\x86", ("tuple", [("int", 1), ("list", [("int", 2), ("int", 3)])])),
    ("LIST value", b"(" + K2 + K3 + b"l", ("list", [("int", 2), ("int", 3)])),
    ("TUPLE", b"(" + K2 + K3 + b"t", n(2, 3)),
    ("TUPLE1", K1 + K2 + b"\x85", n(2)),
    ("TUPLE2", K1 + K2 + K3 + b"\x86", n(2, 3)),
    ("TUPLE3", K1 + K2 + K3 + K4 + b"\x87", n(2, 3, 4)),
    ("TUPLE2 exact", K1 + K2 + b"\x86", n(1, 2)),
    ("TUPLE3 exact", K1 + K2 + K3 + b"\x87", n(1, 2, 3)),
    ("TUPLE keeps below", K1 + K2 + K3 + K4 + b"\x86\x87", ("tuple", [("int", 1), ("int", 2), n(3, 4)])),
    (
        "DICT",
        b"(" + u("a") + K1 + u("b") + K2 + b"d",
        ("dict", [(("str", "a"), ("int", 1)), (("str", "b"), ("int", 2))]),
    ),
    ("FROZENSET", b"(" + K1 + K2 + b"\x91", ("frozenset", [("int", 1), ("int", 2)])),
    ("APPEND", b"]" + K1 + b"a" + K2 + b"a", ("list", [("int", 1), ("int", 2)])),
    ("APPENDS", b"]" + K3 + b"a(" + K1 + K2 + b"e", ("list", [("int", 3), ("int", 1), ("int", 2)])),
    ("SETITEM", b"}" + u("a") + K1 + b"s", ("dict", [(("str", "a"), ("int", 1))])),
    (
        "SETITEMS",
        b"}" + u("z") + K3 + b"s(" + u("a") + K1 + u("b") + K2 + b"u",
        ("dict", [(("str", "z"), ("int", 3)), (("str", "a"), ("int", 1)), (("str", "b"), ("int", 2))]),
    ),
    ("ADDITEMS", b"\x8f(" + K1 + K2 + b"\x90(" + K3 + b"\x90", ("set", [("int", 1), ("int", 2), ("int", 3)])),
    ("POP", K1 + K2 + b"0", ("int", 1)),
    ("POP a MARK", K1 + b"(" + K2 + b"00", ("int", 1)),
    ("POP_MARK", K1 + b"(" + K2 + K3 + b"1", ("int", 1)),
    ("DUP", K1 + b"2\x86", n(1, 1)),
    ("PUT GET", K1 + b"p0\n0" + K2 + b"p7\n0g7\ng0\n\x86", n(2, 1)),
    ("BINPUT BINGET", K1 + b"q\x000" + K2 + b"q\x070h\x07h\x00\x86", n(2, 1)),
    (
        "LONG_BINPUT LONG_BINGET",
        K1 + b"r" + I4(0) + b"0" + K2 + b"r" + I4(70000) + b"0j" + I4(70000) + b"j" + I4(0) + b"\x86",
        n(2, 1),
    ),
    ("MEMOIZE", K1 + b"\x94" + b"0" + K2 + b"\x94" + b"0h\x01h\x00\x86", n(2, 1)),
    ("PUT overwrites", K1 + b"q\x00" + K2 + b"q\x00h\x00\x87", n(1, 2, 2)),
    ("GLOBAL", b"ccollections\nOrderedDict\n", ("global", "collections", "OrderedDict", 2)),
    ("STACK_GLOBAL", G_OD, ("global", "collections", "OrderedDict", 28)),
    (
        "INST",
        b"(" + K1 + b"icollections\nOrderedDict\n",
        ("call", ("global", "collections", "OrderedDict", 5), n(1), 5, True, ("NoneType", None)),
    ),
    (
        "OBJ",
        b"(" + G_OD + K1 + b"o",
        ("call", ("global", "collections", "OrderedDict", 29), n(1), 32, True, ("NoneType", None)),
    ),
    (
        "REDUCE",
        G_OD + b"(" + K1 + b"tR",
        ("call", ("global", "collections", "OrderedDict", 28), n(1), 33, True, ("NoneType", None)),
    ),
    (
        "NEWOBJ",
        G_OD + b"(" + K1 + b"t\x81",
        ("call", ("global", "collections", "OrderedDict", 28), n(1), 33, True, ("NoneType", None)),
    ),
    (
        "NEWOBJ_EX",
        G_OD + b"(" + K1 + b"t}\x92",
        (
            "call",
            ("global", "collections", "OrderedDict", 28),
            ("tuple", [n(1), ("dict", [])]),
            34,
            True,
            ("NoneType", None),
        ),
    ),
    (
        "BUILD",
        G_OD + b")R" + K1 + b"b",
        ("call", ("global", "collections", "OrderedDict", 28), n(), 30, True, ("int", 1)),
    ),
    ("EXT1", b"\x82\x05", ("opaque", "extension code 5", 2)),
    ("EXT2", b"\x83\x01\x02", ("opaque", "extension code 513", 2)),
    ("EXT4", b"\x84\x01\x00\x01\x00", ("opaque", "extension code 65537", 2)),
    ("PERSID", b"Pab\n", ("persistent", ("str", "ab"), 2)),
    ("BINPERSID", K1 + b"Q", ("persistent", ("int", 1), 4)),
]


@pytest.mark.parametrize(("opcode", "body", "value"), VALUES, ids=[v[0] for v in VALUES])
def test_each_opcode_leaves_the_value_pickle_would(opcode: str, body: bytes, value: Any) -> None:
    data = proto(4) + body + STOP
    stream, _ = scan(data)
    assert norm(stream.value) == value
    assert (stream.proto, stream.start, stream.end) == (4, 0, len(data))


def test_the_stream_record_counts_its_opcodes_and_storages() -> None:
    pid = b"(" + u("storage") + sglobal("torch", "FloatStorage") + u("0") + u("cpu") + K4 + b"tQ"
    data = b"garbage" + proto(2) + pid + STOP + b"more"
    f = io.BytesIO(data)
    f.seek(7)
    ctx = ScanContext(DEFAULT_ALLOWLIST)
    stream = analyse_stream(f, ctx)
    # PROTO, MARK, 3 SHORT_BINUNICODE, 2 more for the global, STACK_GLOBAL, BININT1, TUPLE, BINPERSID, STOP
    assert stream.opcodes == 12
    assert (stream.proto, stream.start, stream.end, f.tell()) == (2, 7, len(data) - 4, len(data) - 4)
    assert stream.storage_ids == [("storage", Global("torch", "FloatStorage", 40), "0", "cpu", 4)]
    assert stream.value.pid is stream.storage_ids[0] and ctx.findings == []
    stream, _ = scan(b"N.")  # protocol 0: no PROTO opcode at all
    assert (stream.proto, stream.opcodes, stream.value) == (0, 2, None)


def test_extension_codes_are_reported_where_they_are_used() -> None:
    _, ctx = scan(proto(2) + K1 + b"\x83\x01\x02" + STOP)
    reason = (
        "extension code 513 names a global through the loading process's copyreg registry, "
        "which dlsec cannot see"
    )
    assert found(ctx) == [("high", "extension-code", reason, None, 4, None)]


def test_global_and_inst_name_their_module_and_name() -> None:
    stream, ctx = scan(proto(2) + b"cos\nsystem\n" + STOP)
    assert norm(stream.value) == ("global", "os", "system", 2)
    assert [(f.code, f.import_name, f.offset) for f in ctx.findings] == [("unsafe-global", "os.system", 2)]
    stream, ctx = scan(proto(2) + b"(" + u("x") + b"ios\nsystem\n" + STOP)
    assert norm(stream.value)[:5] == ("call", ("global", "os", "system", 6), n("x"), 6, False)
    assert [(f.code, f.import_name, f.offset) for f in ctx.findings] == [
        ("unsafe-global", "os.system", 6),
        ("unsafe-call", "os.system", 6),
    ]
    assert (
        ctx.findings[1].reason
        == "INST calls os.system, which is not on the allowlist and runs or reaches arbitrary code"
    )


def test_each_call_opcode_passes_its_callee_and_arguments() -> None:
    body = sglobal("os", "system") + b"(" + u("a") + b"t}\x92"
    _, ctx = scan(proto(4) + body + STOP)
    assert [(f.code, f.reason) for f in ctx.findings][1] == (
        "unsafe-call",
        "NEWOBJ_EX calls os.system, which is not on the allowlist and runs or reaches arbitrary code",
    )
    for how, tail in (("REDUCE", b"R"), ("NEWOBJ", b"\x81")):
        _, ctx = scan(proto(4) + sglobal("os", "system") + b"(" + u("a") + b"t" + tail + STOP)
        assert ctx.findings[1].reason.startswith(f"{how} calls os.system,")
        assert ctx.findings[1].offset == 20
    _, ctx = scan(proto(4) + b"(" + sglobal("os", "system") + u("a") + b"o" + STOP)
    assert ctx.findings[1].reason.startswith("OBJ calls os.system,") and ctx.findings[1].offset == 19


# -- what step refuses --------------------------------------------------------------------------------

REFUSALS: list[tuple[str, bytes, str, int]] = [
    (
        "NEXT_BUFFER",
        proto(5) + b"\x97" + STOP,
        "out-of-band pickle buffers (protocol 5) are not supported",
        2,
    ),
    (
        "READONLY_BUFFER",
        proto(5) + b"N\x98" + STOP,
        "out-of-band pickle buffers (protocol 5) are not supported",
        3,
    ),
    ("TUPLE1 empty", proto(2) + b"\x85" + STOP, "pickle stack underflow", 2),
    ("TUPLE2 short", proto(2) + K1 + b"\x86" + STOP, "pickle stack underflow", 4),
    ("TUPLE3 short", proto(2) + K1 + K2 + b"\x87" + STOP, "pickle stack underflow", 6),
    ("TUPLE3 across a MARK", proto(2) + K1 + K2 + b"(" + K3 + b"\x87" + STOP, "pickle stack underflow", 9),
    ("DICT odd", proto(2) + b"(" + K1 + b"d" + STOP, "DICT with an odd number of items", 5),
    (
        "SETITEMS odd",
        proto(2) + b"}(" + K1 + K2 + K3 + b"u" + STOP,
        "SETITEMS with an odd number of items",
        10,
    ),
    ("GET unknown", proto(2) + K1 + b"p1\ng2\n" + STOP, "memo key 2 read before it was written", 7),
    ("BINGET unknown", proto(2) + b"h\x00" + STOP, "memo key 0 read before it was written", 2),
    ("PUT negative", proto(2) + K1 + b"p-1\n" + STOP, "negative memo key", 4),
    ("PUT empty", proto(2) + b"p0\n" + STOP, "pickle stack underflow", 2),
    ("MEMOIZE empty", proto(4) + b"\x94" + STOP, "pickle stack underflow", 2),
    ("OBJ without class", proto(2) + K1 + b"(o" + STOP, "OBJ without a class", 5),
    ("LIST without MARK", proto(2) + K1 + b"l" + STOP, "pickle MARK missing", 4),
    ("POP empty", proto(2) + b"0" + STOP, "pickle MARK missing", 2),
    ("POP_MARK without MARK", proto(2) + K1 + b"1" + STOP, "pickle MARK missing", 4),
    ("DUP empty", proto(2) + b"2" + STOP, "pickle stack underflow", 2),
    ("APPEND empty", proto(2) + K1 + b"a" + STOP, "pickle stack underflow", 4),
    ("SETITEM short", proto(2) + K1 + K2 + b"s" + STOP, "pickle stack underflow", 6),
    ("REDUCE short", proto(2) + b")R" + STOP, "pickle stack underflow", 3),
    ("NEWOBJ_EX short", proto(4) + b")}\x92" + STOP, "pickle stack underflow", 4),
    ("BUILD alone", proto(2) + K1 + b"b" + STOP, "pickle stack underflow", 4),
    ("BINPERSID empty", proto(2) + b"Q" + STOP, "pickle stack underflow", 2),
    ("STACK_GLOBAL short", proto(4) + u("os") + b"\x93" + STOP, "pickle stack underflow", 6),
    ("STOP empty", proto(2) + STOP, "pickle stack underflow", 2),
    ("TUPLE without MARK", proto(2) + K1 + b"t" + STOP, "pickle MARK missing", 4),
    ("DICT without MARK", proto(2) + K1 + K2 + b"d" + STOP, "pickle MARK missing", 6),
    ("FROZENSET without MARK", proto(4) + K1 + b"\x91" + STOP, "pickle MARK missing", 4),
    ("APPENDS without MARK", proto(2) + b"]" + K1 + b"e" + STOP, "pickle MARK missing", 5),
    ("APPENDS on nothing", proto(2) + b"(" + K1 + b"e" + STOP, "pickle stack underflow", 5),
    ("SETITEMS without MARK", proto(2) + b"}" + K1 + K2 + b"u" + STOP, "pickle MARK missing", 7),
    ("SETITEMS on nothing", proto(2) + b"(" + K1 + K2 + b"u" + STOP, "pickle stack underflow", 7),
    ("ADDITEMS without MARK", proto(4) + b"\x8f" + K1 + b"\x90" + STOP, "pickle MARK missing", 5),
    ("ADDITEMS on nothing", proto(4) + b"(" + K1 + b"\x90" + STOP, "pickle stack underflow", 5),
    ("INST without MARK", proto(2) + b"ia\nb\n" + STOP, "pickle MARK missing", 2),
    ("OBJ without MARK", proto(2) + K1 + b"o" + STOP, "pickle MARK missing", 4),
    ("APPEND on empty", proto(2) + b"a" + STOP, "pickle stack underflow", 2),
    ("SETITEM on empty", proto(2) + b"s" + STOP, "pickle stack underflow", 2),
    ("SETITEM one item", proto(2) + K1 + b"s" + STOP, "pickle stack underflow", 4),
    ("STACK_GLOBAL on empty", proto(4) + b"\x93" + STOP, "pickle stack underflow", 2),
    ("REDUCE on empty", proto(2) + b"R" + STOP, "pickle stack underflow", 2),
    ("NEWOBJ on empty", proto(2) + b"\x81" + STOP, "pickle stack underflow", 2),
    ("NEWOBJ one item", proto(2) + b")\x81" + STOP, "pickle stack underflow", 3),
    ("NEWOBJ_EX on empty", proto(4) + b"\x92" + STOP, "pickle stack underflow", 2),
    ("NEWOBJ_EX one item", proto(4) + b"}\x92" + STOP, "pickle stack underflow", 3),
    ("BUILD on empty", proto(2) + b"b" + STOP, "pickle stack underflow", 2),
    ("PROTO twice", proto(2) + proto(2) + b"N" + STOP, "PROTO opcode in the middle of a pickle", 2),
    ("PROTO after N", b"N" + proto(2) + STOP, "PROTO opcode in the middle of a pickle", 1),
    ("PROTO 6", proto(6) + b"N" + STOP, "unsupported pickle protocol 6", 0),
    ("PROTO 255", proto(255) + b"N" + STOP, "unsupported pickle protocol 255", 0),
    (
        "unknown opcode",
        proto(2) + b"\xff" + STOP,
        "not a valid pickle (at position 2, opcode b'\\xff' unknown)",
        0,
    ),
    ("no STOP", proto(2) + b"N", "not a valid pickle (pickle exhausted before seeing STOP)", 2),
    (
        "truncated argument",
        proto(2) + b"J\x01",
        "not a valid pickle (not enough data in stream to read int4)",
        0,
    ),
]


@pytest.mark.parametrize(("case", "data", "reason", "offset"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_each_malformed_stream_is_refused_exactly(  # a loader error is placed at the last opcode read whole
    case: str, data: bytes, reason: str, offset: int
) -> None:
    assert refusal(data, member="m") == (reason, offset, "m")


def test_protocol_5_is_the_last_protocol_read() -> None:
    stream, _ = scan(proto(5) + b"N" + STOP)
    assert (stream.proto, stream.value) == (5, None)
    stream, _ = scan(proto(0) + b"N" + STOP)
    assert stream.proto == 0


def test_a_long_loader_error_is_shortened_to_120_characters() -> None:
    junk = b"x" * 200
    reason, offset, _ = refusal(proto(2) + b"S" + junk + b"\n" + STOP)
    text = "no string quotes around " + repr(junk)
    assert reason == f"not a valid pickle ({text[:117]}...)" and offset == 0


# -- nested pickles (maybe_nested) --------------------------------------------------------------------

EIGHT = b"\x80\x02ca\nb\n."  # the shortest pickle dlsec reads as nested: imports a.b
NOT_ALLOWED = " (importing runs the module's code)"
A_B = "imports a.b, which is not on the allowlist (importing runs the module's code)"


def test_the_shortest_nested_pickle_is_read_and_a_shorter_one_is_not() -> None:
    assert len(EIGHT) == 8
    _, ctx = scan(proto(4) + by(EIGHT) + STOP)
    assert found(ctx) == [("medium", "unsafe-global", A_B, "a.b", 2, "pickle > bytes at 2")]
    seven = b"\x80\x02\x82\x01N0."  # 7 bytes: EXT1 would be reported if it were read
    _, ctx = scan(proto(4) + by(seven[:7]) + STOP)
    assert len(seven) == 7 and found(ctx) == []


@pytest.mark.parametrize(
    ("opcode", "wrap"),
    [
        ("SHORT_BINBYTES", lambda d: b"C" + bytes([len(d)]) + d),
        ("BINBYTES", lambda d: b"B" + I4(len(d)) + d),
        ("BINBYTES8", lambda d: b"\x8e" + Q(len(d)) + d),
        ("BYTEARRAY8", lambda d: b"\x96" + Q(len(d)) + d),
        ("SHORT_BINSTRING", lambda d: b"U" + bytes([len(d)]) + d),
        ("BINSTRING", lambda d: b"T" + I4(len(d)) + d),
        (
            "SHORT_BINUNICODE",
            lambda d: b"\x8c" + bytes([len(d.decode("latin-1").encode())]) + d.decode("latin-1").encode(),
        ),
        ("BINUNICODE", lambda d: b"X" + I4(len(d.decode("latin-1").encode())) + d.decode("latin-1").encode()),
        (
            "BINUNICODE8",
            lambda d: b"\x8d" + Q(len(d.decode("latin-1").encode())) + d.decode("latin-1").encode(),
        ),
    ],
)
def test_a_pickle_in_any_bytes_or_string_constant_is_read(opcode: str, wrap: Any) -> None:
    data = proto(4) + K1 + wrap(EIGHT) + STOP
    _, ctx = scan(data, member="data.pkl")
    assert found(ctx) == [("medium", "unsafe-global", A_B, "a.b", 2, "data.pkl > bytes at 4")], opcode


def test_a_text_pickle_string_is_read_as_nested_only_when_it_encodes_as_latin_1() -> None:
    text = "\x80\x02ca\nb\n.\u0100"  # cannot be encoded as latin-1: not bytes a loader could hold
    raw = text.encode()
    stream, ctx = scan(proto(4) + b"\x8c" + bytes([len(raw)]) + raw + STOP)
    assert found(ctx) == [] and stream.value == text


def test_bytes_that_do_not_start_like_a_binary_pickle_are_data() -> None:
    text_pickle = b"cos\nsystem\n."  # a protocol 0 pickle: never nested, it has no PROTO
    _, ctx = scan(proto(4) + by(text_pickle) + STOP)
    assert found(ctx) == []
    for head in (b"\x80\x06", b"\x81\x02", b"\x00\x80"):
        _, ctx = scan(proto(4) + by(head + b"ca\nb\n.") + STOP)
        assert found(ctx) == [], head
    _, ctx = scan(proto(4) + by(b"\x80\x05ca\nb\n.") + STOP)
    assert [f.code for f in ctx.findings] == ["unsafe-global"]


def test_bytes_that_start_like_a_pickle_but_are_not_one_are_data() -> None:
    stream, ctx = scan(proto(4) + by(b"\x80\x02\xff\xff\xff\xff\xff\xff") + by(b"\x80\x04(((((((") + STOP)
    assert found(ctx) == [] and stream.value == b"\x80\x04((((((("


def _nest(levels: int, inner: bytes) -> bytes:
    data = inner
    for _ in range(levels):
        data = proto(4) + by(data) + STOP
    return data


def test_pickles_are_followed_four_levels_deep_and_no_further() -> None:
    payload = proto(2) + b"ca\nb\n" + b"\x82\x09" + b"0."  # imports a.b, then extension code 9
    _, ctx = scan(_nest(4, payload))
    where = "pickle" + " > bytes at 2" * 4
    assert [(f.code, f.offset, f.member) for f in ctx.findings] == [
        ("unsafe-global", 2, where),
        ("extension-code", 7, where),
    ]
    _, ctx = scan(_nest(5, payload))
    reason = "pickles nested deeper than dlsec follows"
    assert found(ctx) == [("medium", "nested-too-deep", reason, None, 2, "pickle" + " > bytes at 2" * 4)]


def test_nested_findings_and_extras_join_the_outer_scan() -> None:
    allow = DEFAULT_ALLOWLIST.extended(["argparse.Namespace", "fractions.Fraction"])
    inner = proto(4) + sglobal("argparse", "Namespace") + b"P9\n0" + STOP
    data = proto(4) + sglobal("fractions", "Fraction") + by(inner) + b"\x86" + STOP
    trace: list[Any] = []
    _, ctx = scan(data, allow=allow, trace=trace)
    assert ctx.extras_used == {"argparse.Namespace", "fractions.Fraction"}
    reason = (
        "persistent id 9 is not a PyTorch storage reference; the loader's persistent_load decides "
        "what it becomes"
    )
    assert found(ctx) == [("medium", "unknown-persistent-id", reason, None, 24, "pickle > bytes at 24")]
    assert [(t.member, t.view, t.imports) for t in trace] == [
        (None, "flat", [("fractions", "Fraction")]),
        ("pickle > bytes at 24", "flat", [("argparse", "Namespace")]),
    ]
    assert trace[1].data == inner


def test_a_nested_pickle_never_uses_the_outer_tar_keys() -> None:
    ctx = ScanContext(DEFAULT_ALLOWLIST, tar_keys=frozenset({9}))
    inner = proto(2) + b"P9\n" + b"N0" + STOP
    assert len(inner) == 8
    stream = analyse_stream(io.BytesIO(proto(2) + b"P9\n" + by(inner) + b"\x86" + STOP), ctx)
    assert [(f.code, f.member) for f in ctx.findings] == [("unknown-persistent-id", "pickle > bytes at 5")]
    assert norm(stream.value)[1][0] == ("persistent", ("str", "9"), 2)


def test_findings_past_the_limit_are_counted_not_kept() -> None:
    body = b"\x82\x01" * (MAX_FINDINGS + 3)
    _, ctx = scan(proto(2) + body + STOP)
    assert len(ctx.findings) == MAX_FINDINGS and ctx.dropped == 3
    assert [f.offset for f in ctx.findings[-2:]] == [2 + 2 * (MAX_FINDINGS - 2), 2 + 2 * (MAX_FINDINGS - 1)]


# -- joblib arrays --------------------------------------------------------------------------------------

WRAPPER = sglobal("joblib.numpy_pickle", "NumpyArrayWrapper") + EMPTY_TUPLE + NEWOBJ


def _jstate(
    shape: tuple[int, ...], dtype: str = "<f4", align: int | None = None, extra: bytes = b""
) -> bytes:
    body = (
        u("shape") + const(shape) + u("dtype") + sglobal("numpy", "dtype") + MARK + u(dtype) + TUPLE + REDUCE
    )
    if align is not None:
        body += u("numpy_array_alignment_bytes") + const(align)
    return b"}" + MARK + body + extra + b"u"


def joblib(shape: tuple[int, ...], array: bytes, tail: bytes = b"N", **kw: Any) -> tuple[bytes, int]:
    """A joblib-style stream: the wrapper, its BUILD, the raw array bytes, then ``tail`` and STOP.

    Returns the stream and the offset of the BUILD opcode."""
    head = proto(4) + WRAPPER + _jstate(shape, **kw)
    return head + b"b" + array + tail + b"\x86" + STOP, len(head)


def _wrapper_value(build: int) -> Any:
    func = ("global", "joblib.numpy_pickle", "NumpyArrayWrapper", 42)
    return ("call", func, n(), build, True, ("NoneType", None))


def test_the_array_bytes_after_a_wrapper_are_skipped_exactly() -> None:
    array = b"cos\nsystem\n" * 2 + b"\x00\x00"  # 24 bytes: 6 float32 that read as opcodes
    data, build = joblib((2, 3), array)
    stream, ctx = scan(data)
    assert found(ctx) == [] and ctx.plain_pass_needed is True
    assert norm(stream.value) == ("tuple", [_wrapper_value(build), ("NoneType", None)])
    assert stream.end == len(data)


def test_the_array_is_as_long_as_its_shape_and_dtype_say() -> None:
    data, build = joblib((4,), b"\x00" * 16, tail=K1)
    stream, _ = scan(data)
    assert norm(stream.value) == ("tuple", [_wrapper_value(build), ("int", 1)])
    data, build = joblib((4,), b"\x00" * 17, tail=K1)  # one byte more: read as an opcode
    reason, _, _ = refusal(data)
    assert reason == f"not a valid pickle (at position {build + 17}, opcode b'\\x00' unknown)"
    data, build = joblib((4,), b"\x00" * 15, tail=b"")  # one byte less: the tuple opcode is skipped
    stream, _ = scan(data)
    assert norm(stream.value) == _wrapper_value(build)


def test_aligned_array_bytes_skip_their_padding_first() -> None:
    for pad in (0, 1, 15):
        data, build = joblib((2,), bytes([pad]) + b"\xff" * pad + b"S" * 8, align=16)
        stream, ctx = scan(data, member="m")
        assert found(ctx) == [] and ctx.plain_pass_needed is False
        assert norm(stream.value) == ("tuple", [_wrapper_value(build), ("NoneType", None)])
    data, build = joblib((2,), bytes([16]) + b"\x00" * 16 + b"S" * 8, align=16)
    assert refusal(data, member="m") == ("non-canonical joblib array padding (16 bytes)", build, "m")
    head = proto(4) + WRAPPER + _jstate((2,), align=16) + b"b"
    assert refusal(head, member="m") == ("joblib array data truncated", len(head) - 1, "m")
    assert refusal(head + b"\x02\x00", member="m") == ("array data truncated", len(head) - 1, "m")


def test_a_wrapper_without_a_state_dict_is_refused() -> None:
    data = proto(4) + WRAPPER + K1 + b"b" + STOP
    assert refusal(data, member="m") == ("joblib array wrapper without a state dict", 47, "m")


def test_object_arrays_are_a_pickle_of_their_own() -> None:
    inner = proto(4) + sglobal("os", "system") + STOP
    data, build = joblib((1,), inner, dtype="O")
    stream, ctx = scan(data, member="m")
    assert norm(stream.value) == ("tuple", [_wrapper_value(build), ("NoneType", None)])
    assert [(f.code, f.import_name, f.offset, f.member) for f in ctx.findings] == [
        ("unsafe-global", "os.system", build + 1 + 14, "m")
    ]
    # The array's pickle is never a TorchScript archive's, even inside one.
    inner = proto(4) + sglobal("__torch__", "Net") + STOP
    data, _ = joblib((1,), inner, dtype="O")
    _, ctx = scan(data, torchscript=True)
    assert [(f.code, f.import_name) for f in ctx.findings] == [("unsafe-global", "__torch__.Net")]


def test_array_bytes_are_opcodes_when_read_as_plain_pickle_or_without_the_wrapper_allowed() -> None:
    array = b"ca\nb\n0N0"  # 8 bytes: GLOBAL a b, POP, NONE, POP
    data, build = joblib((2,), array)
    stream, ctx = scan(data, plain=True)
    reason = "read with plain pickle.load (not joblib), the array bytes become opcodes: " + A_B
    assert found(ctx) == [("medium", "unsafe-global", reason, "a.b", build + 1, None)]
    assert norm(stream.value)[1][0][5][0] == "dict"  # the wrapper keeps its state: no array record
    no_wrapper = Allowlist(
        callables=DEFAULT_ALLOWLIST.callables - {("joblib.numpy_pickle", "NumpyArrayWrapper")},
        values=DEFAULT_ALLOWLIST.values | {("joblib.numpy_pickle", "NumpyArrayWrapper")},
    )
    _, ctx = scan(data, allow=no_wrapper)
    assert [f.code for f in ctx.findings] == ["calls-value", "build-on-non-instance", "unsafe-global"]


def test_array_bytes_inside_a_frame_diverge() -> None:
    array = b"\x00" * 8
    body = WRAPPER + _jstate((2,)) + b"b"
    frame = body + array + b"N\x86" + STOP
    data = proto(4) + b"\x95" + Q(len(body) + 4) + frame
    stream, ctx = scan(data)
    here = 11 + len(body)
    end = 11 + len(body) + 4
    assert [(f.severity, f.code, f.reason, f.offset) for f in ctx.findings][0] == (
        "critical",
        "frame-divergence",
        f"joblib array data at byte {here} starts inside a pickle frame that ends at byte {end}; "
        "loaders disagree on which bytes are opcodes",
        here - 1,
    )


# -- the file views ---------------------------------------------------------------------------------------


def test_c_file_view_reads_from_its_buffer_then_afresh() -> None:
    f = io.BytesIO(b"xxabcdefghij\nkl\nmn")
    f.seek(2)
    v = CFileView(f)
    assert v.tell() == 2
    v.frame(6)  # buffer "abcdef", file at 8
    assert (v.read(2), v.tell(), f.tell()) == (b"ab", 4, 8)
    assert (v.read(0), v.tell()) == (b"", 4)
    assert (v.read(4), v.tell(), f.tell()) == (b"cdef", 8, 8)
    v.frame(3)  # "ghi"
    assert (v.read(4), v.tell(), f.tell()) == (b"j\nkl", 15, 15)  # "ghi" is dropped: read afresh
    with pytest.raises(ValueError, match="^unbounded read$"):
        v.read(-1)
    assert (v.read(2), v.tell(), f.tell()) == (b"\nm", 17, 17)


def test_c_file_view_reads_past_what_its_buffer_holds_afresh() -> None:
    f = io.BytesIO(b"abcdefghij")
    v = CFileView(f)
    v.frame(4)
    assert v.read(3) == b"abc"
    assert (v.read(2), v.tell(), f.tell()) == (b"ef", 6, 6)  # "d" dropped
    assert (v.read(1), v.tell()) == (b"g", 7)  # the buffer was the read itself: "ef", now used up
    assert (v.read(5), v.tell(), f.tell()) == (b"hij", 10, 10)


def test_c_file_view_readline_uses_the_buffer_up_to_its_newline() -> None:
    f = io.BytesIO(b"ab\ncd\nef\ngh\n")
    v = CFileView(f)
    v.frame(7)  # "ab\ncd\ne"
    assert (v.readline(), v.tell()) == (b"ab\n", 3)
    assert (v.readline(), v.tell()) == (b"cd\n", 6)
    assert (v.readline(), v.tell(), f.tell()) == (b"f\n", 9, 9)  # "e" dropped, the line read afresh
    assert (v.readline(), v.tell()) == (b"gh\n", 12)
    assert (v.readline(), v.tell()) == (b"", 12)


def test_c_file_view_read_into_continues_past_the_buffer() -> None:
    f = io.BytesIO(b"abcdefghij")
    v = CFileView(f)
    v.frame(4)
    assert (v.read_into(2), v.tell()) == (b"ab", 2)
    assert (v.read_into(2), v.tell(), f.tell()) == (b"cd", 4, 4)
    v.frame(2)
    assert v.read(1) == b"e"
    assert (v.read_into(3), v.tell(), f.tell()) == (b"fgh", 8, 8)  # "f" from the buffer, then "gh"
    assert (v.read(1), v.tell()) == (b"i", 9)
    assert (v.read_into(5), v.tell()) == (b"j", 10)


def test_genops_names_each_opcode_with_its_extent() -> None:
    data = proto(4) + b"C\x02ab" + b"\x95" + Q(2) + b"N." + b"rest"
    ops = [(op.name, arg, start, end) for op, arg, start, end in genops(io.BytesIO(data))]
    assert ops == [
        ("PROTO", 4, 0, 2),
        ("SHORT_BINBYTES", b"ab", 2, 6),
        ("FRAME", 2, 6, 15),
        ("NONE", None, 15, 16),
        ("STOP", None, 16, 17),
    ]
    cops = [(op.name, arg, start, end) for op, arg, start, end in genops(CFileView(io.BytesIO(data)))]
    assert cops == ops


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "pickle exhausted before seeing STOP"),
        (b"N", "pickle exhausted before seeing STOP"),
        (b"N\xff.", "at position 1, opcode b'\\xff' unknown"),
        (b"C", "SHORT_BINBYTES length truncated"),
        (b"B\x01\x00\x00", "BINBYTES length truncated"),
        (b"\x8e\x01", "BINBYTES8 length truncated"),
        (b"\x96" + Q(1)[:7], "BYTEARRAY8 length truncated"),
        (b"C\x03ab", "SHORT_BINBYTES data truncated"),
        (b"\x96" + Q(3) + b"ab", "BYTEARRAY8 data truncated"),
    ],
)
def test_genops_on_the_c_view_refuses_truncated_streams(data: bytes, message: str) -> None:
    with pytest.raises(ValueError) as err:
        list(genops(CFileView(io.BytesIO(data))))
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"C\x02ab.", b"ab"),
        (b"B" + I4(3) + b"abc.", b"abc"),
        (b"\x8e" + Q(1) + b"a.", b"a"),
        (b"\x96" + Q(2) + b"ab.", bytearray(b"ab")),
        (b"\x96" + Q(0) + b".", bytearray()),
    ],
)
def test_genops_on_the_c_view_reads_bytes_payloads(data: bytes, value: bytes) -> None:
    ops = list(genops(CFileView(io.BytesIO(data))))
    (op, arg, start, end), stop = ops
    assert (arg, type(arg), start, end) == (value, type(value), 0, len(data) - 1)
    assert stop[0].name == "STOP"


def test_a_bytes_payload_straddling_a_frame_continues_from_the_file() -> None:
    # FRAME 4 holds "C\x04ab": the payload's last two bytes come from after the frame.
    data = proto(4) + b"\x95" + Q(4) + b"C\x04ab" + b"cd" + b"."
    ops = [(op.name, arg, start, end) for op, arg, start, end in genops(CFileView(io.BytesIO(data)))]
    assert ops == [
        ("PROTO", 4, 0, 2),
        ("FRAME", 4, 2, 11),
        ("SHORT_BINBYTES", b"abcd", 11, 17),
        ("STOP", None, 17, 18),
    ]


# -- frames and the second, C-file reading --------------------------------------------------------------

HIDDEN = sglobal("os", "system") + u("id") + b"\x85" + REDUCE  # 19 bytes: os.system("id")


def straddle(hidden: bytes, prefix: bytes = b"") -> bytes:
    """A frame that ends two bytes into BINBYTES' length (tests/scan/corpus.py's layout).

    Flat: the length is ``2 + len(hidden)`` and the bytes swallow ``hidden``. The C unpickler
    drops the frame's last two bytes, reads the length from the four zero bytes after the frame
    (empty bytes) and runs ``hidden``."""
    return (
        prefix
        + proto(4)
        + b"\x95"
        + Q(3)
        + b"B"
        + struct.pack("<H", 2 + len(hidden))
        + b"\0" * 4
        + hidden
        + STOP
    )


C_PREFIX = "read as CPython's C unpickler reads a file object (torch.load), "
FLAT_WHY = (
    "BINBYTES at byte 11 runs to byte 37, past the end of its frame at byte 14: CPython's C unpickler "
    "reading a file (as torch.load does) drops the rest of the frame and reads other bytes than a "
    "flat reading"
)


def test_a_straddling_opcode_is_read_again_as_the_c_unpickler_reads_it() -> None:
    data = straddle(HIDDEN)
    assert len(data) == 38
    trace: list[Any] = []
    stream, ctx = scan(data, member="m", trace=trace)
    assert stream.value == b"\0\0" + HIDDEN and stream.end == 38
    assert found(ctx) == [
        ("critical", "frame-divergence", FLAT_WHY, None, 11, "m"),
        (
            "high",
            "unsafe-global",
            C_PREFIX + "imports os.system, which is not on the allowlist and can run code" + NOT_ALLOWED,
            "os.system",
            30,
            "m",
        ),
        (
            "critical",
            "unsafe-call",
            C_PREFIX
            + "REDUCE calls os.system, which is not on the allowlist and runs or reaches arbitrary code",
            "os.system",
            36,
            "m",
        ),
    ]
    assert [(t.member, t.view, t.data, t.imports) for t in trace] == [
        ("m", "flat", data, []),
        ("m", "c-file", data, [("os", "system")]),
    ]


def test_the_c_file_reading_keeps_the_scan_s_torchscript_setting() -> None:
    data = straddle(sglobal("__torch__", "Net"))
    _, ctx = scan(data, torchscript=True)
    assert [f.code for f in ctx.findings] == ["frame-divergence"]
    _, ctx = scan(data)
    assert [(f.code, f.import_name) for f in ctx.findings] == [
        ("frame-divergence", None),
        ("unsafe-global", "__torch__.Net"),
    ]


def test_the_c_file_pass_keeps_the_file_where_the_flat_pass_left_it() -> None:
    data = straddle(HIDDEN, prefix=b"zz") + b"tail"
    f = io.BytesIO(data)
    f.seek(2)
    ctx = ScanContext(DEFAULT_ALLOWLIST)
    stream = analyse_stream(f, ctx)
    assert f.tell() == 40 and (stream.start, stream.end) == (2, 40)
    assert [x.offset for x in ctx.findings] == [13, 32, 38]


def test_the_c_file_pass_is_skipped_when_the_file_cannot_seek() -> None:
    class NoSeek(io.BytesIO):
        def seekable(self) -> bool:
            return False

    ctx = ScanContext(DEFAULT_ALLOWLIST, trace=[])
    analyse_stream(NoSeek(straddle(HIDDEN)), ctx)
    assert [f.code for f in ctx.findings] == ["frame-divergence"] and ctx.trace == []


def test_a_malformed_c_file_reading_keeps_the_flat_findings() -> None:
    data = straddle(b"\xff\xff")  # to the C unpickler, an unknown opcode
    stream, ctx = scan(data)
    assert [f.code for f in ctx.findings] == ["frame-divergence"] and stream.value == b"\0\0\xff\xff"


def test_frames_that_nest_are_not_read_twice() -> None:
    body = K1 + K2 + b"\x86"
    data = proto(4) + b"\x95" + Q(len(body)) + body + STOP
    trace: list[Any] = []
    stream, ctx = scan(data, trace=trace)
    assert ctx.findings == [] and [t.view for t in trace] == ["flat"] and norm(stream.value) == n(1, 2)


# -- helpers -------------------------------------------------------------------------------------------------


def test_pickle_start_is_a_proto_opcode_of_protocol_0_to_5() -> None:
    assert looks_like_pickle_start(b"\x80\x00") and looks_like_pickle_start(b"\x80\x05")
    assert not looks_like_pickle_start(b"\x80\x06") and not looks_like_pickle_start(b"\x80")
    assert not looks_like_pickle_start(b"\x81\x02") and not looks_like_pickle_start(b"")


def test_values_are_described_by_what_they_are() -> None:
    g = Global("os", "system", 3)
    assert _describe(g) == "os.system" and g.qualname == "os.system"
    assert _describe(Instance(g, (), 0, False)) == "the result of calling os.system"
    assert _describe(Instance(Instance(g, (), 0, False), (), 0, False)) == (
        "the result of calling the result of calling os.system"
    )
    assert _describe(Persistent("x", 0)) == "a persistent object"
    assert _describe(Opaque("why", 0)) == "an unknown value (why)"
    assert _describe(DictV()) == "a DictV constant" and _describe(3) == "a int constant"


def test_short_keeps_text_up_to_its_limit() -> None:
    assert _short("a" * 80) == "a" * 80 and _short("a" * 81) == "a" * 77 + "..."
    assert _short(("x",)) == "('x',)" and _short("ab", 2) == "ab" and _short(7) == "7"
    assert _short("abcdef", 5) == "ab..."


def test_legacy_keys_are_what_int_reads_from_an_ascii_id() -> None:
    assert [_legacy_key(v) for v in (3, " +3 ", "-4", "07", True, False, "x", "３", 3.0, None, "")] == [
        3,
        3,
        -4,
        7,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ]


def test_skip_reads_exactly_n_bytes_or_refuses() -> None:
    f = io.BytesIO(b"x" * ((1 << 20) + 5))
    _skip(f, (1 << 20) + 2, None, 0)
    assert f.tell() == (1 << 20) + 2
    _skip(f, 0, None, 0)
    assert f.tell() == (1 << 20) + 2

    def malformed(reason: str, pos: int) -> Malformed:
        return Malformed(reason, offset=pos)

    with pytest.raises(Malformed) as err:
        _skip(f, 4, malformed, 9)
    assert (err.value.reason, err.value.offset, f.tell()) == ("array data truncated", 9, (1 << 20) + 5)


def test_at_eof_consumes_nothing() -> None:
    f = io.BytesIO(b"ab")
    assert not at_eof(f) and f.tell() == 0
    f.seek(2)
    assert at_eof(f) and f.tell() == 2
    buffered = io.BufferedReader(io.BytesIO(b"ab"))  # has peek()
    assert not at_eof(buffered) and buffered.tell() == 0
    buffered.read()
    assert at_eof(buffered)


def test_iter_streams_reads_every_stream_to_the_end() -> None:
    data = proto(2) + K1 + STOP + proto(2) + K2 + STOP + b"N" + STOP
    ctx = ScanContext(DEFAULT_ALLOWLIST)
    streams = list(iter_streams(io.BytesIO(data), ctx, member="m", size=len(data)))
    assert [(s.value, s.start, s.end, s.proto) for s in streams] == [
        (1, 0, 5, 2),
        (2, 5, 10, 2),
        (None, 10, 12, 0),
    ]
    assert list(iter_streams(io.BytesIO(b""), ctx, member=None, size=0)) == []
    with pytest.raises(Malformed) as err:
        list(iter_streams(io.BytesIO(proto(2) + K1 + STOP + b"\xff"), ctx, member="m", size=None))
    assert (err.value.member, err.value.offset) == ("m", 5)


def test_dictv_looks_keys_up_by_equality() -> None:
    d = DictV([("a", 1), ("b", None), ("a", 3)])
    assert (d.get("a"), d.get("b"), d.get("c")) == (1, None, None)
    assert d.has("b") and not d.has("c") and not DictV().has("a")


def test_context_keeps_findings_up_to_its_limit() -> None:
    ctx = ScanContext(make_allowlist())
    for i in range(MAX_FINDINGS + 1):
        ctx.add(Finding("low", "x", "r", offset=i))
    assert (len(ctx.findings), ctx.dropped, ctx.findings[-1].offset) == (MAX_FINDINGS, 1, MAX_FINDINGS - 1)


# -- more exact edges: the plain reading, the C reading of a joblib stream, the readers' ends -----------


def test_a_plain_reading_reports_only_imports_that_can_resolve() -> None:
    prefix = "read with plain pickle.load (not joblib), the array bytes become opcodes: "
    for body, expected in (
        (b"ca\nb\n", [("unsafe-global", "a.b")]),
        (b"ca\n1b\n", []),  # "1b" is no identifier: no import can resolve it
        (b"ca-b\nc\n", []),
        (b"\x82\x01", []),  # a finding without a name
    ):
        trace: list[Any] = []
        _, ctx = scan(proto(2) + body + STOP, plain=True, trace=trace)
        assert [(f.code, f.import_name) for f in ctx.findings] == expected, body
        assert all(f.reason.startswith(prefix) for f in ctx.findings)
        assert [t.view for t in trace] == ["plain"]


def test_a_wrapper_state_joblib_cannot_read_is_refused_at_its_build() -> None:
    head = proto(4) + WRAPPER + b"}(" + u("shape") + u("x") + b"u"
    assert refusal(head + b"b" + STOP, member="m") == (
        "joblib array wrapper with a non-constant shape",
        len(head),
        "m",
    )


def test_the_c_reading_reads_joblib_array_bytes_as_opcodes() -> None:
    # A straddling BINBYTES makes the stream be read again as the C unpickler reads a file; that
    # reading does not skip array bytes (joblib's own reader is not the C unpickler's), so the
    # array's bytes, GLOBAL a b, are reported from it, and only from it.
    state = _jstate((2,))
    head = proto(4) + b"\x95" + Q(3) + b"B" + struct.pack("<H", 4) + b"\0" * 4 + b"N0"
    data = head + WRAPPER + state + b"b" + b"ca\nb\n0N0" + b"N\x86\x86" + STOP
    build = len(head) + len(WRAPPER) + len(state)
    trace: list[Any] = []
    _, ctx = scan(data, trace=trace)
    assert [(f.code, f.import_name, f.offset) for f in ctx.findings] == [
        ("frame-divergence", None, 11),
        ("unsafe-global", "a.b", build + 1),
    ]
    assert ctx.findings[1].reason == C_PREFIX + A_B
    assert [t.view for t in trace] == ["flat", "c-file"]


def test_joblib_array_bytes_inside_a_frame_are_read_again_as_the_c_unpickler_does() -> None:
    body = WRAPPER + _jstate((2,)) + b"b"
    data = proto(4) + b"\x95" + Q(len(body) + 4) + body + b"\x00" * 8 + b"N\x86" + STOP
    trace: list[Any] = []
    _, ctx = scan(data, trace=trace)
    assert [f.code for f in ctx.findings] == ["frame-divergence"]
    assert [t.view for t in trace] == ["flat", "c-file"]


def test_legacy_keys_refuse_other_prefixes() -> None:
    assert [_legacy_key(v) for v in ("X3", "+", "3 ", "٣")] == [None, None, 3, None]


def test_legacy_keys_with_two_signs_are_not_keys() -> None:
    # int() refuses "+-3" and "-+3": they name no tar member, and must not crash the scan.
    assert [_legacy_key(v) for v in ("+-3", "-+3", "--3")] == [None, None, None]


def test_skip_reads_a_single_byte() -> None:
    f = io.BytesIO(b"abc")
    _skip(f, 1, None, 0)
    assert f.tell() == 1


def test_at_eof_peeks_a_stream_that_cannot_seek() -> None:
    class Raw(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = data

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            n = min(len(b), len(self.data))
            b[:n] = self.data[:n]
            self.data = self.data[n:]
            return n

    with io.BufferedReader(Raw(b"ab")) as f:
        assert not at_eof(f) and f.read() == b"ab" and at_eof(f)


def test_c_file_view_readline_finds_a_newline_at_its_buffer_s_first_byte() -> None:
    f = io.BytesIO(b"\nab\ncd\n")
    v = CFileView(f)
    v.frame(4)
    assert (v.readline(), v.tell(), f.tell()) == (b"\n", 1, 4)
    assert (v.readline(), v.tell()) == (b"ab\n", 4)


def test_a_stream_unreadable_from_its_first_byte_is_refused_at_that_byte() -> None:
    f = io.BytesIO(b"garbage\xff")
    f.seek(7)
    with pytest.raises(Malformed) as err:
        analyse_stream(f, ScanContext(DEFAULT_ALLOWLIST), member="m")
    assert (err.value.reason, err.value.offset, err.value.member) == (
        "not a valid pickle (at position 7, opcode b'\\xff' unknown)",
        7,
        "m",
    )


@pytest.mark.parametrize(
    ("body", "opcode", "method"),
    [
        (u("s") + K1 + b"a", "APPEND", "append"),
        (u("s") + b"(" + K1 + b"e", "APPENDS", "extend"),
        (u("s") + u("k") + K1 + b"s", "SETITEM", "__setitem__"),
        (u("s") + b"(" + u("k") + K1 + b"u", "SETITEMS", "__setitem__"),
        (u("s") + b"(" + K1 + b"\x90", "ADDITEMS", "add"),
    ],
)
def test_a_container_opcode_on_a_constant_is_reported_at_that_opcode(
    body: bytes, opcode: str, method: str
) -> None:
    data = proto(4) + body + STOP
    _, ctx = scan(data, member="m")
    reason = f"calls .{method}() on a str constant, not on a list, dict or set built by the pickle"
    assert found(ctx) == [("high", "method-call", reason, None, len(data) - 2, "m")], opcode


def test_global_and_inst_read_a_name_with_a_space_as_the_loader_does() -> None:
    # The module is the first line, the name the second; pickletools joins them with a space.
    stream, ctx = scan(proto(2) + b"ca\nb c\n" + STOP)
    assert norm(stream.value) == ("global", "a", "b c", 2)
    assert [f.import_name for f in ctx.findings] == ["a.b c"]
    stream, ctx = scan(proto(2) + b"(ia\nb c\n" + STOP)
    assert norm(stream.value)[1] == ("global", "a", "b c", 3)


def test_an_opcode_the_loop_does_not_know_is_refused() -> None:
    # Every opcode of this Python's pickletools is handled; one a later Python adds fails closed.
    from dlsec.scan._pickle import _Analyser

    analyser = _Analyser(
        io.BytesIO(b""), ScanContext(DEFAULT_ALLOWLIST), member="m", torchscript=False, size=None, plain=False
    )
    with pytest.raises(Malformed) as err:
        analyser.step("NEW_OPCODE", None, 7)
    assert (err.value.reason, err.value.offset, err.value.member) == ("unsupported opcode NEW_OPCODE", 7, "m")


def test_a_reader_that_ends_without_stop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # genops raises before it runs out without a STOP; if it ever did not, the loop fails closed.
    import pickletools

    import dlsec.scan._pickle as module

    ops = {op.name: op for op in pickletools.opcodes}

    def short_genops(f: Any) -> Any:
        yield ops["PROTO"], 4, 0, 2
        yield ops["NONE"], None, 2, 3

    monkeypatch.setattr(module, "genops", short_genops)
    assert refusal(b"", member="m") == ("pickle ended without STOP", 2, "m")


def test_array_bytes_cut_short_are_refused_at_the_build() -> None:
    head = proto(4) + WRAPPER + _jstate((2,)) + b"b"
    assert refusal(head + b"\x00" * 7, member="m") == ("array data truncated", len(head) - 1, "m")


def test_streams_are_not_torchscript_unless_the_caller_says_so() -> None:
    torch_class = proto(4) + sglobal("__torch__", "Net") + STOP
    ctx = ScanContext(DEFAULT_ALLOWLIST)
    list(iter_streams(io.BytesIO(torch_class), ctx, member=None, size=None))
    assert [(f.code, f.import_name) for f in ctx.findings] == [("unsafe-global", "__torch__.Net")]
    # A pickle inside a TorchScript archive's constant is not part of the archive's code.
    _, ctx = scan(proto(4) + by(torch_class) + STOP, torchscript=True)
    assert [(f.code, f.import_name, f.member) for f in ctx.findings] == [
        ("unsafe-global", "__torch__.Net", "pickle > bytes at 2")
    ]
