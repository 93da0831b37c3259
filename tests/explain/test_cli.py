"""``dlsec explain`` end to end: tabular and image models, files written, bad input refused."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from dlsec.cli import main
from dlsec.core import save_safetensors_model
from dlsec.core.data import load_dataset

from .conftest import DIGITS_CNN


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, fragment):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def cnn_file(digits_cnn, tmp_path_factory):
    path = tmp_path_factory.mktemp("explain-cnn") / "cnn.safetensors"
    return save_safetensors_model(
        digits_cnn.module, digits_cnn.spec, path, arch="cnn", arch_kwargs=DIGITS_CNN
    )


def test_tabular_explanations_are_ranked_with_feature_names(capsys, tmp_path):
    out = tmp_path / "bc"
    code, stdout, err = run(
        capsys, "explain", "--model", "zoo:breast-cancer-mlp", "--data", "builtin:breast-cancer",
        "--method", "ig", "--method", "occlusion", "--n", "8", "--out", out, "--json",
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads(stdout)
    assert json.loads((out / "explain.json").read_text())["methods"].keys() == {"ig", "occlusion"}
    names = list(load_dataset("builtin:breast-cancer").spec.feature_names)
    ig = payload["methods"]["ig"]
    assert payload["n"] == 8 and len(ig["targets"]) == 8 and ig["targets"] == payload["predictions"]
    assert ig["output"] == "logit" and ig["baseline"] == "lower" and ig["params"]["n_steps"] == 50
    q = ig["quality"]
    assert q["deletion"]["auc"] < q["deletion_random"]["auc"] and q["randomisation"]["flagged"] is False
    assert q["infidelity"] is not None and q["sensitivity"] is not None and q["warnings"] == []
    assert sorted(r["name"] for r in ig["ranking"]) == sorted(names)
    assert [r["rank"] for r in ig["ranking"]] == list(range(1, 31))
    assert payload["agreement"][0]["methods"] == ["ig", "occlusion"]
    with open(out / "ranking_ig.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["rank", "feature", "importance", "mean_attribution"]
    assert [r[1] for r in rows[1:]] == [r["name"] for r in ig["ranking"]]
    page = (out / "index.html").read_text()
    assert "<svg" in page and names[0] in page and "Quality checks" in page
    saved = np.load(out / "attributions.npz")
    assert saved["attributions_ig"].shape == (8, 30) and saved["inputs"].shape == (8, 30)


def test_image_explanations_are_heat_maps(capsys, tmp_path, cnn_file):
    out = tmp_path / "digits"
    code, stdout, err = run(
        capsys, "explain", "--model", cnn_file, "--data", "builtin:digits",
        "--method", "ig", "--method", "gradcam", "--n", "4", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "index.html" in stdout and "randomised weights" in stdout and "ig / gradcam" in stdout
    maps = sorted(p.name for p in (out / "heatmaps").iterdir())
    assert maps == [f"{i:03d}_{m}.png" for i in range(4) for m in ("gradcam", "ig")]
    with Image.open(out / "heatmaps" / "000_ig.png") as img:
        assert img.size == (3 * 96 + 2 * 12, 96)  # input, attributions, overlay, scaled 12x
    payload = json.loads((out / "explain.json").read_text())
    assert payload["methods"]["gradcam"]["params"]["layer"] == "features.2"
    assert payload["model"] == str(cnn_file) and payload["access"] == "white-box"
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 8 and "<script" not in page
    assert not [p for p in out.rglob(".*.tmp")]  # nothing half-written


def test_the_layer_and_method_parameters_reach_the_method(capsys, tmp_path, cnn_file):
    out = tmp_path / "layer"
    code, stdout, err = run(
        capsys, "explain", "-m", cnn_file, "-d", "builtin:digits", "--method", "gradcam", "--layer",
        "features.0", "--n", "2", "--no-checks", "-o", out, "--json",
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads(stdout)
    assert payload["methods"]["gradcam"]["params"]["layer"] == "features.0"
    assert "quality" not in payload["methods"]["gradcam"]
    code, stdout, err = run(
        capsys, "explain", "-m", cnn_file, "-d", "builtin:digits", "--method", "ig", "-p", "n_steps=8",
        "--target", "3", "--n", "2", "--no-checks", "-o", out, "--json",
    )  # fmt: skip
    assert code == 0, err
    ig = json.loads(stdout)["methods"]["ig"]
    assert ig["params"]["n_steps"] == 8 and ig["targets"] == [3, 3]


def test_a_score_only_model_gets_occlusion(capsys, tmp_path, cnn_file):
    out = tmp_path / "score"
    code, stdout, err = run(
        capsys, "explain", "-m", cnn_file, "-d", "builtin:digits", "--access", "score", "--n", "2",
        "-o", out, "--json",
    )  # fmt: skip
    assert code == 0, err
    payload = json.loads(stdout)
    occ = payload["methods"]["occlusion"]
    assert payload["access"] == "score" and occ["output"] == "probability"
    assert occ["quality"]["skipped"] == {"randomisation": "needs the model's weights (a white-box model)"}


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (
            ["--access", "score", "--method", "ig"],
            "method ig needs gradients (white-box); use occlusion or kernel-shap",
        ),
        (["--target", "10"], "target class 10 is out of range: the model has classes 0..9"),
        (
            ["--method", "gradcam", "--layer", "conv5"],
            "the model has no layer 'conv5'; its layers: features, features.0",
        ),
        (["--method", "lime"], "unknown explanation method 'lime'; choose one of:"),
        (["--method", "ig", "--layer", "features.0"], "no chosen method takes the parameter layer"),
        (["-p", "steps=3"], "no chosen method takes the parameter steps"),
        (["--n", "0"], "--n must be a positive integer"),
        (["--baseline", "mean"], "--baseline must be lower or zeros"),
        (["--access", "decision", "--method", "occlusion"], "labels only"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, cnn_file, extra, fragment):
    out = tmp_path / "never"
    code, _, err = run(capsys, "explain", "-m", cnn_file, "-d", "builtin:digits", "-o", out, *extra)
    assert_user_error(code, err, fragment)
    assert not out.exists()
