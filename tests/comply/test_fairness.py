"""Fairness: Fairlearn's metrics against hand counts, per-group robustness where the answer is
known, mitigation on the biased generator, and the CLI's exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dlsec.attacks import get_attack
from dlsec.cli import main
from dlsec.comply.fairness import fairness_metrics, fairness_report, load_groups, mitigate, protected_column
from dlsec.core import Dataset, InputSpec, WhiteBoxModel, load_dataset
from dlsec.errors import DataError

# --------------------------------------------------------------------------- Fairlearn's metrics

#            group a           group b
Y_TRUE = np.array([1, 1, 0, 0, 1, 0, 0, 0])
Y_PRED = np.array([1, 0, 0, 1, 1, 1, 1, 0])
GROUPS = np.array(["a"] * 4 + ["b"] * 4)


def test_metrics_match_hand_counts():
    m = fairness_metrics(Y_TRUE, Y_PRED, GROUPS)
    a, b = m["by_group"]["a"], m["by_group"]["b"]
    # a: predicted 1 on 2 of 4; positives (rows 0, 1) caught 1 of 2; negatives (2, 3) flagged 1 of 2
    assert a == {
        "count": 4,
        "accuracy": 0.5,
        "selection_rate": 0.5,
        "true_positive_rate": 0.5,
        "false_positive_rate": 0.5,
    }
    # b: predicted 1 on 3 of 4; the one positive caught; negatives (5, 6, 7) flagged 2 of 3
    assert b["count"] == 4 and b["accuracy"] == 0.5
    assert b["selection_rate"] == 0.75 and b["true_positive_rate"] == 1.0
    assert b["false_positive_rate"] == pytest.approx(2 / 3)
    assert m["selection_rate"] == pytest.approx(5 / 8)
    assert m["demographic_parity_difference"] == pytest.approx(0.25)  # 0.75 - 0.5
    assert m["demographic_parity_ratio"] == pytest.approx(2 / 3)  # 0.5 / 0.75
    # equalised odds: the larger of the TPR gap (1.0 - 0.5) and the FPR gap (2/3 - 1/2)
    assert m["equalized_odds_difference"] == pytest.approx(0.5)
    assert m["accuracy_gap"] == 0.0


def test_rates_count_one_class_as_positive_when_there_are_more():
    y = np.array([2, 0, 1, 2, 2, 1])
    pred = np.array([2, 2, 1, 0, 2, 2])
    g = np.array(["a", "a", "a", "b", "b", "b"])
    m = fairness_metrics(y, pred, g, positive=2)
    assert m["by_group"]["a"]["selection_rate"] == pytest.approx(2 / 3)
    assert m["by_group"]["b"]["selection_rate"] == pytest.approx(2 / 3)
    assert m["by_group"]["a"]["accuracy"] == pytest.approx(2 / 3)  # accuracy counts all classes
    assert m["by_group"]["b"]["true_positive_rate"] == 0.5
    assert m["demographic_parity_difference"] == 0.0


# --------------------------------------------------------------------------- the protected column


def _table(x: np.ndarray, y: np.ndarray, names: tuple[str, ...]) -> Dataset:
    spec = InputSpec(shape=(x.shape[1],), num_classes=2, kind="tabular", feature_names=names)
    return Dataset(x.astype(np.float32), y.astype(np.int64), spec, "table")


def test_protected_column_by_name_or_index_and_refusals():
    data = load_dataset("builtin:credit-bias")
    assert protected_column(data, "group") == 0
    assert protected_column(data, "0") == 0
    with pytest.raises(DataError, match="no column 'sex'.*group, income"):
        protected_column(data, "sex")
    with pytest.raises(DataError, match="distinct values"):
        protected_column(data, "income")
    with pytest.raises(DataError, match="tabular"):
        protected_column(load_dataset("builtin:digits"), "0")


# --------------------------------------------------------------------------- robustness per group


def test_robust_accuracy_per_group_where_the_answer_is_known():
    # class 1 iff x1 > 0.5 (logit difference 2*x1 - 1); column 0 is the group.
    layer = torch.nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, -1.0], [0.0, 1.0]]))
        layer.bias.copy_(torch.tensor([0.5, -0.5]))
    # group 0 sits 0.4 from the boundary, group 1 only 0.05: under eps 0.1 every group-1 row flips
    x = np.array([[0, 0.1], [0, 0.9], [0, 0.15], [0, 0.85], [1, 0.45], [1, 0.55], [1, 0.46], [1, 0.54]])
    y = (x[:, 1] > 0.5).astype(np.int64)
    data = _table(x, y, ("group", "x1"))
    model = WhiteBoxModel(layer, data.spec, device="cpu")
    report = fairness_report(model, data, protected="group", attack=get_attack("pgd", eps=0.1, steps=20))
    assert report.accuracy == 1.0
    assert report.groups["0"].robust_accuracy == 1.0 and report.groups["0"].attack_success == 0.0
    assert report.groups["1"].robust_accuracy == 0.0 and report.groups["1"].attack_success == 1.0
    assert report.robust_accuracy == 0.5
    assert report.robust_gap == 1.0 and report.robust_worst_group == "1"
    assert report.attack is not None and report.attack["immutable"] == ["group"]
    assert report.check(max_robust_gap=0.5) == ["robust-accuracy gap 1.000 > 0.5 (worst group 1)"]
    assert json.loads(json.dumps(report.to_dict()))["groups"]["1"]["robust_accuracy"] == 0.0


def test_groups_given_per_row_when_the_attribute_is_not_a_model_input(tmp_path):
    # one input (class 1 iff x > 0.5); the groups live beside the data, not in it
    spec = InputSpec(shape=(1,), num_classes=2, kind="tabular")
    layer = torch.nn.Linear(1, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        layer.bias.copy_(torch.tensor([0.5, -0.5]))
    x = np.array([[0.1], [0.9], [0.45], [0.55]], dtype=np.float32)
    data = Dataset(x, np.array([0, 1, 0, 1]), spec, "rows")
    (tmp_path / "g.txt").write_text("far\nfar\nnear\nnear\n")
    np.save(tmp_path / "g.npy", np.array([0, 0, 1, 1]))
    assert load_groups(tmp_path / "g.npy").tolist() == [0, 0, 1, 1]
    groups = load_groups(tmp_path / "g.txt")
    model = WhiteBoxModel(layer, spec, device="cpu")
    report = fairness_report(model, data, protected=groups, attack=get_attack("pgd", eps=0.1, steps=20))
    assert report.protected == "groups" and report.attack is not None and report.attack["immutable"] == []
    assert report.groups["far"].robust_accuracy == 1.0 and report.groups["near"].robust_accuracy == 0.0
    assert report.robust_worst_group == "near"
    with pytest.raises(DataError, match="3 group labels for 4 rows"):
        fairness_report(model, data, protected=groups[:3])
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="no group labels"):
        load_groups(tmp_path / "empty.txt")


def test_without_an_attack_there_are_no_robust_numbers_and_the_gate_says_so():
    data = _table(np.array([[0, 0.1], [1, 0.9]]), np.array([0, 1]), ("group", "x1"))
    model = WhiteBoxModel(torch.nn.Linear(2, 2), data.spec, device="cpu")
    report = fairness_report(model, data, protected="group")
    assert report.robust_gap is None and report.groups["0"].robust_accuracy is None
    assert report.check(max_robust_gap=0.1) == ["robust-accuracy gap not measured: run with an attack"]


# --------------------------------------------------------------------------- mitigation


@pytest.fixture(scope="module")
def credit() -> tuple[Dataset, Dataset, WhiteBoxModel]:
    """The biased generator's splits and a logistic regression fitted to its (biased) labels."""
    train, test = load_dataset("builtin:credit-bias").split(test_size=0.25, seed=0)
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 2)
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(layer(x), y).backward()
        opt.step()
    return train, test, WhiteBoxModel(layer, train.spec, device="cpu")


