"""The code that decides a pickle's verdict, pinned finding by finding (mutation testing, issue 28).

Each test builds a pickle byte stream by hand, opcode by opcode, and checks the analyser's exact
findings: severity, code, reason, import name and byte offset. Nothing here is unpickled: the
streams are only read by ``dlsec.scan._pickle.analyse_stream`` (and ``pickletools.genops`` to
find an opcode's offset).
"""

from __future__ import annotations

import io
import pickletools
import struct
from typing import Any

import pytest

from dlsec.scan._allowlist import DEFAULT_ALLOWLIST, Allowlist
from dlsec.scan._opcodes import CFileView, FrameTracker
from dlsec.scan._pickle import (
    DictV,
    Global,
    Instance,
    Opaque,
    Persistent,
    PickleStream,
    ScanContext,
    SetV,
    _is_code_exec,
    analyse_stream,
)
from dlsec.scan._scanner import make_allowlist
from tests.scan.corpus import (
    APPEND,
    BUILD,
    EMPTY_DICT,
    EMPTY_LIST,
    EMPTY_TUPLE,
    MARK,
    NEWOBJ,
    NEWOBJ_EX,
    OBJ,
    REDUCE,
    SETITEM,
    SETITEMS,
    STACK_GLOBAL,
    STOP,
    TUPLE,
    TUPLE2,
    const,
    global0,
    proto,
    sglobal,
    u,
)

BINPERSID, PERSID, EMPTY_SET, FROZENSET, ADDITEMS = b"Q", b"P", b"\x8f", b"\x91", b"\x90"
OD = ("collections", "OrderedDict")
NOT_ALLOWED = " (importing runs the module's code)"

Found = tuple[str, str, str, str | None, int | None]


def scan(
    data: bytes,
    *,
    allow: Allowlist | list[str] | None = None,
    torchscript: bool = False,
    tar_keys: frozenset[Any] | None = None,
) -> tuple[PickleStream, ScanContext]:
    allowlist = allow if isinstance(allow, Allowlist) else make_allowlist(allow or [])
    ctx = ScanContext(allowlist)
    ctx.tar_keys = tar_keys
    stream = analyse_stream(io.BytesIO(data), ctx, torchscript=torchscript)
    return stream, ctx


def found(ctx: ScanContext) -> list[Found]:
    return [(f.severity, f.code, f.reason, f.import_name, f.offset) for f in ctx.findings]


def at(data: bytes, opcode: str, nth: int = 0) -> int:
    """Byte offset of the ``nth`` opcode named ``opcode`` (read with pickletools, not loaded)."""
    return [pos for op, _, pos in pickletools.genops(data) if op.name == opcode and pos is not None][nth]


def p4(body: bytes) -> bytes:
    return proto(4) + body + STOP


# -- _is_code_exec: the severity of a global that is not allowlisted ---------------------------------


@pytest.mark.parametrize(
    ("module", "dangerous"),
    [
        ("os", True),
        ("os.path", True),
        ("numpy.f2py", True),
        ("numpy.f2py.crackfortran", True),
        ("torch.utils.data.dataloader", True),
        ("numpy", False),
        ("numpy.core", False),
        ("torch", False),
        ("torch.utils", False),
        ("osx", False),
        ("a.os", False),
        ("", False),
    ],
)
def test_code_exec_roots_match_whole_leading_components(module: str, dangerous: bool) -> None:
    assert _is_code_exec(module) is dangerous


# -- import_global -------------------------------------------------------------------------------


def test_a_global_off_the_allowlist_is_graded_by_what_it_reaches() -> None:
    data = p4(sglobal("os", "system"))
    stream, ctx = scan(data)
    pos = at(data, "STACK_GLOBAL")
    reason = "imports os.system, which is not on the allowlist and can run code" + NOT_ALLOWED
    assert found(ctx) == [("high", "unsafe-global", reason, "os.system", pos)]
    assert stream.value == Global("os", "system", pos)
    data = p4(sglobal("foo.bar", "baz"))
    stream, ctx = scan(data)
    reason = "imports foo.bar.baz, which is not on the allowlist" + NOT_ALLOWED
    assert found(ctx) == [("medium", "unsafe-global", reason, "foo.bar.baz", at(data, "STACK_GLOBAL"))]


def test_an_allowlisted_global_is_returned_without_findings() -> None:
    data = p4(u("x") + sglobal("torch", "float32"))
    stream, ctx = scan(data)
    assert found(ctx) == [] and ctx.extras_used == set()
    assert stream.value == Global("torch", "float32", at(data, "STACK_GLOBAL"))


