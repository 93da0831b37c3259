"""The formats read cover ModelAudit's list (issue 26): ``docs/scanner.md``'s coverage table has a
row for every scanner in the installed ModelAudit's registry, and every dlsec format the table
names is the format of a real corpus or library-written file that scans as the table says.

The scanner ids of ModelAudit 0.2.54 (the version the benchmark compares with) are pinned in
``modelaudit_scanners.json``, so the table is checked against them on every run. Where ModelAudit
is installed (``make bench-setup`` puts it in ``.venv-modelaudit``: its NumPy pin clashes with the
project's), the pinned list is also checked against its live registry, which says when a new
version adds scanners; ``make test`` does not install it, so that check skips there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import warnings
from pathlib import Path

import pytest

from dlsec.scan import scan_file
from tests.scan.corpus import ALL_MALICIOUS, benign_files, write_payload
from tests.scan.corpus_formats import UNVETTED, format_benign_files

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "scanner.md"
FIXTURES = ROOT / "tests" / "scan" / "fixtures"
PINNED = Path(__file__).with_name("modelaudit_scanners.json")
_READS = {"safe", "unsafe"}

_REGISTRY_SCRIPT = (
    "import json, importlib.metadata as m;"
    "from modelaudit.scanner_registry_metadata import SCANNER_REGISTRY_METADATA as r;"
    "print(json.dumps({'version': m.version('modelaudit'), 'scanners': sorted(r)}))"
)


def coverage_table() -> dict[str, tuple[list[str], list[str], str]]:
    """scanner id -> (formats dlsec reads, formats it names unscannable, what is not covered)."""
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("<!-- coverage-table"))
    rows: dict[str, tuple[list[str], list[str], str]] = {}
    for line in lines[start + 3 :]:
        if not line.strip():
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 4, line
        scanner, reads, unscannable, why = cells
        assert scanner not in rows, f"{scanner} has two rows"
        rows[scanner] = (re.findall(r"`([^`]+)`", reads), re.findall(r"`([^`]+)`", unscannable), why)
    return rows


def modelaudit_registry() -> dict[str, object]:
    """The installed ModelAudit's version and scanner ids (its own venv, else this one)."""
    try:
        import modelaudit.scanner_registry_metadata as registry
    except ImportError:
        pass
    else:
        from importlib.metadata import version

        return {"version": version("modelaudit"), "scanners": sorted(registry.SCANNER_REGISTRY_METADATA)}
    python = Path(os.environ.get("DLSEC_BENCH_MODELAUDIT", ROOT / ".venv-modelaudit" / "bin" / "modelaudit"))
    python = python.parent / "python"
    if not python.exists():
        pytest.skip(f"ModelAudit is not installed ({python} is missing: `make bench-setup` installs it)")
    env = {**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_ANALYTICS": "1"}
    out = subprocess.run(
        [str(python), "-c", _REGISTRY_SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(json.loads(out.stdout))


def test_every_modelaudit_scanner_has_a_row() -> None:
    pinned = json.loads(PINNED.read_text())
    scanners = set(pinned["scanners"])
    assert pinned["version"] == "0.2.54" and len(scanners) == 45
    table = coverage_table()
    assert sorted(scanners - set(table)) == [], f"ModelAudit {pinned['version']}: scanners without a row"
    assert sorted(set(table) - scanners) == [], f"ModelAudit {pinned['version']}: rows of no scanner"


def test_the_pinned_scanner_list_is_the_installed_modelaudits() -> None:
    registry = modelaudit_registry()
    assert len(registry["scanners"]) >= 40, registry  # type: ignore[arg-type]  # really read
    pinned = json.loads(PINNED.read_text())
    if registry["version"] != pinned["version"]:
        pytest.skip(f"ModelAudit {registry['version']} installed; the table is for {pinned['version']}")
    assert registry["scanners"] == pinned["scanners"]


def test_every_row_says_what_dlsec_does() -> None:
    for scanner, (reads, unscannable, why) in coverage_table().items():
        assert reads or unscannable or why, f"{scanner}: a row naming nothing"
        if unscannable:
            assert why, f"{scanner}: unscannable formats without saying why"


def _onnx_model() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


# Formats the corpus has no file of: recognised by their magic (a header and zeros), or built here.
_EXTRA = {
    "model.onnx": _onnx_model,
    "old.ggjt": lambda: b"tjgg\x03\x00\x00\x00" + bytes(256),
    "old.bin": lambda: b"lmgg" + bytes(256),
    "archive.rar": lambda: b"Rar!\x1a\x07\x01\x00" + bytes(64),
    "model.rknn": lambda: b"RKNN" + bytes(64),
    "legacy.dnn": lambda: b"B\x00C\x00N\x00\x00\x00" + bytes(64),
    "README.md": lambda: b"# A model card\n\nTrained on digits.\n",
    "state.pb": lambda: b"\x0a\x03abc\x10\x01",
}


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """format -> the verdicts of the corpus, library-written and extra files of that format."""
    folder = tmp_path_factory.mktemp("coverage")
    marker = folder / "PWNED"
    (folder / "bad").mkdir()
    (folder / "unvetted").mkdir()
    (folder / "extra").mkdir()
    files = [write_payload(p, folder / "bad", marker) for p in ALL_MALICIOUS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files += benign_files(folder / "benign") + format_benign_files(folder / "formats")
    for name, (suffix, build) in UNVETTED.items():
        path = folder / "unvetted" / f"{name}{suffix}"
        path.write_bytes(build())
        files.append(path)
    for name, build in _EXTRA.items():
        path = folder / "extra" / name
        path.write_bytes(build())
        files.append(path)
    verdicts: dict[str, set[str]] = {}
    for path in files:
        result = scan_file(path)
        verdicts.setdefault(result.format, set()).add(result.verdict)
    for manifest in sorted(FIXTURES.glob("*/MANIFEST.json")):
        for expect in json.loads(manifest.read_text())["files"].values():
            verdicts.setdefault(expect["format"], set()).add(expect["verdict"])
    assert not marker.exists()
    return verdicts


def test_every_format_named_is_one_dlsec_gives_as_the_table_says(seen: dict[str, set[str]]) -> None:
    wrong = []
    for scanner, (reads, unscannable, _why) in coverage_table().items():
        wrong += [
            f"{scanner}: {f} read in {sorted(seen.get(f, ()))}"
            for f in reads
            if not seen.get(f, set()) & _READS
        ]
        wrong += [
            f"{scanner}: {f} unscannable in {sorted(seen.get(f, ()))}"
            for f in unscannable
            if "unscannable" not in seen.get(f, set())
        ]
    assert wrong == []


def test_ggml_files_are_named_and_unscannable_with_the_way_out(tmp_path: Path) -> None:
    for magic, name in ((b"tjgg", "GGJT"), (b"lmgg", "GGML"), (b"GGLA", "GGLA"), (b"algg", "GGLA")):
        path = tmp_path / f"model-{name}-{magic.hex()}.bin"
        path.write_bytes(magic + b"\x01\x00\x00\x00" + bytes(64))
        result = scan_file(path)
        assert (result.format, result.verdict, result.error_kind) == ("ggml", "unscannable", "unreadable")
        assert f"legacy llama.cpp {name} file" in (result.error or "")
        assert "convert it to GGUF" in (result.error or "")


def test_chat_templates_outside_gguf_are_checked_where_transformers_keeps_them(tmp_path: Path) -> None:
    bad = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": bad}))
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    (tmp_path / "chat_template.jinja").write_text(bad)
    (tmp_path / "plain.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    (tmp_path / "broken.jinja").write_text("{% for m in messages %}")
    (tmp_path / "latin.jinja").write_bytes(b"{{ caf\xe9 }}")
    (tmp_path / "numbers.json").write_text(json.dumps({"chat_template": 42}))
    got = {p.name: scan_file(p) for p in sorted(tmp_path.iterdir())}
    assert {n: (r.format, r.verdict) for n, r in got.items()} == {
        "broken.jinja": ("chat-template", "unsafe"),
        "chat_template.jinja": ("chat-template", "unsafe"),
        "chat_template.json": ("json", "safe"),
        "latin.jinja": ("chat-template", "unscannable"),
        "numbers.json": ("json", "unscannable"),
        "plain.jinja": ("chat-template", "safe"),
        "tokenizer_config.json": ("json", "unsafe"),
    }
    assert [f.code for f in got["tokenizer_config.json"].findings] == ["template-injection"]
    assert "__globals__" in got["tokenizer_config.json"].findings[0].reason
    assert "does not parse" in got["broken.jinja"].findings[0].reason


def test_chat_templates_inside_archives_are_checked(tmp_path: Path) -> None:
    import tarfile
    import zipfile

    bad = "{{ (cycler|attr('__in' ~ 'it__')) }}"
    with zipfile.ZipFile(tmp_path / "repo.zip", "w") as zf:
        zf.writestr("model/chat_template.jinja", bad)
    with zipfile.ZipFile(tmp_path / "tok.zip", "w") as zf:
        zf.writestr(
            "model/tokenizer_config.json", json.dumps({"chat_template": [{"name": "x", "template": bad}]})
        )
    src = tmp_path / "chat_template.jinja"
    src.write_text(bad)
    with tarfile.open(tmp_path / "repo.tar", "w") as tf:
        tf.add(src, arcname="model/chat_template.jinja")
    src.unlink()
    for name in ("repo.zip", "tok.zip", "repo.tar"):
        result = scan_file(tmp_path / name)
        assert result.verdict == "unsafe", (name, result.to_dict())
        assert {f.code for f in result.findings} == {"template-injection"}
        assert all("model/" in (f.member or "") for f in result.findings)
