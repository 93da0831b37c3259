"""Start-up cost: the light commands import none of the heavy libraries, and the lazy
command table (dlsec.cli._lazy.COMMANDS) says exactly what the command modules define."""

import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from dlsec.release import generate_signing_keys, load_signing_keys, sign_model
from dlsec.store import Registry

HEAVY = ("torch", "scipy", "sklearn", "opacus", "onnxruntime")

PROBE = f"""
import json, sys
from dlsec.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
loaded = sorted(m for m in sys.modules if m.startswith("dlsec.cli.") and m.endswith("_cmd"))
print("\\nPROBE" + json.dumps({{"code": code, "heavy": heavy, "cli": loaded}}))
"""


def probe(*argv: str, home) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "--home", str(home), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    marker = proc.stdout.rfind("PROBE")
    assert marker >= 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout[marker + len("PROBE") :])


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    root = tmp_path_factory.mktemp("startup")
    home = root / "home"
    generate_signing_keys(home / "keys", passphrase="pw-startup", scrypt_log_n=10, overwrite=True)
    model = root / "model"
    model.mkdir()
    save_file({"w": np.ones((2, 2), dtype=np.float32)}, str(model / "model.safetensors"))
    sign_model(model, load_signing_keys(home / "keys", passphrase="pw-startup"))
    registry = Registry.open(home=home)  # a registry with one version, so the audit log has entries
    try:
        registry.add(model, "tiny", keys=home / "keys")
    finally:
        registry.close()
    return home, model


@pytest.mark.parametrize(
    "argv, code",
    [
        (["--help"], 0),
        (["scan", "{model}/model.safetensors"], 0),
        (["verify", "{model}"], 0),
        (["audit", "verify"], 0),
        (["keys", "list"], 0),
        (["registry", "list"], 0),
    ],
    ids=["help", "scan", "verify", "audit-verify", "keys-list", "registry-list"],
)
def test_light_commands_import_no_heavy_library(signed, argv, code):
    home, model = signed
    result = probe(*[a.format(model=model) for a in argv], home=home)
    assert result["code"] == code
    assert result["heavy"] == [], f"dlsec {' '.join(argv)} imported {result['heavy']}"


def test_data_pii_starts_without_torch(signed, tmp_path):
    home, _ = signed
    table = tmp_path / "people.csv"
    table.write_text("name,email\nMary Smith,mary@example.com\n")
    result = probe("data", "pii", str(table), "--json", home=home)
    assert result["code"] == 1  # personal data found
    assert result["heavy"] == [], f"dlsec data pii imported {result['heavy']}"
    assert result["cli"] == ["dlsec.cli.data_cmd", "dlsec.cli.pii_cmd"]


def test_a_command_loads_only_its_own_module(signed):
    home, model = signed
    assert probe("--help", home=home)["cli"] == []
    assert probe("scan", str(model / "model.safetensors"), home=home)["cli"] == ["dlsec.cli.release_cmd"]


def test_the_heavy_commands_still_load_what_they_need(signed):
    home, _ = signed
    result = probe("attack", "--help", home=home)
    assert result["code"] == 0 and "torch" in result["heavy"]


def test_command_table_matches_the_command_modules():
    import typer

    from dlsec.cli._app import app
    from dlsec.cli._lazy import COMMANDS, load_all

    load_all()
    defined: dict[str, set[str]] = {}
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        defined.setdefault(name, set()).add(info.callback.__module__)
    for group in app.registered_groups:
        modules = {c.callback.__module__ for c in group.typer_instance.registered_commands}
        defined.setdefault(group.name, set()).update(modules)
    assert set(defined) == set(COMMANDS)
    built = typer.main.get_group(app)
    for name, (modules, help_text) in COMMANDS.items():
        assert defined[name] == {f"dlsec.cli.{m}" for m in modules}, name
        real = built.commands[name]
        assert (real.help or "").split("\n\n")[0].strip() == help_text, name


def test_core_exports_resolve_lazily_to_their_definitions():
    import dlsec.core as core
    from dlsec.core.evaluation import evaluate

    assert set(core.__all__) == set(core._EXPORTS)
    for name in core.__all__:
        module = importlib.import_module(f"dlsec.core.{core._EXPORTS[name]}")
        assert getattr(core, name) is getattr(module, name)
    assert core.evaluate is evaluate  # the function, not a submodule of the same name


def test_shell_completion_lists_commands_without_loading_them():
    script = (
        "import sys\n"
        "from dlsec.cli import main\n"
        "code = main([])\n"
        "print('\\nLOADED', sorted(m for m in sys.modules if m.endswith('_cmd')), 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "_DLSEC_COMPLETE": "complete_bash", "COMP_WORDS": "dlsec re", "COMP_CWORD": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    words = proc.stdout.split()
    assert {"registry", "release"} & set(words) == {"registry"}  # only commands that exist
    assert "LOADED" not in proc.stdout or "False" in proc.stdout.split("LOADED")[-1]
    # A sub-command's completion loads its group (and still no torch).
    env.update(COMP_WORDS="dlsec keys l", COMP_CWORD="2")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.split()[0] == "list"