@pytest.mark.parametrize(
    ("module", "name", "described"),
    [
        (const(7), u("system"), "(a int constant / a str constant)"),
        (u("os"), const(7), "(a str constant / a int constant)"),
        (u("os"), sglobal(*OD), "(a str constant / collections.OrderedDict)"),
    ],
)
def test_stack_global_of_a_computed_name_is_dynamic(module: bytes, name: bytes, described: str) -> None:
    data = p4(module + name + STACK_GLOBAL)
    ctx = ScanContext(DEFAULT_ALLOWLIST, trace=[])
    stream = analyse_stream(io.BytesIO(data), ctx)
    pos = at(data, "STACK_GLOBAL", -1)
    reason = f"STACK_GLOBAL imports a name computed inside the pickle {described}, not constant strings"
    assert found(ctx)[-1] == ("critical", "dynamic-import", reason, None, pos)
    assert isinstance(stream.value, Opaque) and (stream.value.why, stream.value.offset) == (
        "dynamic import",
        pos,
    )
    assert ctx.trace is not None
    assert ctx.trace[0].imports == ([OD] if STACK_GLOBAL in name else [])


def test_the_trace_records_raw_names_before_python2_fixes() -> None:
    data = proto(2) + global0("__builtin__", "set") + sglobal("os", "system") + TUPLE2 + STOP
    ctx = ScanContext(DEFAULT_ALLOWLIST, trace=[])
    stream = analyse_stream(io.BytesIO(data), ctx)
    assert ctx.trace is not None and ctx.trace[0].imports == [("__builtin__", "set"), ("os", "system")]
    assert stream.value[0] == Global("builtins", "set", 2)
    assert [f.import_name for f in ctx.findings] == ["os.system"]


def test_python2_names_are_fixed_only_below_protocol_3() -> None:
    stream, ctx = scan(proto(2) + global0("__builtin__", "set") + STOP)
    assert found(ctx) == [] and stream.value == Global("builtins", "set", 2)
    data = proto(3) + global0("__builtin__", "set") + STOP
    _, ctx = scan(data)
    reason = "imports __builtin__.set, which is not on the allowlist and can run code" + NOT_ALLOWED
    assert found(ctx) == [("high", "unsafe-global", reason, "__builtin__.set", 2)]


@pytest.mark.parametrize(
    ("module", "name"), [("__torch__", "Net"), ("__torch__.m", "Net"), ("torch.jit._pickle", "build_intlist")]
)
def test_torchscript_archives_may_import_their_own_classes(module: str, name: str) -> None:
    data = p4(sglobal(module, name))
    stream, ctx = scan(data, torchscript=True)
    assert found(ctx) == [] and stream.value == Global(module, name, at(data, "STACK_GLOBAL"))
    _, ctx = scan(data)
    assert [(f.code, f.import_name) for f in ctx.findings] == [("unsafe-global", f"{module}.{name}")]


def test_torchscript_does_not_excuse_a_module_that_only_starts_like_torch() -> None:
    data = p4(sglobal("__torch__x", "Net"))
    _, ctx = scan(data, torchscript=True)
    reason = "imports __torch__x.Net, which is not on the allowlist" + NOT_ALLOWED
    assert found(ctx) == [("medium", "unsafe-global", reason, "__torch__x.Net", at(data, "STACK_GLOBAL"))]


def test_only_user_added_globals_are_reported_as_extras() -> None:
    data = p4(sglobal("argparse", "Namespace") + sglobal("torch", "float32") + TUPLE2)
    _, ctx = scan(data, allow=["argparse.Namespace"])
    assert found(ctx) == [] and ctx.extras_used == {"argparse.Namespace"}
    _, ctx = scan(data)
    assert [f.import_name for f in ctx.findings] == ["argparse.Namespace"] and ctx.extras_used == set()


# -- callee_allowed and call ----------------------------------------------------------------------


def test_calling_a_value_is_refused() -> None:
    data = p4(sglobal("torch", "float32") + EMPTY_TUPLE + REDUCE)
    stream, ctx = scan(data)
    pos = at(data, "REDUCE")
    reason = "REDUCE calls torch.float32, which is allowlisted as a value, not as a callable"
    assert found(ctx) == [("medium", "calls-value", reason, "torch.float32", pos)]
    value = stream.value
    assert isinstance(value, Instance) and value.allowed is False
    assert (value.func, value.args, value.offset) == (
        Global("torch", "float32", at(data, "STACK_GLOBAL")),
        (),
        pos,
    )


def test_calls_off_the_allowlist_are_graded_by_what_they_reach() -> None:
    data = p4(sglobal("os", "system") + const(("x",)) + REDUCE)
    _, ctx = scan(data)
    reason = "REDUCE calls os.system, which is not on the allowlist and runs or reaches arbitrary code"
    assert found(ctx)[1:] == [("critical", "unsafe-call", reason, "os.system", at(data, "REDUCE"))]
    data = p4(sglobal("foo", "bar") + EMPTY_TUPLE + REDUCE)
    stream, ctx = scan(data)
    reason = "REDUCE calls foo.bar, which is not on the allowlist"
    assert found(ctx)[1:] == [("high", "unsafe-call", reason, "foo.bar", at(data, "REDUCE"))]
    assert isinstance(stream.value, Instance) and stream.value.allowed is False
    # What it made is no allowed object: BUILD on it is reported too.
    _, ctx = scan(p4(sglobal("foo", "bar") + EMPTY_TUPLE + REDUCE + const(1) + BUILD))
    assert [f.code for f in ctx.findings] == ["unsafe-global", "unsafe-call", "build-on-non-instance"]


