"""Every row of the README's feature table names the tests that fail if it breaks, and they exist.

The table's last column lists test files under ``tests/``; the security claims under the table
name single tests (``FILE::NAME``). A renamed or deleted test, or a new row without tests, fails
here rather than leaving a claim unguarded.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _feature_rows() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## What works today", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]
    # Split on cell borders, not on escaped pipes inside a cell (``local\|HOST``).
    return [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_feature_row_names_existing_test_files() -> None:
    header, *rows = _feature_rows()
    assert header == ["area", "capability", "status", "tests (under `tests/`)"]
    assert len(rows) > 50
    for area, capability, _status, tests in rows:
        refs = re.findall(r"`([^`]+)`", tests)
        assert refs, f"the {area} row {capability[:60]!r} names no test"
        for ref in refs:
            path = ROOT / "tests" / ref
            assert path.is_file(), f"{ref} (the {area} row) does not exist"
            assert _tests_in(path), f"{ref} (the {area} row) holds no test"


def test_the_security_claims_name_tests_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    claims = text.split("Security claims and the test that fails if one breaks:", 1)[1].split("\n## ", 1)[0]
    named = re.findall(r"`(tests/[\w/]+\.py)?::(test_\w+)`", claims)
    assert len(named) >= 6
    current = ""
    for file, name in named:
        current = file or current  # ``::name`` continues the last file named
        assert name in _tests_in(ROOT / current), f"{current}::{name} does not exist"
