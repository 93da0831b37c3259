"""Static analysis of pickle streams, one opcode at a time (``pickletools.genops``, never ``load``).

The analyser runs the pickle virtual machine on *abstract* values: constants stay concrete
(strings, numbers, tuples, lists, dicts), imported globals become :class:`Global`, and the
result of any call becomes an :class:`Instance` that remembers what was called. It keeps the
stack, the mark stack and the memo exactly as ``pickle`` does (``PUT``/``BINPUT``/``MEMOIZE``,
``GET``/``BINGET``), so that memo tricks cannot hide what ``STACK_GLOBAL`` imports.

A stream is safe when every global it imports is on the allowlist, every call (``REDUCE``,
``NEWOBJ``, ``NEWOBJ_EX``, ``OBJ``, ``INST``) goes to an allowlisted callable, ``BUILD`` only
sets the state of objects those callables made, container opcodes only touch real containers
or allowlisted instances, no extension code is used and every persistent id is a PyTorch
storage reference. Bytes that hold another pickle are analysed too. Anything the analyser
cannot follow raises :class:`Malformed`, so the caller reports the file as unscannable.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from dlsec.scan._allowlist import STORAGE_ELEMENT_SIZES, Allowlist, resolve_name
from dlsec.scan._findings import Finding, Malformed, Severity
from dlsec.scan._opcodes import CFileView, FrameTracker, genops

__all__ = [
    "Global",
    "Instance",
    "Persistent",
    "PickleStream",
    "ScanContext",
    "StreamTrace",
    "analyse_stream",
    "at_eof",
    "iter_streams",
    "looks_like_pickle_start",
]

MAX_FINDINGS = 200
MAX_DEPTH = 4
_NESTED_MIN = 8

# Modules whose import is enough to run or reach arbitrary code: used only to grade severity;
# the verdict comes from the allowlist, never from this list.
_CODE_EXEC_ROOTS = frozenset(
    [
        "os",
        "posix",
        "nt",
        "subprocess",
        "pty",
        "runpy",
        "importlib",
        "pickle",
        "_pickle",
        "cPickle",
        "marshal",
        "ctypes",
        "code",
        "codeop",
        "socket",
        "shutil",
        "sys",
        "pip",
        "ensurepip",
        "venv",
        "webbrowser",
        "multiprocessing",
        "asyncio",
        "pydoc",
        "timeit",
        "cProfile",
        "profile",
        "trace",
        "pdb",
        "bdb",
        "doctest",
        "idlelib",
        "lib2to3",
        "operator",
        "_operator",
        "functools",
        "types",
        "builtins",
        "__builtin__",
        "commands",
        "popen2",
        "platform",
        "pkgutil",
        "uuid",
        "imaplib",
        "logging",
        "distutils",
        "setuptools",
        "_posixsubprocess",
        "_interpreters",
        "_xxsubinterpreters",
        "_pyrepl",
        "_osx_support",
        "_aix_support",
        "urllib",
        "http",
        "requests",
        "aiohttp",
        "ftplib",
        "smtplib",
        "telnetlib",
        "ssl",
        "numpy.f2py",
        "torch.utils.collect_env",
        "torch.utils.bottleneck",
        "torch._dynamo",
        "torch.fx",
        "torch.jit",
        "torch._inductor",
        "torch.utils._config_module",
        "torch.utils.data",
    ]
)


def _is_code_exec(module: str) -> bool:
    parts = module.split(".")
    return any(".".join(parts[:i]) in _CODE_EXEC_ROOTS for i in range(1, len(parts) + 1))


@dataclass(frozen=True)
class Global:
    """A global imported by ``GLOBAL``/``STACK_GLOBAL``/``INST`` (after Python 2 name fixes)."""

    module: str
    name: str
    offset: int

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False)
class Instance:
    """The result of calling ``func`` inside the pickle (``REDUCE``, ``NEWOBJ``, ``OBJ``...)."""

    func: Any
    args: Any
    offset: int
    allowed: bool  # the callee is an allowlisted global
    state: Any = None  # what BUILD set, if anything


@dataclass(eq=False)
class Persistent:
    """What the loader's ``persistent_load`` returns for ``pid``."""

    pid: Any
    offset: int