@pytest.mark.parametrize(
    ("callee", "described"),
    [
        (sglobal(*OD) + EMPTY_TUPLE + REDUCE, "the result of calling collections.OrderedDict"),
        (u("x"), "a str constant"),
    ],
)
def test_only_globals_may_be_called(callee: bytes, described: str) -> None:
    data = p4(callee + EMPTY_TUPLE + REDUCE)
    stream, ctx = scan(data)
    reason = (
        f"REDUCE calls {described}; only allowlisted globals may be called "
        "(attribute chains and gadgets are built this way)"
    )
    assert found(ctx) == [("critical", "call-on-result", reason, None, at(data, "REDUCE", -1))]
    assert isinstance(stream.value, Instance) and stream.value.allowed is False


@pytest.mark.parametrize(
    ("how", "body"),
    [
        ("NEWOBJ", sglobal("foo", "bar") + EMPTY_TUPLE + NEWOBJ),
        ("NEWOBJ_EX", sglobal("foo", "bar") + EMPTY_TUPLE + EMPTY_DICT + NEWOBJ_EX),
        ("OBJ", MARK + sglobal("foo", "bar") + OBJ),
        ("INST", MARK + b"ifoo\nbar\n"),
    ],
)
def test_each_call_opcode_names_itself(how: str, body: bytes) -> None:
    data = p4(body)
    _, ctx = scan(data)
    reason = f"{how} calls foo.bar, which is not on the allowlist"
    assert found(ctx)[1:] == [("high", "unsafe-call", reason, "foo.bar", at(data, how))]


def test_an_allowlisted_callable_makes_an_allowed_instance() -> None:
    data = p4(sglobal(*OD) + EMPTY_TUPLE + REDUCE)
    stream, ctx = scan(data)
    assert found(ctx) == []
    value = stream.value
    assert isinstance(value, Instance) and value.allowed is True and value.state is None
    assert (value.func, value.args, value.offset) == (
        Global(*OD, at(data, "STACK_GLOBAL")),
        (),
        at(data, "REDUCE"),
    )


def test_torchscript_classes_may_be_called_in_torchscript_archives_only() -> None:
    for module, name in [("__torch__.m", "Net"), ("torch.jit._pickle", "build_intlist")]:
        data = p4(sglobal(module, name) + EMPTY_TUPLE + NEWOBJ)
        stream, ctx = scan(data, torchscript=True)
        assert found(ctx) == [] and isinstance(stream.value, Instance) and stream.value.allowed is True
        _, ctx = scan(data)
        assert [(f.code, f.import_name) for f in ctx.findings] == [
            ("unsafe-global", f"{module}.{name}"),
            ("unsafe-call", f"{module}.{name}"),
        ]
    # callee_allowed accepts any module starting with __torch__; import_global already refused it.
    data = p4(sglobal("__torch__x", "Net") + EMPTY_TUPLE + NEWOBJ)
    stream, ctx = scan(data, torchscript=True)
    assert [f.code for f in ctx.findings] == ["unsafe-global"] and stream.value.allowed is True


def _from_type(inner: bytes) -> bytes:
    return p4(sglobal("torch._tensor", "_rebuild_from_type_v2") + inner + REDUCE)


def test_rebuild_from_type_v2_may_call_only_an_allowlisted_callable() -> None:
    stream, ctx = scan(_from_type(MARK + sglobal(*OD) + TUPLE))
    assert found(ctx) == [] and stream.value.allowed is True
    stream, ctx = scan(
        _from_type(MARK + sglobal("argparse", "Namespace") + TUPLE), allow=["argparse.Namespace"]
    )
    assert found(ctx) == [] and stream.value.allowed is True
    cases = [
        (MARK + sglobal("torch", "float32") + TUPLE, "torch.float32", "torch.float32"),
        (EMPTY_TUPLE, "a NoneType constant", None),
        (EMPTY_LIST + sglobal(*OD) + APPEND, "a NoneType constant", None),
        (
            MARK + sglobal(*OD) + EMPTY_TUPLE + REDUCE + TUPLE,
            "the result of calling collections.OrderedDict",
            None,
        ),
    ]
    for args, described, name in cases:
        data = _from_type(args)
        stream, ctx = scan(data)
        reason = f"torch._tensor._rebuild_from_type_v2 would call {described}, which is not an allowlisted "
        reason += "callable"
        assert found(ctx) == [("critical", "unsafe-call", reason, name, at(data, "REDUCE", -1))]
        assert isinstance(stream.value, Instance) and stream.value.allowed is False


