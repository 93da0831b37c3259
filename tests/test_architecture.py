"""The layering of docs/architecture.md holds: checked by import-linter, and the check can fail."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dlsec"
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(config_dir: Path, src: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT), "--config", str(config_dir / ".importlinter"), "--no-cache"],
        cwd=config_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layering")
    shutil.copytree(SRC, out / "src" / "dlsec", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", out / ".importlinter")
    return out


def test_the_layers_hold_on_the_source(copy: Path) -> None:
    result = _lint(copy, copy / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line"),
    [
        # An import inside a function counts: core reaching up into the registry.
        ("core/spec.py", "def _sneaky():\n    from dlsec.store import Registry\n\n    return Registry\n"),
        # A lower layer naming a higher one at module level: the scanner importing torch code.
        ("scan/_formats.py", "from dlsec.core import model as _model  # noqa\n"),
        # Serving importing responding (alerts flow through hooks instead).
        ("serve/limits.py", "def _respond():\n    import dlsec.respond\n\n    return dlsec.respond\n"),
    ],
)
def test_a_forbidden_import_is_refused(copy: Path, tmp_path: Path, module: str, line: str) -> None:
    broken = tmp_path / "src"
    shutil.copytree(copy / "src", broken)
    target = broken / "dlsec" / module
    target.write_text(target.read_text() + "\n\n" + line)
    result = _lint(copy, broken)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "0 kept, 1 broken" in result.stdout, result.stdout


def _private_imports(path: Path, root: Path = SRC) -> list[str]:
    rel = path.relative_to(root.parent)
    own = rel.parts[1] if len(rel.parts) > 2 else rel.stem
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            private = any(p.startswith("_") and not p.startswith("__") for p in parts[2:])
            if parts[0] == "dlsec" and len(parts) > 2 and parts[1] != own and private:
                found.append(f"{rel}:{node.lineno} imports {name}")
                break
    return found


def test_no_package_imports_another_packages_private_module() -> None:
    bad = [hit for path in sorted(SRC.rglob("*.py")) for hit in _private_imports(path)]
    assert bad == []


def test_the_private_module_check_can_fail(tmp_path: Path) -> None:
    fake = tmp_path / "dlsec" / "serve" / "_probe.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from dlsec.store._db import Database\nfrom dlsec.serve._watch import Watcher\n")
    assert _private_imports(fake, tmp_path / "dlsec") == ["dlsec/serve/_probe.py:1 imports dlsec.store._db"]
