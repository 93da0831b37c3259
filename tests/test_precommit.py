"""The pre-commit hooks (.pre-commit-hooks.yaml) under the real pre-commit and git.

A temporary project installs the hooks from a hook repository holding this working tree's
hook files (committed there, since pre-commit clones the hook repository at a revision), and
`git commit` runs them as it does for a developer.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from pre_commit.clientlib import load_manifest
from safetensors.numpy import save_file

from dlsec.release import SIGNATURE_NAME, generate_signing_keys, load_signing_keys, sign_model

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / ".pre-commit-hooks.yaml"
HOOK_FILES = (".pre-commit-hooks.yaml", "ci/dlsec-verify-changed.sh")
PASS = "correct horse battery staple"


def malicious_pickle() -> bytes:
    """PROTO 2, GLOBAL os.system, the argument, TUPLE1, REDUCE, STOP: runs a shell when loaded."""
    command = b"touch PWNED"
    return b"\x80\x02" + b"cos\nsystem\n" + b"X" + struct.pack("<I", len(command)) + command + b"\x85R."


def write_safetensors(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    save_file({"weight": rng.standard_normal((4, 3)).astype(np.float32)}, str(path))
    return path


def hooks_by_id() -> dict[str, dict]:
    return {hook["id"]: hook for hook in load_manifest(str(MANIFEST))}


def test_the_manifest_is_valid_and_picks_model_files_only() -> None:
    hooks = hooks_by_id()
    assert set(hooks) == {"dlsec-scan", "dlsec-verify"}
    scan, verify = hooks["dlsec-scan"], hooks["dlsec-verify"]
    # Both run what the developer installed: pre-commit creates no environment for them.
    assert scan["language"] == "unsupported" and scan["entry"] == "dlsec scan"
    assert verify["language"] == "unsupported_script" and (ROOT / verify["entry"]).is_file()
    assert os.access(ROOT / verify["entry"], os.X_OK)
    assert scan["types"] == ["file"] and verify["require_serial"] and verify["always_run"]
    files = re.compile(scan["files"])
    models = [
        "a.pt", "dir/a.PTH", "x/y.bin", "m.ckpt", "m.pkl", "m.pickle", "m.joblib", "a.npy", "a.npz",
        "a.h5", "a.keras", "a.onnx", "w/model.safetensors", "llm.gguf", "hf/pytorch_model",
        "hf/pytorch_model-00001-of-00002.bin", "pytorch_model.bin",
    ]  # fmt: skip
    others = [
        "README.md", "hf/pytorch_model.bin.index.json", "model.json", "model.sig", "src/x.py",
        "a.ptx", "pt", "notes/pytorch_model.md.json", "a.safetensors.sig",
    ]  # fmt: skip
    assert [p for p in models if not files.search(p)] == []
    assert [p for p in others if files.search(p)] == []


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    """git and pre-commit isolated from the user's configuration; this venv's dlsec on PATH."""
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = dlsec test\n\temail = test@example.invalid\n"
        "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
    env.update(
        GIT_CONFIG_GLOBAL=str(gitconfig),
        GIT_CONFIG_NOSYSTEM="1",
        PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


def git(cwd: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


@pytest.fixture
def hook_repo(tmp_path: Path, git_env: dict[str, str]) -> tuple[Path, str]:
    """A git repository with this working tree's hook files, committed; returns it and the revision."""
    repo = tmp_path / "hooks"
    for name in HOOK_FILES:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)  # keeps the script's executable bit
    git(repo, git_env, "init", "-q")
    git(repo, git_env, "add", ".")
    git(repo, git_env, "commit", "-q", "-m", "hooks")
    return repo, git(repo, git_env, "rev-parse", "HEAD")