def test_the_checks_on_a_callee_run_only_when_it_may_be_called() -> None:
    # A custom allowlist that holds the rebuild functions as values only: calling one is refused
    # once, as a value, and neither the inner-callable nor the tensor-view check runs on it.
    values = frozenset({("torch._tensor", "_rebuild_from_type_v2"), ("torch._utils", "_rebuild_tensor_v2")})
    allow = Allowlist(callables=frozenset(), values=values)
    for module, name in values:
        data = p4(sglobal(module, name) + EMPTY_TUPLE + REDUCE)
        stream, ctx = scan(data, allow=allow)
        assert [(f.code, f.import_name) for f in ctx.findings] == [("calls-value", f"{module}.{name}")]
        assert stream.value.allowed is False


def test_only_torch_utils_view_rebuilds_are_checked_as_views() -> None:
    data = p4(sglobal("torch._utils", "_rebuild_tensor_v2") + EMPTY_TUPLE + REDUCE)
    _, ctx = scan(data)
    reason = "torch._utils._rebuild_tensor_v2 with arguments dlsec cannot read"
    assert found(ctx) == [("high", "tensor-unverifiable", reason, None, at(data, "REDUCE"))]
    for module, name in [("torch._utils", "_rebuild_parameter"), ("mine", "_rebuild_tensor_v2")]:
        _, ctx = scan(p4(sglobal(module, name) + EMPTY_TUPLE + REDUCE), allow=["mine._rebuild_tensor_v2"])
        assert found(ctx) == []


# -- check_tensor_view ----------------------------------------------------------------------------


def pid(kind: str = "FloatStorage", numel: int = 6, view: bytes = b"", module: str = "torch") -> bytes:
    return (
        MARK
        + u("storage")
        + sglobal(module, kind)
        + u("0")
        + u("cpu")
        + const(numel)
        + view
        + TUPLE
        + BINPERSID
    )


def rebuild(name: str, *args: bytes) -> bytes:
    return p4(sglobal("torch._utils", name) + MARK + b"".join(args) + TUPLE + REDUCE)


def view_findings(name: str, *args: bytes) -> list[Found]:
    data = rebuild(name, *args)
    _, ctx = scan(data)
    return [(s, c, r, n, None if o != at(data, "REDUCE") else -1) for s, c, r, n, o in found(ctx)]


def oob(where: str, offset: int, size: list[int], stride: list[int], last: int, numel: int) -> Found:
    reason = (
        f"torch._utils.{where}: a view at offset {offset} with size {size} and stride {stride} "
        f"reaches element {last} of a storage of {numel} elements (reads or writes outside "
        "the tensor's memory when used)"
    )
    return ("high", "tensor-out-of-bounds", reason, None, -1)


def unverifiable(where: str, offset: str, size: str, stride: str) -> Found:
    reason = (
        f"torch._utils.{where}: the storage, offset, size or stride is not a plain non-negative value "
        f"(offset {offset}, size {size}, stride {stride}), so the view cannot be checked against its storage"
    )
    return ("high", "tensor-unverifiable", reason, None, -1)


V2_TAIL = const(False) + EMPTY_DICT


def test_a_view_that_ends_on_the_storage_s_last_element_is_in_bounds() -> None:
    # 2x3 with strides (3, 1) from offset 0 reaches element 0 + 3 + 2 = 5 of 6.
    assert view_findings("_rebuild_tensor_v2", pid(), const(0), const((2, 3)), const((3, 1)), V2_TAIL) == []
    # Exactly four arguments (the first rebuild's signature) are enough to check.
    assert view_findings("_rebuild_tensor", pid(), const(0), const((2, 3)), const((3, 1))) == []
    # One element: offset 5 of 6.
    assert view_findings("_rebuild_tensor", pid(), const(5), const((1,)), const((7,))) == []


def test_a_view_one_element_past_its_storage_is_out_of_bounds() -> None:
    got = view_findings("_rebuild_tensor_v2", pid(), const(1), const((2, 3)), const((3, 1)), V2_TAIL)
    assert got == [oob("_rebuild_tensor_v2", 1, [2, 3], [3, 1], 6, 6)]
    got = view_findings("_rebuild_tensor", pid(numel=5), const(0), const((2, 3)), const((3, 1)))
    assert got == [oob("_rebuild_tensor", 0, [2, 3], [3, 1], 5, 5)]
    got = view_findings("_rebuild_tensor", pid(numel=4), const(0), const((3, 2)), const((2, 1)))
    assert got == [oob("_rebuild_tensor", 0, [3, 2], [2, 1], 5, 4)]
    got = view_findings("_rebuild_qtensor", pid(), const(6), const((1,)), const((1,)))
    assert got == [oob("_rebuild_qtensor", 6, [1], [1], 6, 6)]


def test_an_empty_view_may_start_at_the_storage_s_end_but_not_past_it() -> None:
    assert view_findings("_rebuild_tensor", pid(), const(6), const((0, 3)), const((3, 1))) == []
    assert view_findings("_rebuild_tensor", pid(), const(6), const((3, 0)), const((1, 9))) == []
    got = view_findings("_rebuild_tensor", pid(), const(7), const((0, 3)), const((3, 1)))
    assert got == [oob("_rebuild_tensor", 7, [0, 3], [3, 1], 6, 6)]