@dataclass(eq=False)
class Opaque:
    """A value the analyser cannot know (extension codes, dynamic imports)."""

    why: str
    offset: int


@dataclass(eq=False)
class DictV:
    pairs: list[tuple[Any, Any]] = field(default_factory=list)

    def get(self, key: str) -> Any:
        for k, v in self.pairs:
            if k == key:
                return v
        return None

    def has(self, key: str) -> bool:
        return any(k == key for k, _ in self.pairs)


@dataclass(eq=False)
class SetV:
    items: list[Any] = field(default_factory=list)
    frozen: bool = False


class _Mark:
    pass


@dataclass
class ScanContext:
    """What one file's scan shares across its pickles and members."""

    allowlist: Allowlist
    findings: list[Finding] = field(default_factory=list)
    extras_used: set[str] = field(default_factory=set)
    dropped: int = 0
    depth: int = 0
    plain_pass_needed: bool = False
    # Tests set this to a list to receive a StreamTrace per analysed stream (the differential
    # test against CPython's own unpickler); None in normal scans, which then pay nothing.
    trace: list[StreamTrace] | None = None
    # Persistent ids a pre-0.4 torch tar's main pickle may use: keys of the storages and
    # tensors its other members define (None elsewhere).
    tar_keys: frozenset[Any] | None = None

    def add(self, finding: Finding) -> None:
        if len(self.findings) >= MAX_FINDINGS:
            self.dropped += 1
            return
        self.findings.append(finding)


@dataclass
class StreamTrace:
    """What one analysed stream imported, for comparison with CPython's reading of ``data``.

    ``data`` holds the bytes from the stream's first byte to the end of what was readable;
    ``imports`` the raw ``(module, name)`` pairs of every GLOBAL/STACK_GLOBAL/INST, in order;
    ``view`` is ``flat``, ``c-file`` (the C unpickler's reading of a file object) or ``plain``.
    """

    member: str | None
    data: bytes
    view: str
    imports: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class PickleStream:
    """What one analysed pickle stream was: its protocol, extent, result and storage ids."""

    proto: int
    start: int
    end: int
    value: Any
    storage_ids: list[tuple[Any, ...]]
    opcodes: int


def looks_like_pickle_start(head: bytes) -> bool:
    """Whether ``head`` starts like a binary pickle (a ``PROTO`` opcode with protocol 0-5)."""
    return len(head) >= 2 and head[0] == 0x80 and head[1] <= 5


def _describe(value: Any) -> str:
    if isinstance(value, Global):
        return value.qualname
    if isinstance(value, Instance):
        return f"the result of calling {_describe(value.func)}"
    if isinstance(value, Persistent):
        return "a persistent object"
    if isinstance(value, Opaque):
        return f"an unknown value ({value.why})"
    return f"a {type(value).__name__} constant"


