"""The assessment's text section, end to end on a tiny model trained here on a synthetic corpus.

The corpus is built so that WordNet synonyms flip the model: "good" (positive) has the synonym
"full" (negative in the corpus) and "bad" (negative) the synonyms "big" and "tough" (positive),
in a tiny WordNet database in the real file format (no system WordNet needed).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from dlsec.assess import Campaign, load_campaign, render_html, run_text_assessment
from dlsec.text import TextDataset, load_text_model, train_text_model
from tests.cli.test_cli import assert_user_error, run
from tests.text.test_corpus import _tiny_wordnet

FILLER = ["movie", "film", "plot", "story", "show", "cast", "ending", "score"]
SCRIPT = "<script>alert(1)</script> good film"


def _corpus() -> TextDataset:
    texts, labels = [], []
    for i, filler in enumerate(FILLER * 6):
        other = FILLER[(i + 3) % len(FILLER)]
        for word, label in (("good", 1), ("big", 1), ("tough", 1), ("bad", 0), ("full", 0)):
            texts.append(f"{filler} {word} {other}")
            labels.append(label)
    texts.insert(0, SCRIPT)
    labels.insert(0, 1)
    return TextDataset(tuple(texts), np.array(labels, dtype=np.int64), ("neg", "pos"), "synthetic")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-assess")
    wordnet = root / "wordnet"
    wordnet.mkdir()
    _tiny_wordnet(wordnet)
    data = _corpus()
    folder = root / "model"
    result = train_text_model(data, out=folder, epochs=8, vocab_size=200, max_length=16, seed=0)
    assert result.metrics["test_accuracy"] > 0.9
    with open(root / "texts.jsonl", "w", encoding="utf-8") as f:
        for text, label in zip(data.texts, data.y.tolist(), strict=True):
            f.write(json.dumps({"text": text, "label": ["neg", "pos"][label]}) + "\n")
    campaign = {
        "seed": 0,
        "text": {
            "attacks": ["pwws", "deepwordbug", "hotflip"],
            "max_change": [0.34, 0.5],
            "examples": 24,
            "wordnet": str(wordnet),
            "attack_params": {"pwws": {"same_pos": False}, "hotflip": {"same_pos": False}},
            "safer": {"n0": 10, "n": 100, "alpha": 0.01, "examples": 12, "radii": [0, 1, 2]},
        },
        "gates": [
            {"name": "text robust", "metric": "robust_accuracy", "max_change": 0.5, "min": 0.99},
            {"name": "safer", "metric": "certified_accuracy", "radius": 0, "min": 0.0},
        ],
    }
    (root / "campaign.yaml").write_text(yaml.safe_dump(campaign))
    return root, data, folder


def test_run_text_assessment_writes_the_section_and_a_gate_fails_on_it(tiny):
    root, data, folder = tiny
    campaign = load_campaign(root / "campaign.yaml")
    model = load_text_model(folder)
    out = root / "out"
    result = run_text_assessment(
        model, data, campaign, out, model_ref=str(folder), model_sha256="0" * 64, model_folder=folder
    )
    report = result.report
    text = report["text"]
    assert set(text["attacks"]) == {"pwws", "deepwordbug", "hotflip"}
    # the synonym swaps the corpus was built around fool the model
    pwws = text["attacks"]["pwws"]
    assert pwws["success_rate"][-1] > 0.5
    assert pwws["median_queries"][-1] is not None and pwws["median_queries"][-1] >= 1
    worst = text["curve"]["robust_accuracy"]
    assert worst[-1] <= min(row["robust_accuracy"][-1] for row in text["attacks"].values())
    assert text["shown"] and all(any("was" in s for s in e["segments"]) for e in text["shown"])
    safer = text["safer"]
    assert safer["radii"] == [0, 1, 2] and len(safer["certified_accuracy"]) == 3
    assert safer["certified_accuracy"] == sorted(safer["certified_accuracy"], reverse=True)
    codes = {f["code"]: f for f in report["findings"]}
    assert codes["text-evasion"]["owasp"].startswith("ML01")
    assert codes["text-evasion"]["atlas"].startswith("AML.T0043")
    gates = {g.name: g for g in result.gates}
    assert not gates["text robust"].passed and gates["text robust"].value == pytest.approx(worst[-1])
    assert gates["safer"].passed
    assert report["verdict"] == "fail" and not result.passed
    for name in ("report.json", "report.html", "junit.xml", "report.sarif"):
        assert (out / name).is_file()
    sarif = json.loads((out / "report.sarif").read_text())
    assert any(r["ruleId"] == "dlsec/text-evasion" for r in sarif["runs"][0]["results"])
    html = (out / "report.html").read_text()
    assert 'id="text"' in html and "<mark" in html
    assert "<script>alert" not in html

    # resumable: a second run reads every unit back
    again = run_text_assessment(
        model, data, campaign, out, model_ref=str(folder), model_sha256="0" * 64, model_folder=folder
    )
    assert again.report["reproducibility"]["units_reused"] >= 1 + 3 * 2 + 1
    assert again.report["text"]["curve"] == text["curve"]

    # every piece of a text, and the word it replaced, is escaped in the HTML
    evil = dict(report)
    evil["text"] = {
        **text,
        "shown": [
            {
                **text["shown"][0],
                "segments": [
                    {"text": "<script>alert(2)</script> "},
                    {"text": "x<img>", "was": "<b onmouseover=alert(3)>"},
                ],
            }
        ],
    }
    page = render_html(evil)
    assert "<script>alert(2)" not in page and "&lt;script&gt;alert(2)" in page
    assert "<b onmouseover" not in page and "<img>" not in page


def test_score_access_leaves_hotflip_not_run(tiny):
    root, data, folder = tiny
    campaign = Campaign.model_validate(
        {
            "threat_model": {"access": "score"},
            "text": {
                "attacks": ["deepwordbug", "hotflip"],
                "max_change": [0.5],
                "examples": 8,
                "safer": {"enabled": False},
            },
        }
    )
    result = run_text_assessment(
        load_text_model(folder), data, campaign, root / "score", model_ref="m", model_sha256="1" * 64
    )
    checks = {item["check"]: item["reason"] for item in result.report["not_run"]}
    assert "white-box" in checks["text attack hotflip"]
    assert set(result.report["text"]["attacks"]) == {"deepwordbug"}
    assert result.report["verdict"] == "partial"


def test_text_campaign_fields_are_strict():
    with pytest.raises(ValueError, match="max_change"):
        Campaign.model_validate({"text": {"max_change": [1.5]}})
    with pytest.raises(ValueError, match="unknown text attack"):
        Campaign.model_validate({"text": {"attacks": ["apgd-ce"]}})
    with pytest.raises(ValueError, match="extra"):
        Campaign.model_validate({"text": {"nope": 1}})
    with pytest.raises(ValueError, match="not both"):
        Campaign.model_validate(
            {
                "gates": [
                    {"metric": "robust_accuracy", "max_change": 0.2, "norm": "linf", "eps": 0.1, "min": 0}
                ]
            }
        )


def test_cli_assesses_a_text_model_and_refuses_mixed_kinds(tiny, capsys):
    root, _, folder = tiny
    out = root / "cli"
    code, stdout, err = run(
        capsys,
        "assess",
        "--model",
        str(folder),
        "--data",
        str(root / "texts.jsonl"),
        "--out",
        str(out),
        "--campaign",
        str(root / "campaign.yaml"),
        "--split",
        "all",
        "--json",
    )
    assert code == 1, err  # the campaign's text gate fails
    summary = json.loads(stdout)
    assert set(summary["text_robust_accuracy"]) == {"0.34", "0.5"}
    assert summary["text_certified_accuracy"]
    assert json.loads((out / "report.json").read_text())["data"]["kind"] == "text"

    code, _, err = run(
        capsys, "assess", "--model", str(folder), "--data", "builtin:digits", "--out", str(out)
    )
    assert_user_error(code, err, "is a text model")
    code, _, err = run(
        capsys, "assess", "--model", "zoo:digits-cnn", "--data", "builtin:rotten-tomatoes", "--out", str(out)
    )
    assert_user_error(code, err, "not a text model")
