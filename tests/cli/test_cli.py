import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlsec.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *args):
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def assert_user_error(code, err, fragment):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in err


def test_version_and_zoo_listing(capsys):
    info = run_json(capsys, "version")
    assert {"dlsec", "torch", "python"} <= set(info)
    names = [row["name"] for row in run_json(capsys, "zoo")]
    assert {"zoo:digits-cnn", "zoo:digits-mlp", "zoo:breast-cancer-mlp"} <= set(names)


def test_train_then_eval_reproduces_the_recorded_accuracy(capsys, tmp_path):
    out = tmp_path / "model"
    trained = run_json(
        capsys, "train", "--data", "builtin:breast-cancer", "--epochs", "3", "--seed", "7", "--out", str(out)
    )
    assert (out / "model.safetensors").is_file() and (out / "model.json").is_file()
    card = json.loads((out / "model.json").read_text())
    assert card["seed"] == 7 and card["metrics"]["clean_accuracy"] == trained["clean_accuracy"]
    # No --arch needed: the file names a built-in architecture and carries its input spec.
    evaluated = run_json(
        capsys, "eval", "--model", str(out / "model.safetensors"), "--data", "builtin:breast-cancer"
    )
    assert evaluated["accuracy"] == pytest.approx(trained["clean_accuracy"])
    assert np.asarray(evaluated["confusion_matrix"]).sum() == 143
    code, _, err = run(capsys, "train", "--data", "builtin:breast-cancer", "--out", str(out))
    assert_user_error(code, err, "--force")


def test_eval_human_output_has_the_confusion_matrix(capsys):
    code, out, _ = run(capsys, "eval", "-m", "zoo:breast-cancer-mlp", "-d", "builtin:breast-cancer")
    assert code == 0
    assert "confusion matrix" in out and "malignant" in out and "accuracy" in out


def test_bad_inputs_exit_2_with_one_line(capsys, tmp_path):
    bad = tmp_path / "nan.npz"
    np.savez(bad, x=np.array([[np.nan] * 30]), y=np.array([0]))
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(pickle.dumps(Payload(), protocol=4))
    cases = [
        (["eval", "-m", "zoo:breast-cancer-mlp", "-d", str(tmp_path / "missing.npz")], "not found"),
        (["eval", "-m", "zoo:breast-cancer-mlp", "-d", str(bad)], "NaN"),
        (["eval", "-m", "zoo:breast-cancer-mlp", "-d", "builtin:digits"], "shape"),
        (["eval", "-m", "zoo:nope", "-d", "builtin:digits"], "unknown zoo model"),
        (["eval", "-m", str(ckpt), "-d", "builtin:breast-cancer"], "dlsec scan"),
        (["eval", "-m", "zoo:breast-cancer-mlp", "-d", "builtin:breast-cancer", "--split", "dev"], "--split"),
        (["train", "-d", "builtin:digits", "--epochs", "0", "--out", str(tmp_path / "m")], "epochs"),
        (
            ["train", "-d", "builtin:digits", "--arch", "nope", "--out", str(tmp_path / "m")],
            "unknown architecture",
        ),
        (["train", "-d", "builtin:digits", "--arch-arg", "oops", "--out", str(tmp_path / "m")], "key=value"),
        (["demo", "--model", "model.safetensors"], "zoo model"),
    ]
    for args, fragment in cases:
        code, _, err = run(capsys, *args)
        assert_user_error(code, err, fragment)
    assert not marker.exists()
    assert not (tmp_path / "m").exists()  # nothing half-written


def test_typer_usage_errors_exit_2(capsys):
    code, _, err = run(capsys, "eval", "--model", "zoo:digits-cnn")
    assert code == 2 and "--data" in err and "Traceback" not in err
    code, _, _ = run(capsys, "--device", "tpu", "version")
    assert code == 2


def test_demo_report_matches_dlsec_attack(capsys, tmp_path):
    result = run_json(capsys, "demo", "--out", str(tmp_path / "demo"), "--examples", "40")
    report = json.loads(Path(result["report_json"]).read_text())
    assert report["schema"] == "dlsec.report/1" and report["data"]["rows"] == 40
    # The demo ships what it assessed: signed, registered, promoted, with a verified audit log.
    shipped = result["release"]
    assert shipped["ref"] == "digits-cnn@1" and shipped["audit"]["ok"]
    assert shipped["audit"]["entries"] == 3  # keys.generate, registry.add, registry.promote
    # Then serves it: a normal client is never flagged, an extraction attacker is cut off early.
    served = shipped["gateway"]
    assert served["client"]["ok"] == served["client"]["requests"] and served["client"]["alerts"] == 0
    assert served["attacker"]["first_alert"] is not None and served["attacker"]["answered"] < 200
    assert served["incidents"][0]["actions"] == ["snapshot", "revoke_key"] and served["audit_ok"]
    # And maps it to the six frameworks: the gateway's keys and playbook count as evidence.
    comply = json.loads((tmp_path / "demo" / "comply" / "compliance.json").read_text())
    states = {i["kind"]: i["state"] for i in comply["evidence"]["items"]}
    assert states["access-control"] == states["incident-response"] == states["signature"] == "ok"
    assert shipped["comply"]["failing"] == 0
    # And the generative step: zoo-gan's samples signed and verified (the manifest names the
    # generator's weights), the learned watermark read back after JPEG 50, spectrum-gan's scores.
    generated = result["generative_demo"]
    assert generated["provenance"]["verified"] == 4
    assert generated["provenance"]["manifest_weights_sha256"] == generated["generator"]["weights_sha256"]
    assert generated["watermark"]["detected"] == 4 and min(generated["watermark"]["bit_accuracy"]) >= 0.9
    assert generated["detector"]["flagged"] >= 3
    curve = report["robustness"]["curves"]["linf"]
    attacked = run_json(
        capsys,
        "attack",
        "-m",
        "zoo:digits-cnn",
        "-d",
        "builtin:digits",
        "--attack",
        "apgd-ce",
        "--eps",
        "0.1",
        "--n",
        "40",
        "--seed",
        str(report["reproducibility"]["seed"]),
    )
    assert curve["per_attack"]["apgd-ce"][curve["eps"].index(0.1)] == attacked["robust_accuracy"]
    assert report["clean"]["accuracy"] == attacked["clean_accuracy"] == result["clean_accuracy"]
    assert curve["robust_accuracy"] == sorted(curve["robust_accuracy"], reverse=True)
    assert any(f["atlas"].startswith("AML.T0015") for f in report["findings"])
    html = Path(result["report_html"]).read_text()
    assert "data:image/png;base64," in html and 'id="robustness"' in html and 'id="certification"' in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained


def test_console_script_runs_and_hides_tracebacks(tmp_path):
    env = {**os.environ, "DLSEC_HOME": str(tmp_path)}
    exe = Path(sys.executable).parent / "dlsec"
    ok = subprocess.run([str(exe), "version"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and "dlsec" in ok.stdout
    bad = subprocess.run(
        [str(exe), "eval", "-m", "zoo:x", "-d", "builtin:digits"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