class _Analyser:
    def __init__(
        self,
        f: IO[bytes],
        ctx: ScanContext,
        *,
        member: str | None,
        torchscript: bool,
        size: int | None,
        plain: bool,
        c_view: bool = False,
    ) -> None:
        self.f = f
        self.c_view = c_view  # read as CPython's C unpickler reads a file object (see _opcodes)
        self.frames = FrameTracker()
        self.frame_violation = False
        self.imports: list[tuple[str, str]] | None = None
        self.ctx = ctx
        self.member = member
        self.allow: Allowlist = ctx.allowlist
        self.torchscript = torchscript
        self.plain = plain  # read as plain pickle.load would: no joblib array records
        self.size = size
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.proto = 0
        self.storage_ids: list[tuple[Any, ...]] = []
        self.opcodes = 0

    # -- reporting -------------------------------------------------------------------------

    def finding(
        self, severity: Severity, code: str, reason: str, offset: int, name: str | None = None
    ) -> None:
        if self.c_view:
            reason = f"read as CPython's C unpickler reads a file object (torch.load), {reason}"
        if self.plain:
            # Bytes joblib calls array data, read as opcodes: only an import that can resolve can run.
            if name is None or not all(part.isidentifier() for part in name.split(".")):
                return
            reason = f"read with plain pickle.load (not joblib), the array bytes become opcodes: {reason}"
        self.ctx.add(Finding(severity, code, reason, import_name=name, offset=offset, member=self.member))

    def malformed(self, reason: str, offset: int | None) -> Malformed:
        return Malformed(reason, offset=offset, member=self.member)

    # -- stack helpers ---------------------------------------------------------------------

    def pop(self, pos: int) -> Any:
        if not self.stack:
            raise self.malformed("pickle stack underflow", pos)
        return self.stack.pop()

    def top(self, pos: int) -> Any:
        if not self.stack:
            raise self.malformed("pickle stack underflow", pos)
        return self.stack[-1]

    def pop_mark(self, pos: int) -> list[Any]:
        if not self.metastack:
            raise self.malformed("pickle MARK missing", pos)
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    # -- policy ----------------------------------------------------------------------------

    def import_global(self, module: Any, name: Any, pos: int) -> Any:
        if self.imports is not None and isinstance(module, str) and isinstance(name, str):
            self.imports.append((module, name))
        if not isinstance(module, str) or not isinstance(name, str):
            self.finding(
                "critical",
                "dynamic-import",
                f"STACK_GLOBAL imports a name computed inside the pickle "
                f"({_describe(module)} / {_describe(name)}), not constant strings",
                pos,
            )
            return Opaque("dynamic import", pos)
        module, name = resolve_name(self.proto, module, name)
        g = Global(module, name, pos)
        if self.torchscript and (module == "__torch__" or module.startswith("__torch__.")):
            return g  # a TorchScript class, resolved in the archive's compilation unit
        if self.torchscript and module == "torch.jit._pickle":
            return g
        if self.allow.may_import(module, name):
            if self.allow.is_extra(module, name):
                self.ctx.extras_used.add(g.qualname)
            return g
        dangerous = _is_code_exec(module)
        self.finding(
            "high" if dangerous else "medium",
            "unsafe-global",
            f"imports {g.qualname}, which is not on the allowlist"
            + (" and can run code" if dangerous else "")
            + " (importing runs the module's code)",
            pos,
            g.qualname,
        )
        return g

    def callee_allowed(self, func: Any, pos: int, how: str) -> bool:
        if isinstance(func, Global):
            if self.torchscript and (
                func.module.startswith("__torch__") or func.module == "torch.jit._pickle"
            ):
                return True
            if self.allow.may_call(func.module, func.name):
                return True
            if self.allow.may_import(func.module, func.name):
                self.finding(
                    "medium",
                    "calls-value",
                    f"{how} calls {func.qualname}, which is allowlisted as a value, not as a callable",
                    pos,
                    func.qualname,
                )
                return False
            dangerous = _is_code_exec(func.module)
            self.finding(
                "critical" if dangerous else "high",
                "unsafe-call",
                f"{how} calls {func.qualname}, which is not on the allowlist"
                + (" and runs or reaches arbitrary code" if dangerous else ""),
                pos,
                func.qualname,
            )
            return False
        self.finding(
            "critical",
            "call-on-result",
            f"{how} calls {_describe(func)}; only allowlisted globals may be called "
            "(attribute chains and gadgets are built this way)",
            pos,
            func.qualname if isinstance(func, Global) else None,
        )
        return False

    def call(self, func: Any, args: Any, pos: int, how: str) -> Instance:
        allowed = self.callee_allowed(func, pos, how)
        if (
            allowed
            and isinstance(func, Global)
            and (func.module, func.name) == ("torch._tensor", "_rebuild_from_type_v2")
        ):
            # _rebuild_from_type_v2(func, new_type, args, state) calls its first argument.
            inner = args[0] if isinstance(args, tuple) and args else None
            if not (isinstance(inner, Global) and self.allow.may_call(inner.module, inner.name)):
                self.finding(
                    "critical",
                    "unsafe-call",
                    f"torch._tensor._rebuild_from_type_v2 would call {_describe(inner)}, "
                    "which is not an allowlisted callable",
                    pos,
                    inner.qualname if isinstance(inner, Global) else None,
                )
                allowed = False
        if (
            allowed
            and isinstance(func, Global)
            and func.module == "torch._utils"
            and func.name in _VIEW_REBUILDS
        ):
            self.check_tensor_view(func.name, args, pos)
        return Instance(func, args, pos, allowed)

    def check_tensor_view(self, rebuild: str, args: Any, pos: int) -> None:
        """The view a tensor rebuild describes must lie inside its storage (CVE-class: OOB views).

        ``storage_offset + sum((size_i - 1) * stride_i) < numel(storage)`` for non-empty views,
        with non-negative integers throughout; ``_rebuild_tensor_v3`` counts its untyped
        storage in bytes and its dtype sets the element size.
        """
        where = f"torch._utils.{rebuild}"
        if not (isinstance(args, tuple) and len(args) >= 4):
            self.finding("high", "tensor-unverifiable", f"{where} with arguments dlsec cannot read", pos)
            return
        storage, offset, size, stride = args[:4]
        numel = _storage_numel(storage)
        if rebuild == "_rebuild_tensor_v3" and numel is not None:
            dtype = args[6] if len(args) > 6 else None
            itemsize = _DTYPE_SIZES.get(dtype.name) if isinstance(dtype, Global) else None
            numel = numel // itemsize if itemsize else None
        ints = [offset, *size] if isinstance(size, tuple) else []
        ints += list(stride) if isinstance(stride, tuple) else []
        if (
            numel is None
            or not isinstance(size, tuple)
            or not isinstance(stride, tuple)
            or len(size) != len(stride)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints)
        ):
            self.finding(
                "high",
                "tensor-unverifiable",
                f"{where}: the storage, offset, size or stride is not a plain non-negative value "
                f"(offset {_short(offset)}, size {_short(size)}, stride {_short(stride)}), so the "
                "view cannot be checked against its storage",
                pos,
            )
            return
        if 0 in size:
            end = offset
        else:
            end = offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True)) + 1
        if end > numel:
            self.finding(
                "high",
                "tensor-out-of-bounds",
                f"{where}: a view at offset {offset} with size {list(size)} and stride {list(stride)} "
                f"reaches element {end - 1} of a storage of {numel} elements (reads or writes outside "
                "the tensor's memory when used)",
                pos,
            )

    def container_method(self, target: Any, method: str, pos: int) -> None:
        """``APPEND``/``SETITEM``/``ADDITEMS`` on something that is not a container built here."""
        if (
            isinstance(target, Instance)
            and target.allowed
            and isinstance(target.func, Global)
            and target.func.qualname in _CONTAINER_TYPES.get(method, ())
        ):
            return  # the container type's own method (OrderedDict.__setitem__, set.add)
        if self.torchscript and isinstance(target, Instance) and target.allowed:
            return  # TorchScript objects: their methods belong to the archive's compiled code
        self.finding(
            "critical" if isinstance(target, Global) else "high",
            "method-call",
            f"calls .{method}() on {_describe(target)}, not on a list, dict or set built by the pickle",
            pos,
            target.qualname if isinstance(target, Global) else None,
        )

    def build(self, inst: Any, state: Any, pos: int) -> None:
        if isinstance(inst, Instance) and inst.allowed:
            inst.state = state
            return
        if isinstance(inst, Global):
            self.finding(
                "critical",
                "build-on-global",
                f"BUILD sets attributes of the imported object {inst.qualname} (monkey-patching "
                "code that runs later)",
                pos,
                inst.qualname,
            )
            return
        self.finding(
            "high",
            "build-on-non-instance",
            f"BUILD applies state to {_describe(inst)}, not to an object an allowlisted constructor made",
            pos,
        )

    def persistent(self, pid: Any, pos: int) -> Persistent:
        keys = self.ctx.tar_keys
        if keys is not None and _legacy_key(pid) in keys:
            return Persistent(pid, pos)  # a storage or tensor the tar's other members defined
        ok = (
            isinstance(pid, tuple)
            and len(pid) in (5, 6)
            and pid[0] == "storage"
            and isinstance(pid[1], Global)
            and pid[1].module in ("torch", "torch.cuda", "torch.storage")
            and pid[1].name in STORAGE_ELEMENT_SIZES
            and isinstance(pid[2], str)
            and isinstance(pid[3], str)
            and isinstance(pid[4], int)
            and not isinstance(pid[4], bool)
            and pid[4] >= 0
            and (len(pid) == 5 or pid[5] is None or isinstance(pid[5], tuple))
        )
        if ok:
            self.storage_ids.append(pid)
        else:
            self.finding(
                "medium",
                "unknown-persistent-id",
                f"persistent id {_short(pid)} is not a PyTorch storage reference; the loader's "
                "persistent_load decides what it becomes",
                pos,
            )
        return Persistent(pid, pos)

    def maybe_nested(self, data: bytes, pos: int) -> None:
        """Analyse bytes constants that hold a pickle of their own (loaded by a gadget)."""
        if len(data) < _NESTED_MIN or not looks_like_pickle_start(data[:2]):
            return
        if self.ctx.depth >= MAX_DEPTH:
            self.finding("medium", "nested-too-deep", "pickles nested deeper than dlsec follows", pos)
            return
        nested = ScanContext(self.ctx.allowlist, depth=self.ctx.depth + 1, trace=self.ctx.trace)
        nested.tar_keys = None
        where = f"{self.member or 'pickle'} > bytes at {pos}"
        try:
            analyse_stream(io.BytesIO(data), nested, member=where, size=len(data))
        except Malformed:
            return  # not a pickle after all: plain bytes
        for finding in nested.findings:
            self.ctx.add(finding)
        self.ctx.extras_used |= nested.extras_used

    # -- joblib arrays ---------------------------------------------------------------------

    def joblib_array(self, inst: Instance, state: Any, pos: int) -> None:
        """Skip (or analyse) the raw array bytes joblib writes right after a wrapper's BUILD."""
        from dlsec.scan._arrays import joblib_array_nbytes

        if not isinstance(state, DictV):
            raise self.malformed("joblib array wrapper without a state dict", pos)
        spec = joblib_array_nbytes(state, self.malformed, pos)
        here = self.f.tell()
        if self.frames.inside(here):
            # joblib reads array bytes from the file itself; inside a frame the unpickler's
            # buffer still holds the frame's remaining opcodes, which then run after the array.
            self.frame_violation = True
            self.finding(
                "critical",
                "frame-divergence",
                f"joblib array data at byte {here} starts inside a pickle frame that ends at byte "
                f"{self.frames.frame_end}; loaders disagree on which bytes are opcodes",
                pos,
            )
        if spec.has_object:
            nested = analyse_stream(self.f, self.ctx, member=self.member, size=self.size, torchscript=False)
            del nested
        else:
            if spec.aligned:
                # joblib pads with fewer than 16 bytes: a length byte that is never an opcode, so
                # plain pickle.load stops there. Anything else could be opcodes in disguise.
                pad = self.f.read(1)
                if len(pad) != 1:
                    raise self.malformed("joblib array data truncated", pos)
                if pad[0] >= 16:
                    raise self.malformed(f"non-canonical joblib array padding ({pad[0]} bytes)", pos)
                _skip(self.f, pad[0], self.malformed, pos)
            else:
                # The array bytes follow the BUILD directly: plain pickle.load would read them as
                # opcodes, so the stream is read a second time that way (see _Scan.plain_pass).
                self.ctx.plain_pass_needed = True
            _skip(self.f, spec.nbytes, self.malformed, pos)
        self.stack[-1] = Instance(inst.func, inst.args, pos, True)

    # -- the VM ----------------------------------------------------------------------------

    def run(self) -> PickleStream:
        start = self.f.tell()
        first = True
        pos = start
        reader = CFileView(self.f) if self.c_view else self.f
        try:
            for op, arg, pos, end in genops(reader):
                self.opcodes += 1
                name = op.name
                if not self.c_view and (self.frames.frame_end is not None or name == "FRAME"):
                    why = self.frames.check(name, arg, pos, end)
                    if why is not None:
                        self.frame_violation = True
                        self.finding("critical", "frame-divergence", why, pos)
                if name == "PROTO":
                    if not first:
                        raise self.malformed("PROTO opcode in the middle of a pickle", pos)
                    if not isinstance(arg, int) or arg > 5:
                        raise self.malformed(f"unsupported pickle protocol {arg}", pos)
                    self.proto = arg
                first = False
                if name == "STOP":
                    value = self.pop(pos)
                    return PickleStream(self.proto, start, end, value, self.storage_ids, self.opcodes)
                self.step(name, arg, pos)
        except Malformed:
            raise
        except (ValueError, EOFError, UnicodeDecodeError, OverflowError, MemoryError) as exc:
            raise self.malformed(f"not a valid pickle ({_short(str(exc), 120)})", pos) from None
        raise self.malformed("pickle ended without STOP", pos)  # pragma: no cover - genops raises

    def step(self, name: str, arg: Any, pos: int) -> None:  # noqa: C901 - one branch per opcode
        st = self.stack
        if name in ("PROTO", "FRAME"):
            return
        if name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"):
            st.append(arg)
        elif name in (
            "STRING",
            "BINSTRING",
            "SHORT_BINSTRING",
            "UNICODE",
            "SHORT_BINUNICODE",
            "BINUNICODE",
            "BINUNICODE8",
        ):
            st.append(arg)
            if isinstance(arg, str) and arg[:1] == "\x80":
                with contextlib.suppress(UnicodeEncodeError):
                    self.maybe_nested(arg.encode("latin-1"), pos)
        elif name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
            data = bytes(arg)
            st.append(data if name != "BYTEARRAY8" else bytearray(data))
            self.maybe_nested(data, pos)
        elif name == "NONE":
            st.append(None)
        elif name == "NEWTRUE":
            st.append(True)
        elif name == "NEWFALSE":
            st.append(False)
        elif name in ("NEXT_BUFFER", "READONLY_BUFFER"):
            raise self.malformed("out-of-band pickle buffers (protocol 5) are not supported", pos)
        elif name == "EMPTY_LIST":
            st.append([])
        elif name == "EMPTY_TUPLE":
            st.append(())
        elif name == "EMPTY_DICT":
            st.append(DictV())
        elif name == "EMPTY_SET":
            st.append(SetV())
        elif name == "MARK":
            self.metastack.append(self.stack)
            self.stack = []
        elif name == "LIST":
            items = self.pop_mark(pos)
            self.stack.append(list(items))
        elif name == "TUPLE":
            items = self.pop_mark(pos)
            self.stack.append(tuple(items))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            if len(st) < n:
                raise self.malformed("pickle stack underflow", pos)
            top = tuple(st[-n:])
            del st[-n:]
            st.append(top)
        elif name == "DICT":
            items = self.pop_mark(pos)
            if len(items) % 2:
                raise self.malformed("DICT with an odd number of items", pos)
            self.stack.append(DictV(list(zip(items[::2], items[1::2], strict=True))))
        elif name == "FROZENSET":
            items = self.pop_mark(pos)
            self.stack.append(SetV(list(items), frozen=True))
        elif name == "APPEND":
            value = self.pop(pos)
            target = self.top(pos)
            if isinstance(target, list):
                target.append(value)
            else:
                self.container_method(target, "append", pos)
        elif name == "APPENDS":
            items = self.pop_mark(pos)
            target = self.top(pos)
            if isinstance(target, list):
                target.extend(items)
            else:
                self.container_method(target, "extend", pos)
        elif name == "SETITEM":
            value = self.pop(pos)
            key = self.pop(pos)
            target = self.top(pos)
            if isinstance(target, DictV):
                target.pairs.append((key, value))
            else:
                self.container_method(target, "__setitem__", pos)
        elif name == "SETITEMS":
            items = self.pop_mark(pos)
            if len(items) % 2:
                raise self.malformed("SETITEMS with an odd number of items", pos)
            target = self.top(pos)
            if isinstance(target, DictV):
                target.pairs.extend(zip(items[::2], items[1::2], strict=True))
            else:
                self.container_method(target, "__setitem__", pos)
        elif name == "ADDITEMS":
            items = self.pop_mark(pos)
            target = self.top(pos)
            if isinstance(target, SetV) and not target.frozen:
                target.items.extend(items)
            else:
                self.container_method(target, "add", pos)
        elif name == "POP":
            if self.stack:
                self.stack.pop()
            else:
                self.pop_mark(pos)
        elif name == "POP_MARK":
            self.pop_mark(pos)
        elif name == "DUP":
            st.append(self.top(pos))
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise self.malformed(f"memo key {arg} read before it was written", pos)
            st.append(self.memo[arg])
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if not isinstance(arg, int) or arg < 0:
                raise self.malformed("negative memo key", pos)
            self.memo[arg] = self.top(pos)
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.top(pos)
        elif name in ("EXT1", "EXT2", "EXT4"):
            self.finding(
                "high",
                "extension-code",
                f"extension code {arg} names a global through the loading process's copyreg "
                "registry, which dlsec cannot see",
                pos,
            )
            st.append(Opaque(f"extension code {arg}", pos))
        elif name == "GLOBAL":
            module, _, gname = str(arg).partition(" ")
            st.append(self.import_global(module, gname, pos))
        elif name == "STACK_GLOBAL":
            gname = self.pop(pos)
            module = self.pop(pos)
            st = self.stack
            st.append(self.import_global(module, gname, pos))
        elif name == "INST":
            module, _, gname = str(arg).partition(" ")
            args = tuple(self.pop_mark(pos))
            cls = self.import_global(module, gname, pos)
            self.stack.append(self.call(cls, args, pos, "INST"))
        elif name == "OBJ":
            items = self.pop_mark(pos)
            if not items:
                raise self.malformed("OBJ without a class", pos)
            self.stack.append(self.call(items[0], tuple(items[1:]), pos, "OBJ"))
        elif name == "REDUCE":
            args = self.pop(pos)
            func = self.pop(pos)
            st.append(self.call(func, args, pos, "REDUCE"))
        elif name == "NEWOBJ":
            args = self.pop(pos)
            cls = self.pop(pos)
            st.append(self.call(cls, args, pos, "NEWOBJ"))
        elif name == "NEWOBJ_EX":
            kwargs = self.pop(pos)
            args = self.pop(pos)
            cls = self.pop(pos)
            st.append(self.call(cls, (args, kwargs), pos, "NEWOBJ_EX"))
        elif name == "BUILD":
            state = self.pop(pos)
            inst = self.top(pos)
            self.build(inst, state, pos)
            if (
                not self.plain
                and not self.c_view
                and isinstance(inst, Instance)
                and inst.allowed
                and isinstance(inst.func, Global)
                and inst.func.qualname == "joblib.numpy_pickle.NumpyArrayWrapper"
            ):
                self.joblib_array(inst, state, pos)
        elif name == "PERSID":
            st.append(self.persistent(arg, pos))
        elif name == "BINPERSID":
            pid = self.pop(pos)
            self.stack.append(self.persistent(pid, pos))
        else:  # pragma: no cover - every opcode pickletools knows is handled above
            raise self.malformed(f"unsupported opcode {name}", pos)