def test_a_view_dlsec_cannot_read_is_unverifiable() -> None:
    short = (
        "high",
        "tensor-unverifiable",
        "torch._utils._rebuild_tensor with arguments dlsec cannot read",
        None,
        -1,
    )
    assert view_findings("_rebuild_tensor", pid(), const(0), const((1,))) == [short]
    data = p4(sglobal("torch._utils", "_rebuild_tensor") + const([0, 1, 2, 3]) + REDUCE)
    _, ctx = scan(data)
    reason = "torch._utils._rebuild_tensor with arguments dlsec cannot read"
    assert found(ctx) == [("high", "tensor-unverifiable", reason, None, at(data, "REDUCE"))]


@pytest.mark.parametrize(
    ("storage", "offset", "size", "stride", "shown"),
    [
        (const(None), const(0), const((2,)), const((1,)), ("0", "(2,)", "(1,)")),
        (pid(), const(0), const([2]), const((1,)), ("0", "[2]", "(1,)")),
        (pid(), const(0), const((2,)), const([1]), ("0", "(2,)", "[1]")),
        (pid(), const(0), const((2, 1)), const((1,)), ("0", "(2, 1)", "(1,)")),
        (pid(), const(-1), const((2,)), const((1,)), ("-1", "(2,)", "(1,)")),
        (pid(), const(0), const((-2,)), const((1,)), ("0", "(-2,)", "(1,)")),
        (pid(), const(0), const((2,)), const((-1,)), ("0", "(2,)", "(-1,)")),
        (pid(), const(True), const((2,)), const((1,)), ("True", "(2,)", "(1,)")),
        (pid(), const(0), const((True,)), const((1,)), ("0", "(True,)", "(1,)")),
        (pid(), const(0), const((2,)), const((True,)), ("0", "(2,)", "(True,)")),
        (pid(), const("0"), const((2,)), const((1,)), ("0", "(2,)", "(1,)")),
        (pid(), b"G" + struct.pack(">d", 0.0), const((2,)), const((1,)), ("0.0", "(2,)", "(1,)")),
        (pid(), const(0), const(2), const((1,)), ("0", "2", "(1,)")),
        (pid(), const(0), const((2,)), const(1), ("0", "(2,)", "1")),
    ],
)
def test_a_view_that_is_not_plain_non_negative_integers_is_unverifiable(
    storage: bytes, offset: bytes, size: bytes, stride: bytes, shown: tuple[str, str, str]
) -> None:
    got = view_findings("_rebuild_tensor", storage, offset, size, stride)
    assert got == [unverifiable("_rebuild_tensor", *shown)]


def test_v3_counts_its_untyped_storage_in_bytes_of_its_dtype() -> None:
    untyped = pid("UntypedStorage", 24)
    tail = const(False) + EMPTY_DICT
    fits = view_findings(
        "_rebuild_tensor_v3",
        untyped,
        const(0),
        const((2, 3)),
        const((3, 1)),
        tail,
        sglobal("torch", "float32"),
    )
    assert fits == []
    got = view_findings(
        "_rebuild_tensor_v3",
        untyped,
        const(1),
        const((2, 3)),
        const((3, 1)),
        tail,
        sglobal("torch", "float32"),
    )
    assert got == [oob("_rebuild_tensor_v3", 1, [2, 3], [3, 1], 6, 6)]
    # 25 bytes hold 6 whole float32 elements, not 6.25.
    got = view_findings(
        "_rebuild_tensor_v3",
        pid("UntypedStorage", 25),
        const(1),
        const((2, 3)),
        const((3, 1)),
        tail,
        sglobal("torch", "float32"),
    )
    assert got == [oob("_rebuild_tensor_v3", 1, [2, 3], [3, 1], 6, 6)]
    got = view_findings(
        "_rebuild_tensor_v3", untyped, const(0), const((24,)), const((1,)), tail, sglobal("torch", "uint8")
    )
    assert got == []
    # Without a known dtype the element count is unknown: unverifiable, never assumed.
    for dtype in (b"", u("float32"), sglobal("torch", "int4")):
        got = view_findings("_rebuild_tensor_v3", untyped, const(0), const((1,)), const((1,)), tail, dtype)
        assert got == [unverifiable("_rebuild_tensor_v3", "0", "(1,)", "(1,)")]
    got = view_findings(
        "_rebuild_tensor_v3",
        const(None),
        const(0),
        const((1,)),
        const((1,)),
        tail,
        sglobal("torch", "float32"),
    )
    assert got == [unverifiable("_rebuild_tensor_v3", "0", "(1,)", "(1,)")]


def test_v2_counts_its_typed_storage_in_elements_whatever_follows() -> None:
    got = view_findings(
        "_rebuild_tensor_v2",
        pid(numel=6),
        const(0),
        const((6,)),
        const((1,)),
        V2_TAIL,
        sglobal("torch", "float64"),
    )
    assert got == []