def test_the_generator_carries_its_injected_bias(credit):
    _, test, model = credit
    data = load_dataset("builtin:credit-bias")
    g = data.x[:, 0]
    assert 0.15 < data.y[g == 0].mean() - data.y[g == 1].mean() < 0.25  # approval 0.50 vs 0.31 expected
    report = fairness_report(model, test, protected="group")
    assert report.demographic_parity_difference > 0.15  # the model learnt the double standard
    assert report.groups["1"].selection_rate < report.groups["0"].selection_rate
    assert report.check(max_dp_diff=0.1)


@pytest.mark.parametrize("constraint", ["demographic_parity", "equalized_odds"])
def test_threshold_mitigation_reduces_the_gap_it_targets(credit, constraint):
    train, test, model = credit
    result = mitigate(model, train, test, protected="group", method="threshold", constraint=constraint)
    key = (
        "demographic_parity_difference" if constraint == "demographic_parity" else "equalized_odds_difference"
    )
    assert result.after[key] < result.before[key] / 2
    assert result.after["accuracy"] > result.before["accuracy"] - 0.05
    assert set(result.details["thresholds"]) == {"0", "1"}
    assert result.predict is not None
    np.testing.assert_array_equal(result.predict(test.x), result.predict(test.x))  # seeded


@pytest.mark.slow
def test_reduction_mitigation_reduces_the_demographic_parity_difference(credit):
    train, test, model = credit
    result = mitigate(model, train, test, protected="group", method="reduction", max_iter=15)
    assert result.after["demographic_parity_difference"] < result.before["demographic_parity_difference"] / 2
    assert result.details["predictors"] >= 1


