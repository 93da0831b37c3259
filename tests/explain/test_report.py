"""The files of an explain run: escaped HTML, spreadsheet-safe CSV, atomic writes."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from dlsec.core import InputSpec, WhiteBoxModel
from dlsec.errors import UsageError
from dlsec.explain import explain_batch

from .conftest import linear_module

HOSTILE = ("<script>alert(1)</script>", '=HYPERLINK("http://x")', "a&b", "@sum")


def test_names_from_the_data_are_escaped_in_html_and_defused_in_csv(tmp_path, rows):
    spec = InputSpec(
        shape=(4,), num_classes=3, kind="tabular", feature_names=HOSTILE, class_names=("<b>", "c1", "c2")
    )
    model = WhiteBoxModel(linear_module(), spec, device="cpu")
    run = explain_batch(model, rows, methods=["ig", "saliency"], labels=torch.zeros(6), checks=["deletion"])
    payload = run.write(tmp_path / "out", meta={"model": "<img src=x onerror=alert(1)>", "data": "d"})
    page = (tmp_path / "out" / "index.html").read_text()
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&amp;b" in page
    with open(tmp_path / "out" / "ranking_ig.csv", newline="") as f:
        cells = [r[1] for r in csv.reader(f)][1:]
    assert sorted(cells) == sorted(["<script>alert(1)</script>", '\'=HYPERLINK("http://x")', "a&b", "'@sum"])
    assert json.loads((tmp_path / "out" / "explain.json").read_text()) == json.loads(json.dumps(payload))
    assert payload["model"] == "<img src=x onerror=alert(1)>"  # the JSON keeps the value as it is
    assert payload["labels"] == [0] * 6 and set(payload["methods"]["ig"]["quality"]) >= {
        "deletion",
        "skipped",
    }


def test_out_must_be_a_folder(tmp_path, linear, rows):
    run = explain_batch(linear, rows, checks=())
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file; give a folder"):
        run.write(tmp_path / "file")
    assert run.quality == {} and list(run.explanations) == ["ig"]
    assert list(explain_batch(linear.as_score(), rows, checks=()).explanations) == ["occlusion"]