_VIEW_REBUILDS = frozenset(
    {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_qtensor"}
)
# Container methods that APPEND/APPENDS, SETITEM/SETITEMS and ADDITEMS may call on an object the
# pickle built by calling an allowlisted class (dicts, lists and sets built by opcodes are
# always fine).
_CONTAINER_TYPES: dict[str, frozenset[str]] = {
    "__setitem__": frozenset({"collections.OrderedDict", "collections.Counter"}),
    "add": frozenset({"builtins.set"}),
    "append": frozenset(),
    "extend": frozenset(),
}
_DTYPE_SIZES: dict[str, int] = {
    **dict.fromkeys(["float64", "double", "int64", "long", "complex64", "cfloat"], 8),
    **dict.fromkeys(["float32", "float", "int32", "int", "uint32", "complex32", "qint32"], 4),
    **dict.fromkeys(["float16", "half", "bfloat16", "int16", "short", "uint16", "bits16"], 2),
    **dict.fromkeys(
        [
            "int8",
            "uint8",
            "bool",
            "qint8",
            "quint8",
            "quint4x2",
            "quint2x4",
            "float8_e4m3fn",
            "float8_e5m2",
            "float8_e4m3fnuz",
            "float8_e5m2fnuz",
            "float8_e8m0fnu",
            "bits8",
            "bits1x8",
            "bits2x4",
            "bits4x2",
        ],
        1,
    ),
    **dict.fromkeys(["complex128", "cdouble"], 16),
    "uint64": 8,
}


def _legacy_key(pid: Any) -> int | None:
    """The key torch's pre-0.4 tar loader looks ``pid`` up as (``int(pid)``), if it is one."""
    if isinstance(pid, bool):
        return None
    if isinstance(pid, int):
        return pid
    if isinstance(pid, str) and pid.isascii() and pid.strip().lstrip("+-").isdigit():
        try:
            return int(pid)
        except ValueError:  # "+-3": more than one sign; not a key, so the id is judged on its own
            return None
    return None


def _storage_numel(storage: Any) -> int | None:
    """Elements in the storage a persistent id names (a legacy view's own size when it is one)."""
    if not isinstance(storage, Persistent) or not isinstance(storage.pid, tuple) or len(storage.pid) < 5:
        return None
    pid = storage.pid
    view = pid[5] if len(pid) > 5 else None
    if isinstance(view, tuple) and len(view) == 3 and isinstance(view[2], int):
        return view[2]
    return pid[4] if isinstance(pid[4], int) and not isinstance(pid[4], bool) else None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _skip(f: IO[bytes], n: int, malformed: Any, pos: int) -> None:
    remaining = n
    while remaining > 0:
        chunk = f.read(min(remaining, 1 << 20))
        if not chunk:
            raise malformed("array data truncated", pos)
        remaining -= len(chunk)


def analyse_stream(
    f: IO[bytes],
    ctx: ScanContext,
    *,
    member: str | None = None,
    size: int | None = None,
    torchscript: bool = False,
    plain: bool = False,
) -> PickleStream:
    """Analyse one pickle stream from ``f``'s position up to and including its ``STOP``.

    Findings go to ``ctx``; ``f`` is left just after the ``STOP`` opcode. ``plain`` reads the
    stream as ``pickle.load`` would even where joblib would read raw array bytes. Where frames
    and opcodes do not nest (so that loaders read different opcodes from the same bytes), the
    stream is flagged ``frame-divergence`` and read a second time as CPython's C unpickler
    reads a file object, so that what that reading imports is reported too.

    Raises:
        Malformed: the stream is truncated, malformed or uses what the analyser cannot follow.
    """
    start = f.tell()
    trace = _start_trace(f, ctx, member, "plain" if plain else "flat")
    analyser = _Analyser(f, ctx, member=member, torchscript=torchscript, size=size, plain=plain)
    analyser.imports = trace.imports if trace is not None else None
    try:
        return analyser.run()
    finally:
        if analyser.frame_violation and f.seekable():
            _c_view_pass(f, ctx, start, member=member, torchscript=torchscript, size=size)


def _start_trace(f: IO[bytes], ctx: ScanContext, member: str | None, view: str) -> StreamTrace | None:
    if ctx.trace is None or not f.seekable():
        return None
    start = f.tell()
    trace = StreamTrace(member, f.read(), view)
    f.seek(start)
    ctx.trace.append(trace)
    return trace


def _c_view_pass(
    f: IO[bytes], ctx: ScanContext, start: int, *, member: str | None, torchscript: bool, size: int | None
) -> None:
    """Read the stream at ``start`` again as the C unpickler reads a file; keep ``f``'s position."""
    resume = f.tell()
    try:
        f.seek(start)
        trace = _start_trace(f, ctx, member, "c-file")
        analyser = _Analyser(
            f, ctx, member=member, torchscript=torchscript, size=size, plain=False, c_view=True
        )
        analyser.imports = trace.imports if trace is not None else None
        with contextlib.suppress(Malformed):
            analyser.run()
    finally:
        f.seek(resume)


def iter_streams(
    f: IO[bytes], ctx: ScanContext, *, member: str | None, size: int | None
) -> Iterator[PickleStream]:
    """Analyse consecutive pickle streams until the end of ``f`` (legacy torch files have five)."""
    while not at_eof(f):
        yield analyse_stream(f, ctx, member=member, size=size)


def at_eof(f: IO[bytes]) -> bool:
    """Whether ``f`` has no more bytes, without consuming any."""
    peek = getattr(f, "peek", None)
    if peek is not None:
        return not peek(1)
    pos = f.tell()
    more = f.read(1)
    f.seek(pos)
    return not more
