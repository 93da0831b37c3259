"""``run_demo``: the demo's orchestration in the library, its stages reported through a callback.

The whole demo runs end to end in ``tests/cli/test_cli.py``; here the assessment and the gateway
scenario are stand-ins, so the test checks the order of the stages and what is shipped.
"""

import json
from contextlib import contextmanager

import pytest

import dlsec.assess
import dlsec.respond.demo as demo
from dlsec.assess import Assessment
from dlsec.comply.evidence import FRAMEWORKS, load_framework
from dlsec.errors import UsageError
from dlsec.respond.demo import run_demo


def test_demo_stages_report_progress_and_ship_what_passed(tmp_path, monkeypatch):
    seen: list[tuple[str, tuple[int, int]]] = []
    opened: list[str] = []

    @contextmanager
    def stage(description):
        opened.append(description)
        yield lambda done, total, stats: seen.append((description, (done, total)))

    def assess(model, data, plan, out, *, progress, model_sha256, model_file, **_):
        assert plan.examples == 12 and len(data) == 450 and model_file.name == "model.safetensors"
        progress(1, 1, {})
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps({"gates": [], "passed": True}))
        return Assessment(report={"model": {"sha256": model_sha256}}, gates=[])

    served = []
    generated = []

    def generative(out, *, stage, **kwargs):
        with stage("generative: stand-in"):
            generated.append((out, kwargs))
        return {"generated": True}

    monkeypatch.setattr(dlsec.assess, "run_assessment", assess)
    monkeypatch.setattr(demo, "gateway_demo", lambda *a, **k: served.append(a) or {"served": a[1]})
    monkeypatch.setattr(demo, "generative_demo", generative)
    result = run_demo(tmp_path / "out", examples=12, stage=stage)
    assert opened == [
        "training zoo:digits-cnn (first use only)",
        "assessing",
        "serving: a client and an extraction attacker",
        "compliance evidence: model card, ML-BOM, six control maps",
        "generative: stand-in",
    ]
    # The generative step signs with the demo's throwaway keys, next to the release.
    assert generated == [
        (tmp_path / "out" / "generative", {"home": None, "keys_home": tmp_path / "out" / "release"})
    ]
    assert result.generative == {"generated": True}
    assert ("assessing", (1, 1)) in seen
    assert result.assessment.passed and result.release is not None
    assert result.release["ref"] == "digits-cnn@1" and result.release["audit"]["ok"]
    assert result.release["gateway"] == {"served": "digits-cnn"}
    assert served and served[0][0] == tmp_path / "out" / "release"
    # Then maps the shipped version to every framework: checked evidence, the rest named as gaps.
    comply = result.release["comply"]
    total = sum(len(load_framework(f).controls) for f in FRAMEWORKS)
    assert comply["controls"] == total and comply["failing"] == 0 and 0 < comply["gaps"] < total
    written = json.loads((tmp_path / "out" / "comply" / "compliance.json").read_text())
    states = {i["kind"]: i["state"] for i in written["evidence"]["items"]}
    assert states["signature"] == states["scan"] == states["audit-log"] == states["assessment"] == "ok"
    assert (tmp_path / "out" / "comply" / "bom.cdx.json").is_file()


def test_demo_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(UsageError, match="zoo model"):
        run_demo(tmp_path, model="model.safetensors")
    with pytest.raises(UsageError, match="--examples must be positive"):
        run_demo(tmp_path, examples=0)