@pytest.mark.parametrize(
    "storage",
    [
        MARK + u("storage") + sglobal("torch", "FloatStorage") + u("0") + u("cpu") + TUPLE + BINPERSID,
        pid(numel=1).replace(const(1), const(True)),
        pid(numel=1).replace(const(1), u("1")),
        PERSID + b"0123456789\n",
        const(7) + BINPERSID,
    ],
)
def test_a_storage_whose_size_is_not_a_plain_count_is_unverifiable(storage: bytes) -> None:
    got = view_findings("_rebuild_tensor", storage, const(0), const((1,)), const((1,)))
    assert [f[1] for f in got] == ["unknown-persistent-id", "tensor-unverifiable"]
    assert got[-1] == unverifiable("_rebuild_tensor", "0", "(1,)", "(1,)")


def test_a_legacy_storage_view_bounds_the_tensor_by_its_own_size() -> None:
    view = MARK + u("base") + const(2) + const(4) + TUPLE
    assert (
        view_findings("_rebuild_tensor", pid(numel=100, view=view), const(0), const((4,)), const((1,))) == []
    )
    got = view_findings("_rebuild_tensor", pid(numel=100, view=view), const(0), const((5,)), const((1,)))
    assert got == [oob("_rebuild_tensor", 0, [5], [1], 4, 4)]
    # A view record that is not (key, offset, size) with an integer size: the storage's own count.
    for other in (MARK + u("base") + const(2) + u("4") + TUPLE, MARK + u("base") + const(4) + TUPLE):
        got = view_findings("_rebuild_tensor", pid(numel=100, view=other), const(0), const((5,)), const((1,)))
        assert got == []


# -- container_method ------------------------------------------------------------------------------


def _method(
    reason_target: str, method: str, severity: str = "high", name: str | None = None
) -> tuple[str, str, str, str | None]:
    return (
        severity,
        "method-call",
        f"calls .{method}() on {reason_target}, not on a list, dict or set built by the pickle",
        name,
    )


def no_offsets(ctx: ScanContext) -> list[tuple[str, str, str, str | None]]:
    return [(s, c, r, n) for s, c, r, n, _ in found(ctx)]


def made(module: str, name: str) -> bytes:
    return sglobal(module, name) + EMPTY_TUPLE + REDUCE


def test_dict_and_set_classes_may_use_their_own_methods() -> None:
    for body in (
        made(*OD) + u("a") + const(1) + SETITEM,
        made(*OD) + MARK + u("a") + const(1) + SETITEMS,
        made("collections", "Counter") + u("a") + const(1) + SETITEM,
        made("builtins", "set") + MARK + const(1) + ADDITEMS,
    ):
        _, ctx = scan(p4(body))
        assert found(ctx) == [], body


@pytest.mark.parametrize(
    ("body", "method", "target"),
    [
        (made(*OD) + MARK + const(1) + ADDITEMS, "add", "the result of calling collections.OrderedDict"),
        (
            made("builtins", "set") + u("a") + const(1) + SETITEM,
            "__setitem__",
            "the result of calling builtins.set",
        ),
        (made("builtins", "set") + const(1) + APPEND, "append", "the result of calling builtins.set"),
        (made(*OD) + EMPTY_LIST + APPEND, "append", "the result of calling collections.OrderedDict"),
        (made("torch", "Size") + MARK + const(1) + b"e", "extend", "the result of calling torch.Size"),
        (EMPTY_SET + const(1) + APPEND, "append", "a SetV constant"),
        (MARK + const(1) + FROZENSET + MARK + const(2) + ADDITEMS, "add", "a SetV constant"),
        (u("s") + MARK + u("a") + const(1) + SETITEMS, "__setitem__", "a str constant"),
    ],
)
def test_other_container_methods_are_method_calls(body: bytes, method: str, target: str) -> None:
    _, ctx = scan(p4(body))
    assert no_offsets(ctx) == [_method(target, method)]


def test_container_methods_on_a_global_are_critical() -> None:
    data = p4(sglobal(*OD) + u("a") + const(1) + SETITEM)
    _, ctx = scan(data)
    assert found(ctx) == [
        (
            *_method("collections.OrderedDict", "__setitem__", "critical", "collections.OrderedDict"),
            at(data, "SETITEM"),
        )
    ]


def test_an_instance_of_a_class_called_against_the_allowlist_has_no_methods() -> None:
    allow = Allowlist(callables=frozenset(), values=frozenset({OD}))
    _, ctx = scan(p4(made(*OD) + u("a") + const(1) + SETITEM), allow=allow)
    assert [f.code for f in ctx.findings] == ["calls-value", "method-call"]
    assert ctx.findings[1].severity == "high"