# --------------------------------------------------------------------------- the CLI


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def credit_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("credit")
    code = main(["train", "--data", "builtin:credit-bias", "--epochs", "8", "--seed", "0", "--out", str(out)])
    assert code == 0
    return str(out)


CREDIT = ["--data", "builtin:credit-bias", "--protected", "group"]


def test_cli_reports_and_gates(capsys, credit_model, tmp_path):
    code, out, err = run(capsys, "fairness", "-m", credit_model, *CREDIT, "--max-dp-diff", "1", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert set(payload["groups"]) == {"0", "1"} and payload["gates"]["passed"]
    assert payload["data"] == "builtin:credit-bias" and payload["positive"] == "approve"
    dp = payload["demographic_parity_difference"]
    assert dp > 0.1  # trained on the double standard
    code, out, err = run(capsys, "fairness", "-m", credit_model, *CREDIT, "--out", str(tmp_path))
    assert code == 1, err
    assert "gate failed: demographic parity difference" in out
    written = json.loads((tmp_path / "fairness.json").read_text())
    assert written["gates"]["failed"] and written["demographic_parity_difference"] == pytest.approx(dp)


def test_cli_attack_and_mitigation(capsys, credit_model):
    args = ["-a", "pgd", "--eps", "0.05", "--mitigate", "threshold", "--max-dp-diff", "1", "--json"]
    code, out, err = run(capsys, "fairness", "-m", credit_model, *CREDIT, *args)
    assert code == 0, err
    payload = json.loads(out)
    assert payload["attack"]["eps"] == 0.05 and payload["robust_worst_group"] in ("0", "1")
    assert all(g["robust_accuracy"] <= g["accuracy"] for g in payload["groups"].values())
    mit = payload["mitigation"]
    assert mit["after"]["demographic_parity_difference"] < mit["before"]["demographic_parity_difference"]


def test_cli_groups_file_gives_the_numbers_of_the_column(capsys, credit_model, tmp_path):
    column = load_dataset("builtin:credit-bias").x[:, 0]
    labels = tmp_path / "groups.txt"
    labels.write_text("".join("minority\n" if v == 1 else "majority\n" for v in column))
    common = [
        "-m",
        credit_model,
        "-d",
        "builtin:credit-bias",
        "--mitigate",
        "threshold",
        "--max-dp-diff",
        "1",
    ]
    code, out, err = run(capsys, "fairness", *common, "--protected", "group", "--json")
    assert code == 0, err
    by_column = json.loads(out)
    code, out, err = run(capsys, "fairness", *common, "--groups", str(labels), "--json")
    assert code == 0, err
    by_file = json.loads(out)
    assert by_file["protected"] == "groups"
    # the test split's rows line up with their labels, for the report and for the mitigation
    assert by_file["groups"]["minority"] == by_column["groups"]["1"]
    assert by_file["groups"]["majority"] == by_column["groups"]["0"]
    before = by_file["mitigation"]["before"]
    assert (
        before["demographic_parity_difference"]
        == by_column["mitigation"]["before"]["demographic_parity_difference"]
    )
    assert before["groups"]["minority"] == by_column["mitigation"]["before"]["groups"]["1"]


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--protected", "sex"], "no column 'sex'"),
        (["--protected", "group", "--data", "builtin:breast-cancer"], "the model expects (5,)"),
        (["--protected", "group", "--mitigate", "magic"], "--mitigate must be threshold or reduction"),
        (["--protected", "group", "--positive", "maybe"], "--positive 'maybe' is not a class"),
        (["--protected", "group", "--eps", "0.1"], "--eps needs --attack"),
        ([], "--protected COLUMN or --groups FILE"),
        (["--protected", "group", "--groups", "g.txt"], "--protected COLUMN or --groups FILE"),
        (["--groups", "THREE"], "3 labels for 2000 rows"),
        (["--groups", "missing.txt"], "cannot read group labels"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(capsys, credit_model, extra, fragment, tmp_path):
    (tmp_path / "three.txt").write_text("a\nb\na\n")
    extra = [str(tmp_path / "three.txt") if a == "THREE" else a for a in extra]
    code, _, err = run(capsys, "fairness", "-m", credit_model, "--data", "builtin:credit-bias", *extra)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert fragment in lines[0] and "Traceback" not in err


def test_cli_saves_the_reduction_as_a_model_that_votes_with_the_mixture_weights(
    capsys, credit_model, tmp_path
):
    from dlsec.core.card import TrainingCard
    from dlsec.core.loading import load_model

    out = tmp_path / "fair"
    args = ["fairness", "-m", credit_model, *CREDIT, "--mitigate", "reduction", "--max-iter", "5"]
    code, stdout, err = run(capsys, *args, "--max-dp-diff", "1", "--save-model", str(out), "--json")
    assert code == 0, err
    mitigation = json.loads(stdout)["mitigation"]
    assert mitigation["saved"] == str(out)
    saved = load_model(str(out / "model.safetensors"), device="cpu")
    ensemble = saved.module
    weights = ensemble.weights
    assert abs(sum(weights) - 1.0) < 1e-9 and len(weights) == mitigation["details"]["predictors_used"]
    _, test = load_dataset("builtin:credit-bias").split(test_size=0.25, seed=0)
    x = torch.from_numpy(test.x[:50])
    # the saved model's probability of a class is the mixture's weight on members choosing it
    with torch.no_grad():
        norm = (x - saved._norm[0]) / saved._norm[1] if saved._norm is not None else x
        chosen = torch.stack([m(norm).argmax(1) for m in ensemble.members])  # (K, N)
    expected = sum(w * (chosen[i] == 1).double() for i, w in enumerate(weights))
    got = saved.probs(x)[:, 1].double()
    assert torch.allclose(got, (expected + 1e-3) / (1 + 2e-3), atol=1e-5)
    card = TrainingCard.read(out / "model.json")
    assert card["recipe"] == "fair-reduction" and card["fairness_mitigation"]["method"] == "reduction"
    # refused: saving a threshold optimiser (randomised per group, not one network)
    code, _, err = run(
        capsys,
        "fairness",
        "-m",
        credit_model,
        *CREDIT,
        "--mitigate",
        "threshold",
        "--save-model",
        str(tmp_path / "t"),
    )
    assert code == 2 and "--mitigate reduction" in err
