"""GGUF (llama.cpp) files: metadata read with the ``gguf`` package, chat templates checked.

A GGUF file holds no code, but its ``tokenizer.chat_template`` is a Jinja2 template that
runtimes render on every request; rendered outside a sandbox (CVE-2024-34359 in
llama-cpp-python) a template that walks ``__class__`` / ``__globals__`` runs code. The scanner
parses each template with Jinja2's sandboxed environment (never renders it) and flags access to
underscore attributes, the ``attr`` filter with a computed name, and templates that do not parse.
Tensor data must lie inside the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from dlsec.scan._findings import Finding, Malformed

__all__ = ["GGUF_MAGIC", "check_template", "scan_gguf"]

GGUF_MAGIC = b"GGUF"
_MAX_TEMPLATE = 1 << 20


def scan_gguf(f: IO[bytes] | str, size: int, *, member: str | None) -> list[Finding]:
    """Findings in the GGUF file ``f`` (an open file with a descriptor, or a path).

    Raises:
        Malformed: the header, metadata or tensor table cannot be read, or tensor data lies
            outside the file.
    """
    try:
        from gguf import GGUFReader, GGUFValueType
    except ImportError:  # pragma: no cover - a declared dependency
        raise Malformed("GGUF files need the `gguf` package to be scanned", member=member) from None
    try:
        reader = GGUFReader(f)  # type: ignore[arg-type]  # np.memmap takes an open file as well
    except (ValueError, IndexError, KeyError, OverflowError, TypeError, OSError, MemoryError) as exc:
        raise Malformed(f"not a readable GGUF file ({str(exc)[:160]})", member=member) from None
    findings: list[Finding] = []
    for name, field in reader.fields.items():
        if "chat_template" not in name:
            continue
        if field.types[:1] != [GGUFValueType.STRING]:
            raise Malformed(f"GGUF metadata {name} is not a string", member=member)
        text = field.contents()
        if not isinstance(text, str):
            raise Malformed(f"GGUF metadata {name} is not a string", member=member)
        findings += [
            Finding("high", "template-injection", f"{name}: {reason}", member=member)
            for reason in check_template(text)
        ]
    last = int(reader.data_offset) if reader.tensors else 0
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if int(tensor.data_offset) < 0 or end > size:
            raise Malformed(
                f"GGUF tensor {tensor.name!r} ends at byte {end}, past the end of the file ({size})",
                member=member,
            )
        last = max(last, end)
    tail = reader.data[last:] if reader.tensors else reader.data[:0]
    if len(tail) >= int(reader.alignment) or tail.any():
        raise Malformed(f"{len(tail)} trailing bytes after the last GGUF tensor", member=member, offset=last)
    return findings


def check_template(text: str) -> list[str]:
    """Why a Jinja2 chat template could escape a sandbox when rendered (empty when it is plain).

    Example:
        >>> check_template("{{ messages[0]['content'] }}")
        []
        >>> check_template("{{ cycler.__init__.__globals__.os.popen('id').read() }}")[0]
        'reads the underscore attribute __globals__ (the way templates reach Python internals)'
    """
    from jinja2 import TemplateSyntaxError, nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if len(text) > _MAX_TEMPLATE:
        return [f"a template of {len(text)} characters, longer than dlsec reads ({_MAX_TEMPLATE})"]
    try:
        tree = ImmutableSandboxedEnvironment().parse(text)
    except TemplateSyntaxError as exc:
        return [f"does not parse as a Jinja2 template ({exc.message}, line {exc.lineno})"]
    reasons: list[str] = []
    for node in _walk(tree):
        name: Any = None
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        elif isinstance(node, nodes.Filter) and node.name == "attr":
            arg = node.args[0] if node.args else None
            if not isinstance(arg, nodes.Const):
                reasons.append("calls the attr filter with a computed attribute name")
                continue
            name = arg.value
        if isinstance(name, str) and name.startswith("_"):
            reasons.append(
                f"reads the underscore attribute {name} (the way templates reach Python internals)"
            )
    return list(dict.fromkeys(reasons))


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)