def test_torchscript_objects_may_use_their_methods_when_their_class_was_allowed() -> None:
    body = sglobal("__torch__.m", "Net") + EMPTY_TUPLE + NEWOBJ + u("a") + const(1) + SETITEM
    _, ctx = scan(p4(body), torchscript=True)
    assert found(ctx) == []
    _, ctx = scan(p4(made("torch", "Size") + u("a") + const(1) + SETITEM), torchscript=True)
    assert found(ctx) == []  # any allowed object: its methods are the archive's compiled code
    _, ctx = scan(p4(made("torch", "Size") + u("a") + const(1) + SETITEM))
    assert no_offsets(ctx) == [_method("the result of calling torch.Size", "__setitem__")]
    body = sglobal("torch", "float32") + EMPTY_TUPLE + REDUCE + u("a") + const(1) + SETITEM
    _, ctx = scan(p4(body), torchscript=True)
    assert [f.code for f in ctx.findings] == ["calls-value", "method-call"]
    body = u("x") + u("a") + const(1) + SETITEM
    _, ctx = scan(p4(body), torchscript=True)
    assert no_offsets(ctx) == [_method("a str constant", "__setitem__")]


# -- build -------------------------------------------------------------------------------------------


def test_build_sets_the_state_of_an_allowed_instance() -> None:
    stream, ctx = scan(p4(made(*OD) + const(5) + BUILD))
    assert found(ctx) == [] and isinstance(stream.value, Instance) and stream.value.state == 5


def test_build_on_a_global_is_critical() -> None:
    data = p4(sglobal(*OD) + const(5) + BUILD)
    _, ctx = scan(data)
    reason = (
        "BUILD sets attributes of the imported object collections.OrderedDict (monkey-patching "
        "code that runs later)"
    )
    assert found(ctx) == [
        ("critical", "build-on-global", reason, "collections.OrderedDict", at(data, "BUILD"))
    ]


@pytest.mark.parametrize(
    ("target", "described", "before"),
    [
        (u("x"), "a str constant", []),
        (
            sglobal("torch", "float32") + EMPTY_TUPLE + REDUCE,
            "the result of calling torch.float32",
            ["calls-value"],
        ),
    ],
)
def test_build_on_anything_else_is_high(target: bytes, described: str, before: list[str]) -> None:
    data = p4(target + const(5) + BUILD)
    stream, ctx = scan(data)
    reason = f"BUILD applies state to {described}, not to an object an allowlisted constructor made"
    assert [f.code for f in ctx.findings[:-1]] == before
    assert found(ctx)[-1] == ("high", "build-on-non-instance", reason, None, at(data, "BUILD"))
    if isinstance(stream.value, Instance):
        assert stream.value.state is None


# -- persistent ---------------------------------------------------------------------------------------


def _pid_tuple(*items: bytes) -> bytes:
    return p4(MARK + b"".join(items) + TUPLE + BINPERSID)


STORAGE = (u("storage"), sglobal("torch", "FloatStorage"), u("0"), u("cpu"), const(6))


@pytest.mark.parametrize(
    "items",
    [
        STORAGE,
        (*STORAGE, const(None)),
        (*STORAGE, MARK + u("k") + const(0) + const(2) + TUPLE),
        (u("storage"), sglobal("torch.cuda", "HalfStorage"), u("0"), u("cuda:0"), const(0)),
        (u("storage"), sglobal("torch.storage", "UntypedStorage"), u("0"), u("cpu"), const(6)),
        (u("storage"), sglobal("torch", "UntypedStorage"), u("0"), u("cpu"), const(6)),
    ],
)
def test_a_torch_storage_reference_is_accepted(items: tuple[bytes, ...]) -> None:
    data = _pid_tuple(*items)
    stream, ctx = scan(data)
    assert found(ctx) == []
    assert isinstance(stream.value, Persistent) and stream.value.offset == at(data, "BINPERSID")
    assert stream.storage_ids == [stream.value.pid] and stream.value.pid[0] == "storage"


@pytest.mark.parametrize(
    "items",
    [
        STORAGE[:4],
        (*STORAGE, const(None), const(None)),
        (u("Storage"), *STORAGE[1:]),
        (u("storage"), u("torch.FloatStorage"), *STORAGE[2:]),
        (u("storage"), sglobal("torch.foo", "FloatStorage"), *STORAGE[2:]),
        (u("storage"), sglobal("torch", "FloatTensor"), *STORAGE[2:]),
        (u("storage"), STORAGE[1], const(0), *STORAGE[3:]),
        (*STORAGE[:3], const(0), STORAGE[4]),
        (*STORAGE[:4], u("6")),
        (*STORAGE[:4], const(True)),
        (*STORAGE[:4], const(-1)),
        (*STORAGE, const([0])),
        (*STORAGE, const(0)),
    ],
)
def test_anything_else_as_a_persistent_id_is_reported(items: tuple[bytes, ...]) -> None:
    stream, ctx = scan(_pid_tuple(*items))
    assert [(f.severity, f.code) for f in ctx.findings if f.code != "unsafe-global"] == [
        ("medium", "unknown-persistent-id")
    ]
    assert stream.storage_ids == [] and isinstance(stream.value, Persistent)


