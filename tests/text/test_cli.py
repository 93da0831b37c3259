"""dlsec text: exit codes and outputs."""

from __future__ import annotations

import json

import pytest

from dlsec.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "reviews.csv"
    rows = ["text,label"] + [
        f"{t},{y}"
        for t, y in [
            ("a good and moving film", "pos"),
            ("great acting and a fine story", "pos"),
            ("a dull and awful mess", "neg"),
            ("bad plot and bad actors", "neg"),
        ]
        * 15
    ]
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = root / "model"
    assert main(["text", "train", "--data", str(data), "--out", str(out), "--epochs", "30", "--json"]) == 0
    return data, out


def test_train_then_attack_writes_marked_examples(trained, tmp_path, capsys):
    data, model = trained
    capsys.readouterr()
    adv = tmp_path / "adv.jsonl"
    code = main(
        [
            "text",
            "attack",
            "--model",
            str(model),
            "--data",
            str(data),
            "--attack",
            "deepwordbug",
            "--max-change",
            "0.5",
            "--split",
            "all",
            "--n",
            "8",
            "--out",
            str(adv),
            "--json",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["summary"]["attack"] == "deepwordbug" and payload["summary"]["n"] == 8
    lines = [json.loads(line) for line in adv.read_text().splitlines()]
    assert len(lines) == 8
    won = [e for e in lines if e["success"] and e["attacked"]]
    assert all("[[" in e["marked"] for e in won)


def test_train_refuses_to_overwrite(trained):
    data, model = trained
    assert main(["text", "train", "--data", str(data), "--out", str(model)]) == 2


@pytest.mark.parametrize(
    "args",
    [
        ["--attack", "nope"],
        ["--max-change", "0"],
        ["--split", "middle"],
    ],
)
def test_bad_options_exit_2(trained, args, capsys):
    data, model = trained
    assert main(["text", "attack", "--model", str(model), "--data", str(data), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err and "Traceback" not in err


def test_non_utf8_data_exits_2_with_one_line(trained, tmp_path, capsys):
    _, model = trained
    bad = tmp_path / "bad.csv"
    bad.write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    assert main(["text", "attack", "--model", str(model), "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not UTF-8" in err and len(err.splitlines()) == 1


def test_check_exits_1_on_auto_map_and_0_on_a_clean_folder(trained, tmp_path, capsys):
    _, model = trained
    assert main(["text", "check", str(model)]) == 0
    capsys.readouterr()
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "x.Y"}}))
    assert main(["text", "check", str(evil), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["safe"] is False and "auto_map" in report["findings"][0]
    assert main(["text", "attack", "--model", str(evil), "--data", "builtin:rotten-tomatoes"]) == 2
