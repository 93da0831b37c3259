"""Assessment units on Ray: the same report as a local run, a killed worker's unit reruns,
sharded units merge into the unsharded summary, and bad addresses are one-line errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from dlsec.assess import LocalEngine, RayEngine, run_assessment
from dlsec.assess._engine import Shared, UnitTask
from dlsec.assess.campaign import Campaign
from dlsec.assess.runner import _merge_shards, _shards
from dlsec.attacks import ATTACKS, FGSM
from dlsec.core import load_dataset, load_model
from dlsec.errors import UsageError
from tests.cli.test_cli import assert_user_error, run

MODEL = "zoo:breast-cancer-mlp"


def _campaign(**extra: Any) -> Campaign:
    return Campaign.model_validate(
        {
            "threat_model": {"access": "white-box", "norms": {"linf": [0.02, 0.05]}},
            "attacks": extra.pop("attacks", ["fgsm", "pgd"]),
            "attack_params": {"pgd": {"steps": 5}},
            "examples": 40,
            "masking_checks": False,
            "corruptions": {"enabled": False},
            "certification": {"enabled": False},
            "explain": {"enabled": False},
            **extra,
        }
    )


def _assess(out: Path, campaign: Campaign, engine: Any = None) -> dict[str, Any]:
    model = load_model(MODEL, device="cpu")
    _, test = load_dataset("builtin:breast-cancer").split(test_size=0.25, seed=0)
    result = run_assessment(model, test, campaign, out, model_ref=MODEL, model_sha256="x", engine=engine)
    return result.report


def test_shards_cover_the_rows_once() -> None:
    assert _shards(10, None) == [(0, 10)] and _shards(10, 10) == [(0, 10)] and _shards(10, 50) == [(0, 10)]
    assert _shards(10, 4) == [(0, 4), (4, 8), (8, 10)]


def test_a_sharded_deterministic_attack_merges_into_the_unsharded_result(tmp_path: Path) -> None:
    """FGSM treats each row alone: shards of 7 rows must give exactly the one-unit numbers."""
    whole = _assess(tmp_path / "whole", _campaign(attacks=["fgsm"]))
    sharded = _assess(tmp_path / "sharded", _campaign(attacks=["fgsm"], shard_size=7))
    assert sharded["robustness"]["curves"] == whole["robustness"]["curves"]
    units = tmp_path / "sharded" / ".dlsec-units"
    assert sorted(p.name for p in units.glob("evasion-linf-0.02-fgsm-shard*.json")) == [
        f"evasion-linf-0.02-fgsm-shard{i}.json"
        for i in range(6)  # 40 rows in shards of 7
    ]
    merged = json.loads((units / "evasion-linf-0.02-fgsm.json").read_text())["summary"]
    alone = json.loads((tmp_path / "whole" / ".dlsec-units" / "evasion-linf-0.02-fgsm.json").read_text())
    for k in ("n", "clean_accuracy", "robust_accuracy", "success_rate", "queries", "perturbation_norms"):
        assert merged[k] == pytest.approx(alone["summary"][k]), k
    assert merged["shards"] == 6


def test_merge_shards_by_hand() -> None:
    def part(
        robust: list[bool], success: list[bool], correct: list[bool], norms: list[float]
    ) -> dict[str, Any]:
        summary = {"attack": "x", "queries": 10 * len(robust), "skipped": {}}
        return {
            "robust": robust,
            "summary": summary,
            "adv_pred": [0] * len(robust),
            "success": success,
            "clean_correct": correct,
            "norms": norms,
            "clean_rate": None,
        }

    merged = _merge_shards(
        [part([True, False], [False, True], [True, True], [0.0, 0.3]), part([False], [True], [False], [0.9])]
    )
    s = merged["summary"]
    assert merged["robust"] == [True, False, False] and s["n"] == 3 and s["queries"] == 30
    assert s["robust_accuracy"] == pytest.approx(1 / 3) and s["clean_accuracy"] == pytest.approx(2 / 3)
    assert s["success_rate"] == pytest.approx(0.5)  # of the two clean-correct rows, one fooled
    assert s["perturbation_norms"] == {
        "mean": 0.3,
        "median": 0.3,
        "max": 0.3,
    }  # the wrong row's 0.9 is not counted


@pytest.fixture(scope="module")
def ray_local():
    engine = RayEngine(workers=2)
    yield engine
    engine.shutdown()


def test_ray_gives_the_same_report_as_a_local_run(tmp_path: Path, ray_local: RayEngine) -> None:
    campaign = _campaign(shard_size=20)
    local = _assess(tmp_path / "local", campaign)
    remote = _assess(tmp_path / "ray", campaign, engine=ray_local)
    assert remote["robustness"] == local["robustness"]
    assert remote["verdict"] == local["verdict"] and remote["findings"] == local["findings"]
    # resumed: every unit is read back, none recomputed (an engine that must not be called)

    class Refuse(LocalEngine):
        def run(self, tasks):  # type: ignore[no-untyped-def]
            assert not tasks, [t.key for t in tasks]
            return iter(())

    again = _assess(tmp_path / "ray", campaign, engine=Refuse())
    assert again["robustness"] == local["robustness"]
    assert again["reproducibility"]["units_reused"] > 0


class _DiesOnce(FGSM):
    """FGSM whose first call kills its worker process (a crash, not an exception)."""

    def __init__(self, *, marker: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.marker = marker

    def __call__(self, model, x, y, **kw):  # type: ignore[no-untyped-def]
        if self.marker and not os.path.exists(self.marker):
            Path(self.marker).write_text("died")
            os._exit(1)
        return super().__call__(model, x, y, **kw)


def test_a_killed_worker_reruns_its_unit_and_the_report_is_unchanged(
    tmp_path: Path, ray_local: RayEngine
) -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(__import__(__name__, fromlist=["_"]))
    marker = tmp_path / "died"
    campaign = _campaign(attacks=["fgsm"])
    dying = _campaign(attacks=["test-dies-once"], attack_params={"test-dies-once": {"marker": str(marker)}})
    expected = _assess(tmp_path / "local", campaign)
    ATTACKS["test-dies-once"] = _DiesOnce  # registered for this test only
    try:
        report = _assess(tmp_path / "ray", dying, engine=ray_local)
    finally:
        del ATTACKS["test-dies-once"]
    assert marker.read_text() == "died"  # a worker did die
    got = report["robustness"]["curves"]["linf"]
    assert got["robust_accuracy"] == expected["robustness"]["curves"]["linf"]["robust_accuracy"]


def test_ray_runs_shared_arguments_once_and_unit_errors_surface(ray_local: RayEngine) -> None:
    big = Shared(torch.arange(6.0))
    tasks = [UnitTask(f"u{i}", _sum_slice, (big, i)) for i in range(3)]
    assert dict(ray_local.run(tasks)) == {"u0": {"s": 15.0}, "u1": {"s": 15.0}, "u2": {"s": 14.0}}
    with pytest.raises(ValueError, match="bad unit"):
        list(ray_local.run([UnitTask("bad", _fail, ())]))


def _sum_slice(t: torch.Tensor, i: int) -> dict[str, Any]:
    return {"s": float(t[i:].sum())}


def _fail() -> dict[str, Any]:
    raise ValueError("bad unit")


def test_an_unreachable_address_is_a_one_line_error() -> None:
    with pytest.raises(UsageError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
        RayEngine(address="127.0.0.1:9")
    with pytest.raises(UsageError, match="give host:port"):
        RayEngine(address="nonsense")


def test_cli_refuses_workers_without_ray(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(
        capsys, "assess", "-m", MODEL, "-d", "builtin:breast-cancer", "-o", str(tmp_path), "--workers", "2"
    )
    assert_user_error(code, err, "--workers and --gpus-per-unit apply with --ray")
    code, _, err = run(
        capsys,
        "assess",
        "-m",
        MODEL,
        "-d",
        "builtin:breast-cancer",
        "-o",
        str(tmp_path),
        "--ray",
        "127.0.0.1:9",
    )
    assert_user_error(code, err, "cannot reach the Ray cluster")


def test_reference_models_trained_on_ray_equal_those_trained_here(ray_local: RayEngine) -> None:
    import numpy as np

    from dlsec.attacks.privacy import ShadowTrainer, half_inclusion
    from dlsec.core.trainconfig import TrainConfig

    data = load_dataset("builtin:breast-cancer").subset(np.arange(120))
    inclusion = half_inclusion(4, len(data), seed=0)

    def trainer(runner: Any = None) -> ShadowTrainer:
        return ShadowTrainer(
            arch="mlp",
            arch_kwargs={"in_features": 30, "num_classes": 2},
            config=TrainConfig(epochs=3, batch_size=16),
            group_size=2,
            device="cpu",
            runner=runner,
        )

    here = trainer().train(data, inclusion).logits(data.x)
    on_ray = trainer(ray_local.starmap).train(data, inclusion).logits(data.x)
    assert here.shape == (4, 120, 2)
    assert torch.equal(on_ray, here)


def test_the_training_set_audit_folds_on_ray_equal_those_trained_here(ray_local: RayEngine) -> None:
    import numpy as np

    from dlsec.defend import DataAuditor

    data = load_dataset("builtin:breast-cancer").subset(np.arange(160))
    here = DataAuditor(epochs=3, folds=3, seed=0).audit(data)
    on_ray = DataAuditor(epochs=3, folds=3, seed=0, runner=ray_local.starmap).audit(data)
    assert np.array_equal(on_ray.signals["label_noise"], here.signals["label_noise"])
    assert np.array_equal(on_ray.flagged, here.flagged)
