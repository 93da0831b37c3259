"""XML models: PMML and OpenVINO IR, parsed with expat and no entity ever resolved.

The parser refuses what defusedxml refuses: a document type with entity declarations stops the
parse and is itself the finding (an external entity reads a file or URL chosen by the author,
XXE; internal ones nest into the billion-laughs expansion). An external DTD is a finding too.
Nothing is fetched, expanded or executed.

- PMML: elements named like code (``script``, ``python``...), ``Extension`` content that holds
  code (imports, ``eval``/``exec``, shell calls), and attributes that point at files or
  ``file:`` URLs.
- OpenVINO IR (``<net>``): layers from an op set that is not a built-in ``opsetN`` need an
  extension library, native code dlsec cannot see (``unvetted``); ``python``/``custom`` layer
  types and attributes naming a shared library are findings; ``Const`` layers must lie inside
  the weights file when it is there (``model.bin`` beside ``model.xml``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from dlsec.scan._findings import Finding, Malformed

__all__ = ["XmlElement", "openvino_max_weight", "parse_xml", "scan_openvino", "scan_pmml", "xml_root"]

_MAX_ELEMENTS = 2_000_000


@dataclass
class XmlElement:
    tag: str  # local name, namespace dropped
    attrs: dict[str, str]
    text: list[str] = field(default_factory=list)
    children: list[XmlElement] = field(default_factory=list)


class _Stop(Exception):
    pass


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1].rsplit(" ", 1)[-1].rsplit(":", 1)[-1]


def xml_root(head: bytes) -> str | None:
    """The local name of the root element of XML starting with ``head``, or ``None``."""
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not stripped.startswith(b"<"):
        return None
    found: list[str] = []
    parser = expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def start(name: str, _attrs: dict[str, str]) -> None:
        found.append(_local(name))
        raise _Stop

    parser.StartElementHandler = start
    try:
        parser.Parse(head, False)
    except _Stop:
        return found[0]
    except expat.ExpatError:
        return None
    return None


def parse_xml(data: bytes | memoryview, *, member: str | None) -> tuple[XmlElement, list[Finding]]:
    """The element tree of ``data``, and findings for entity and DTD declarations (which end the parse).

    Raises:
        Malformed: not well-formed XML.
    """
    findings: list[Finding] = []
    stack: list[XmlElement] = []
    root: list[XmlElement] = []
    count = 0
    parser = expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def doctype(name: str, system_id: str | None, public_id: str | None, _internal: int) -> None:
        source = (system_id or public_id or "")[:120]
        if system_id or public_id:
            findings.append(
                Finding(
                    "high",
                    "xml-external-dtd",
                    f"the document type {name!r} loads an external DTD ({source!r}): "
                    "an XML parser that fetches it reaches a URL or file chosen by the author",
                    offset=parser.CurrentByteIndex,
                    member=member,
                )
            )

    def entity(
        name: str,
        is_param: int,
        value: str | None,
        _base: str | None,
        system_id: str | None,
        public_id: str | None,
        _notation: str | None,
    ) -> None:
        kind = "parameter entity" if is_param else "entity"
        if system_id or public_id:
            findings.append(
                Finding(
                    "critical",
                    "xml-external-entity",
                    f"XML {kind} {name!r} is external ({(system_id or public_id or '')[:120]!r}): a parser "
                    "that "
                    "resolves it reads that file or URL into the model (XXE)",
                    offset=parser.CurrentByteIndex,
                    member=member,
                )
            )
        else:
            findings.append(
                Finding(
                    "high",
                    "xml-entity-expansion",
                    f"XML {kind} {name!r} is declared ({len(value or '')} characters): entities that nest "
                    "expand exponentially when parsed (billion laughs); models have no use for them",
                    offset=parser.CurrentByteIndex,
                    member=member,
                )
            )
        raise _Stop

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal count
        count += 1
        if count > _MAX_ELEMENTS:
            raise Malformed(f"more than {_MAX_ELEMENTS} XML elements", member=member, kind="too-large")
        element = XmlElement(_local(name), {_local(k): v for k, v in attrs.items()})
        if stack:
            stack[-1].children.append(element)
        else:
            root.append(element)
        stack.append(element)

    def end(_name: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text.append(data)

    def external_ref(*_args: object) -> int:
        raise _Stop  # never resolved (expat only calls this for declared external entities)

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    parser.ExternalEntityRefHandler = external_ref
    try:
        parser.Parse(bytes(data), True)
    except _Stop:
        if not findings:
            raise Malformed("XML refers to an external entity", member=member) from None
        return XmlElement("", {}), findings
    except expat.ExpatError as exc:
        raise Malformed(f"not well-formed XML ({exc})", member=member) from None
    if not root:
        raise Malformed("XML without a root element", member=member)
    return root[0], findings


def _walk(element: XmlElement, path: str = "") -> list[tuple[str, XmlElement]]:
    out = []
    stack = [(element, f"{path}/{element.tag}")]
    while stack:
        node, where = stack.pop()
        out.append((where, node))
        stack.extend((child, f"{where}/{child.tag}") for child in reversed(node.children))
    return out


_CODE = re.compile(
    r"<script|\bexec\s*\(|\beval\s*\(|__import__|\bimport\s+(?:os|subprocess|sys|socket)\b|"
    r"\bfrom\s+(?:os|subprocess)\s+import\b|\bsubprocess\.|\bos\.(?:system|popen|exec\w*)\s*\(|"
    r"Runtime\.getRuntime\(\)|ProcessBuilder|\bcurl\s+|\bwget\s+|/bin/(?:ba)?sh\b",
    re.IGNORECASE,
)
_CODE_ELEMENTS = frozenset({"script", "javascript", "python", "exec", "eval", "jython", "groovy"})
_RESOURCE_ATTRS = frozenset({"href", "src", "url", "uri", "file", "filename", "path", "location"})


def scan_pmml(root: XmlElement, *, member: str | None) -> list[Finding]:
    """Findings for a PMML document (its root must be ``PMML``)."""
    if root.tag != "PMML":
        raise Malformed("not a PMML document (root element is not PMML)", member=member)
    findings = []
    for where, node in _walk(root):
        if node.tag.lower() in _CODE_ELEMENTS:
            findings.append(
                Finding(
                    "high",
                    "pmml-script",
                    f"{where}: a {node.tag} element, code that an evaluator with scripting enabled runs",
                    member=member,
                )
            )
        values = [*node.attrs.values(), "".join(node.text)]
        inside_extension = "/Extension" in where
        hit = next((m for v in values if (m := _CODE.search(v))), None)
        if hit is not None and (inside_extension or node.tag.lower() in _CODE_ELEMENTS):
            findings.append(
                Finding(
                    "high",
                    "pmml-extension-code",
                    f"{where}: extension content holds code ({hit.group(0)!r}), which a PMML consumer that "
                    "evaluates extensions runs",
                    member=member,
                )
            )
        for key, value in node.attrs.items():
            if key.lower() in _RESOURCE_ATTRS and re.match(r"(?i)^(?:file:|/|[a-z]:\\|\\\\|\.\./)", value):
                findings.append(
                    Finding(
                        "medium",
                        "xml-external-reference",
                        f"{where}@{key} points at a local file ({value[:120]!r}) that a consumer may read",
                        member=member,
                    )
                )
    return findings


_OPSET = re.compile(r"^opset\d+$")
_LIBRARY = re.compile(r"(?i)\.(?:so|dll|dylib)(?:\.\d+)*$")


def scan_openvino(
    root: XmlElement, *, member: str | None, weights_size: int | None
) -> tuple[list[Finding], list[str]]:
    """Findings and unvetted custom layers of an OpenVINO IR ``<net>`` document."""
    if root.tag != "net":
        raise Malformed("not an OpenVINO IR (root element is not net)", member=member)
    findings: list[Finding] = []
    unvetted: list[str] = []
    layers = [node for _, node in _walk(root) if node.tag == "layer"]
    for layer in layers:
        name = layer.attrs.get("name", layer.attrs.get("id", "?"))
        kind = layer.attrs.get("type", "")
        version = layer.attrs.get("version", "")
        if kind.lower() in ("python", "custom"):
            findings.append(
                Finding(
                    "high",
                    "openvino-custom-layer",
                    f"layer {name!r} is of type {kind}: its implementation is user code that the runtime "
                    "loads",
                    member=member,
                )
            )
        elif version and not _OPSET.match(version):
            unvetted.append(
                f"OpenVINO layer {name!r} of type {kind} from op set {version!r} (an extension library)"
            )
        for where, node in _walk(layer):
            for key, value in node.attrs.items():
                if key.lower() in ("library", "implementation", "extension") or _LIBRARY.search(value):
                    findings.append(
                        Finding(
                            "high",
                            "openvino-extension-library",
                            f"layer {name!r} ({where}@{key}) names native code {value[:120]!r} to load",
                            member=member,
                        )
                    )
                elif _CODE.search(value):
                    findings.append(
                        Finding(
                            "high",
                            "openvino-attribute-code",
                            f"layer {name!r} ({where}@{key}) holds code: {value[:120]!r}",
                            member=member,
                        )
                    )
        if kind == "Const" and weights_size is not None:
            end = _const_end(layer)
            if end is not None and end > weights_size:
                findings.append(
                    Finding(
                        "high",
                        "tensor-out-of-bounds",
                        f"Const layer {name!r} reads bytes up to {end} of a {weights_size}-byte weights file",
                        member=member,
                    )
                )
    return findings, unvetted


def _const_end(layer: XmlElement) -> int | None:
    data = next((c for c in layer.children if c.tag == "data"), None)
    if data is None:
        return None
    try:
        return int(data.attrs.get("offset", "0")) + int(data.attrs.get("size", "0"))
    except ValueError:
        return None


def openvino_max_weight(xml_path: Path) -> int | None:
    """The end of the last ``Const`` byte range that the IR beside a weights file reads, if it is one."""
    try:
        data = xml_path.read_bytes()
    except OSError:
        return None
    if xml_root(data[:65536]) != "net":
        return None
    try:
        root, findings = parse_xml(data, member=None)
    except Malformed:
        return None
    if findings:
        return None
    ends = [e for _, n in _walk(root) if n.tag == "layer" and (e := _const_end(n)) is not None]
    return max(ends, default=0)
