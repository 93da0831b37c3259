"""dlsec assess --amp / --channels-last / --compile: the robust accuracy under bf16 stays close to
fp32's on the same campaign, and the options are refused where they cannot apply."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import assert_user_error, run

BC = ["-m", "zoo:breast-cancer-mlp", "-d", "builtin:breast-cancer"]
CAMPAIGN = """
threat_model: {access: white-box, norms: {linf: [0.05, 0.1]}}
attacks: [fgsm, pgd]
attack_params: {pgd: {steps: 10}}
examples: 60
masking_checks: false
corruptions: {enabled: false}
certification: {enabled: false}
explain: {enabled: false}
"""


def _curve(capsys, tmp_path: Path, name: str, *extra: str) -> list[float]:  # type: ignore[no-untyped-def]
    campaign = tmp_path / "c.yaml"
    campaign.write_text(CAMPAIGN)
    code, out, _ = run(
        capsys, "assess", *BC, "-c", str(campaign), "-o", str(tmp_path / name), "--json", *extra
    )
    assert code == 0, out
    report = json.loads((tmp_path / name / "report.json").read_text())
    return report["robustness"]["curves"]["linf"]["robust_accuracy"]


def test_bf16_robust_accuracy_is_close_to_fp32(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fp32 = _curve(capsys, tmp_path, "fp32")
    bf16 = _curve(capsys, tmp_path, "bf16", "--amp", "bf16", "--channels-last")
    assert len(bf16) == len(fp32) == 2
    assert max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)) <= 0.08  # bf16 keeps 8 bits of mantissa


def test_bad_speed_options_are_one_line_errors(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "assess", *BC, "-o", str(tmp_path / "x"), "--amp", "fp8")
    assert_user_error(code, err, "amp")