def make_project(tmp_path: Path, env: dict[str, str], hook_repo: tuple[Path, str], hooks: list) -> Path:
    repo, rev = hook_repo
    project = tmp_path / "project"
    project.mkdir()
    git(project, env, "init", "-q")
    config = {"repos": [{"repo": str(repo), "rev": rev, "hooks": hooks}]}
    (project / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    git(project, env, "add", ".pre-commit-config.yaml")
    git(project, env, "commit", "-q", "-m", "pre-commit configuration")
    installed = subprocess.run(
        [sys.executable, "-m", "pre_commit", "install"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return project


def commit(project: Path, env: dict[str, str], message: str) -> tuple[int, str]:
    """`git commit` of what is staged, through the installed pre-commit hook: (status, output)."""
    done = subprocess.run(
        ["git", "commit", "-m", message],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def hook_line(output: str, name: str) -> str:
    """pre-commit's status line of one hook: ``name (...)....Passed`` (or Failed, Skipped)."""
    status = re.compile(rf"^{re.escape(name)}\b.*\.\.\.+.*(Passed|Failed|Skipped)$")
    [line] = [line for line in output.splitlines() if status.match(line)]
    return line


def test_a_malicious_pickle_is_refused_and_a_clean_safetensors_file_commits(
    tmp_path: Path, git_env: dict[str, str], hook_repo: tuple[Path, str]
) -> None:
    project = make_project(tmp_path, git_env, hook_repo, [{"id": "dlsec-scan"}])
    head = git(project, git_env, "rev-parse", "HEAD")

    evil = project / "models" / "evil.pkl"
    evil.parent.mkdir()
    evil.write_bytes(malicious_pickle())
    git(project, git_env, "add", "models/evil.pkl")
    status, output = commit(project, git_env, "add a checkpoint")
    assert status != 0, output
    assert "Failed" in hook_line(output, "dlsec scan")
    assert "os.system" in output and "evil.pkl" in output
    assert git(project, git_env, "rev-parse", "HEAD") == head
    assert not (project / "PWNED").exists()  # scanned, never loaded

    git(project, git_env, "rm", "-q", "--cached", "models/evil.pkl")
    evil.unlink()
    write_safetensors(project / "models" / "clean.safetensors")
    # Beside it, files the hook must leave alone: they are no models (scanning them would fail).
    (project / "models" / "pytorch_model.bin.index.json").write_text('{"weight_map": {}}')
    (project / "models" / "README.md").write_text("weights\n")
    git(project, git_env, "add", "models")
    status, output = commit(project, git_env, "add clean weights")
    assert status == 0, output
    assert "Passed" in hook_line(output, "dlsec scan")  # it ran (on the safetensors file alone)
    assert git(project, git_env, "rev-parse", "HEAD") != head


def test_a_commit_that_breaks_a_signed_model_is_refused(
    tmp_path: Path, git_env: dict[str, str], hook_repo: tuple[Path, str]
) -> None:
    keys = tmp_path / "keys"
    generate_signing_keys(keys, passphrase=PASS, scrypt_log_n=10)
    signing = load_signing_keys(keys, passphrase=PASS)
    project = make_project(
        tmp_path,
        git_env,
        hook_repo,
        [{"id": "dlsec-scan"}, {"id": "dlsec-verify", "args": ["--pub", "trusted-keys"]}],
    )
    # The public keys live in the project; the private ones never do.
    (project / "trusted-keys").mkdir()
    for pub in keys.glob("*.pub.pem"):
        shutil.copy(pub, project / "trusted-keys" / pub.name)
    release = project / "release"
    write_safetensors(release / "model.safetensors")
    (release / "config.json").write_text('{"arch": "mlp"}\n')
    sign_model(release, signing)
    single = write_safetensors(project / "weights.safetensors", seed=1)
    sign_model(single, signing)
    assert (release / SIGNATURE_NAME).is_file() and single.with_name(single.name + ".sig").is_file()
    git(project, git_env, "add", ".")
    status, output = commit(project, git_env, "signed release")
    assert status == 0, output
    assert "Passed" in hook_line(output, "dlsec verify")
    head = git(project, git_env, "rev-parse", "HEAD")

    # A changed file of a signed folder (not a model file: only the signature notices).
    (release / "config.json").write_text('{"arch": "mlp", "patched": true}\n')
    git(project, git_env, "add", "release/config.json")
    status, output = commit(project, git_env, "tweak the config")
    assert status != 0, output
    assert "Failed" in hook_line(output, "dlsec verify") and "config.json" in output
    assert git(project, git_env, "rev-parse", "HEAD") == head
    git(project, git_env, "checkout", "HEAD", "--", "release/config.json")

    # A file removed from a signed folder: pre-commit passes no file, the staged deletion counts.
    git(project, git_env, "rm", "-q", "release/config.json")
    status, output = commit(project, git_env, "drop the config")
    assert status != 0, output
    assert "Failed" in hook_line(output, "dlsec verify") and "config.json" in output
    assert git(project, git_env, "rev-parse", "HEAD") == head
    git(project, git_env, "checkout", "HEAD", "--", "release/config.json")

    # A signed single file (FILE.sig beside it) replaced by other, equally clean weights.
    write_safetensors(single, seed=2)
    git(project, git_env, "add", "weights.safetensors")
    status, output = commit(project, git_env, "retrain")
    assert status != 0, output
    assert "Passed" in hook_line(output, "dlsec scan")
    assert "Failed" in hook_line(output, "dlsec verify") and "weights.safetensors" in output
    assert git(project, git_env, "rev-parse", "HEAD") == head

    # Re-signed, the same change commits.
    sign_model(single, signing)
    git(project, git_env, "add", "weights.safetensors", "weights.safetensors.sig")
    status, output = commit(project, git_env, "retrain and re-sign")
    assert status == 0, output
    assert "Passed" in hook_line(output, "dlsec verify")
