"""The one YAML reader of dlsec's config files: validated by Pydantic, errors name line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dlsec.errors import UsageError

__all__ = ["load_yaml_model"]

ModelT = TypeVar("ModelT", bound=BaseModel)


def load_yaml_model(
    path: str | Path, model: type[ModelT], *, error: type[UsageError], what: str, hint: str
) -> ModelT:
    """Read a YAML file and validate it as ``model``; every error names the line and the field.

    Shared by every YAML config (campaigns, monitor rules, playbooks, policies, gateway and
    training configs): ``error`` is raised with
    ``FILE:LINE: FIELD: MESSAGE``; ``what`` names the kind of file and ``hint`` its top fields.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the {what} ({exc})") from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}{where}: not valid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{path}:1: a {what} is a mapping of fields ({hint})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(root, loc)
        message = str(err["msg"]).removeprefix("Value error, ")
        raise error(f"{path}:{line}: {field}: {message}") from None


def _line_of(node: Any, loc: list[Any]) -> int:
    """The 1-based line of the deepest YAML node on the path ``loc``."""
    line = node.start_mark.line + 1 if node is not None else 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == str(key)), None)
            if match is None:
                match_key = next((k for k, _ in node.value if getattr(k, "value", None) == str(key)), None)
                return (match_key.start_mark.line + 1) if match_key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line
