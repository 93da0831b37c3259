"""The mutation script's bookkeeping: equivalent mutants read from docs/testing.md, the score."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("mutation_script", ROOT / "benchmarks" / "mutation.py")
assert _spec is not None and _spec.loader is not None
mutation = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = mutation  # its dataclasses look their module up
_spec.loader.exec_module(mutation)


def test_every_listed_equivalent_names_a_mutated_module_once() -> None:
    found = mutation.equivalent_mutants()
    lines = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8").splitlines()
    listed = [m.group(1) for line in lines if (m := re.match(r"\|\s*`([\w.\u01c1]+__mutmut_\d+)`", line))]
    assert len(listed) == len(found) > 100  # no mutant listed twice (a dict would hide it)
    modules = {
        s.removeprefix("src/").removesuffix(".py").replace("/", ".")
        for t in mutation.TARGETS.values()
        for s in t.sources
    }
    for name in found:
        module = re.sub(r"\.x[_\u01c1].*$", "", name)
        assert module in modules, name
        assert found[name].strip(), name  # each with its reason


def test_every_targets_files_exist() -> None:
    for target in mutation.TARGETS.values():
        for path in (*target.sources, *(t.split("::")[0] for t in target.tests)):
            assert (ROOT / path).is_file(), path


def test_equivalents_are_read_from_rows_with_a_name_and_a_reason(tmp_path: Path) -> None:
    doc = tmp_path / "testing.md"
    doc.write_text(
        "| mutant | why |\n|---|---|\n"
        "| `dlsec.a.x_f__mutmut_3` | a reason |\n"
        "| `dlsec.a.x\u01c1C\u01c1m__mutmut_12` |  spaced  |\n"
        "| `dlsec.a.x_f` | not a mutant name |\n"
        "text `dlsec.a.x_f__mutmut_4` outside a row\n",
        encoding="utf-8",
    )
    assert mutation.equivalent_mutants(doc) == {
        "dlsec.a.x_f__mutmut_3": "a reason",
        "dlsec.a.x\u01c1C\u01c1m__mutmut_12": "spaced",
    }
    assert mutation.equivalent_mutants(tmp_path / "missing.md") == {}


def test_the_score_is_killed_over_the_non_equivalent_mutants_that_ran() -> None:
    row = mutation.Row("m", mutants=20, killed=12, equivalent=3, not_run=5)
    assert row.score == 1.0  # 12 of 20 - 3 - 5
    row = mutation.Row("m", mutants=10, killed=6, equivalent=2)
    assert row.score == 0.75
    assert mutation.Row("m", mutants=4, killed=0, equivalent=4).score is None