def test_a_persistent_id_s_reason_shows_it() -> None:
    data = p4(PERSID + b"abc\n")
    stream, ctx = scan(data)
    reason = (
        "persistent id abc is not a PyTorch storage reference; the loader's persistent_load "
        "decides what it becomes"
    )
    assert found(ctx) == [("medium", "unknown-persistent-id", reason, None, 2)]
    assert isinstance(stream.value, Persistent) and (stream.value.pid, stream.value.offset) == ("abc", 2)


def test_a_legacy_tar_may_name_only_the_keys_it_defines() -> None:
    keys = frozenset({3})
    for data, key in (
        (p4(PERSID + b"3\n"), "3"),
        (p4(u(" +3") + BINPERSID), " +3"),
        (p4(const(3) + BINPERSID), 3),
    ):
        stream, ctx = scan(data, tar_keys=keys)
        assert found(ctx) == [] and stream.storage_ids == [], data
        assert isinstance(stream.value, Persistent) and stream.value.pid == key
        assert isinstance(stream.value, Persistent) and stream.value.offset == at(
            data, "BINPERSID" if b"Q" in data else "PERSID"
        )
    for data in (
        p4(PERSID + b"4\n"),
        p4(const(True) + BINPERSID),
        p4(u("x3") + BINPERSID),
    ):
        _, ctx = scan(data, tar_keys=frozenset({1, 3}))
        assert [f.code for f in ctx.findings] == ["unknown-persistent-id"], data
    _, ctx = scan(p4(PERSID + b"3\n"))
    assert [f.code for f in ctx.findings] == ["unknown-persistent-id"]


# -- FrameTracker.check and CFileView.frame ------------------------------------------------------------


def test_frame_tracker_accepts_opcodes_that_nest_in_their_frame() -> None:
    t = FrameTracker()
    assert t.check("FRAME", 10, 2, 11) is None and (t.frame_start, t.frame_end) == (11, 21)
    assert t.check("BININT1", 1, 11, 13) is None
    assert t.check("SHORT_BINUNICODE", "abcdef", 13, 21) is None and t.inside(20) and not t.inside(21)
    assert t.check("STOP", None, 21, 22) is None and t.frame_end is None and not t.inside(21)
    t = FrameTracker()
    assert t.check("FRAME", 0, 2, 11) is None and (t.frame_start, t.frame_end) == (11, 11)
    assert t.check("FRAME", 4, 11, 20) is None and (t.frame_start, t.frame_end) == (20, 24)
    assert t.check("STOP", None, 23, 24) is None


def test_frame_tracker_names_each_way_frames_and_opcodes_disagree() -> None:
    t = FrameTracker()
    t.check("FRAME", 10, 2, 11)
    assert (
        t.check("FRAME", 3, 13, 22)
        == "FRAME at byte 13 starts inside the frame that began at byte 11 and ends at byte 21"
    )
    assert t.check("SHORT_BINUNICODE", "x", 19, 22) == (
        "SHORT_BINUNICODE at byte 19 runs to byte 22, past the end of its frame at byte 21: CPython's C "
        "unpickler reading a file (as torch.load does) drops the rest of the frame and reads other bytes "
        "than a flat reading"
    )
    assert t.check("STOP", None, 15, 16) == (
        "the frame that began at byte 11 declares 10 bytes but the pickle stops at byte 16, inside it"
    )
    for arg, shown in ((-1, "-1"), ("5", "'5'"), (None, "None")):
        assert (
            FrameTracker().check("FRAME", arg, 0, 9) == f"FRAME at byte 0 declares an invalid length {shown}"
        )


def test_c_file_view_frames_reuse_the_buffer_or_read_exactly_the_frame() -> None:
    f = io.BytesIO(b"abcdefgh")
    v = CFileView(f)
    v.frame(4)
    assert (v.tell(), f.tell()) == (0, 4) and v.read(1) == b"a"
    v.frame(3)  # the buffer still holds exactly 3 bytes: nothing is read
    assert (v.tell(), f.tell()) == (1, 4) and v.read(3) == b"bcd"
    v.frame(4)  # exactly what is left
    assert (v.tell(), f.tell()) == (4, 8) and v.read(4) == b"efgh"
    g = io.BytesIO(b"abcdef")
    w = CFileView(g)
    w.frame(2)
    w.read(1)
    with pytest.raises(ValueError, match=r"^pickle data was truncated \(a FRAME longer than the data\)$"):
        w.frame(5)
    g.seek(0)


def test_dictv_and_setv_are_what_the_opcodes_build() -> None:
    stream, _ = scan(p4(EMPTY_DICT + u("a") + const(1) + SETITEM))
    assert isinstance(stream.value, DictV) and stream.value.pairs == [("a", 1)]
    stream, _ = scan(p4(EMPTY_SET + MARK + const(1) + ADDITEMS))
    assert isinstance(stream.value, SetV) and stream.value.items == [1] and not stream.value.frozen
