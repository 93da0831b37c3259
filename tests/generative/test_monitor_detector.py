"""The synthetic-image detector as a monitor detector (issue 19): ``detector: synthetic-image``.

spectrum-gan (the shipped recipe, trained once in the session's home with zoo-gan) scores the
windows. Windows of zoo-gan's and zoo-vae's outputs against real digits fire; real against real
does not, and over many exchangeable splits it fires at most about alpha of the time (the test
is Fisher's exact test, checked against SciPy's). The name reaches the registry through the
``dlsec.monitor_detectors`` entry point; the tests that do not run in a fresh interpreter stand
in for the installed metadata with the same entry point, so the loading path is the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint, EntryPoints, entry_points
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import dlsec.monitor._base as monitor_base
from dlsec.errors import UsageError
from dlsec.generative import SyntheticImageDetector, load_generator, real_digits, window_images
from dlsec.monitor import (
    DETECTORS,
    CannotRun,
    MonitorConfig,
    MonitorConfigError,
    Window,
    build_monitor,
    check,
    load_monitor_config,
)
from tests.cli.test_cli import assert_user_error, run

GROUP = "dlsec.monitor_detectors"
VALUE = "dlsec.generative:SyntheticImageDetector"


@pytest.fixture
def via_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry as a fresh process sees it: synthetic-image declared, not yet imported."""
    declared = EntryPoints([EntryPoint("synthetic-image", VALUE, GROUP)])
    monkeypatch.setattr(monitor_base, "entry_points", lambda **kw: declared.select(**kw))
    monkeypatch.delitem(DETECTORS, "synthetic-image")


@pytest.fixture(scope="module")
def real() -> np.ndarray:
    """The real test digits (never seen by the detector), (N, 1, 8, 8)."""
    return real_digits("test")[:, None]


@pytest.fixture(scope="module")
def fitted(real: np.ndarray) -> SyntheticImageDetector:
    """spectrum-gan fitted on 250 real digits (trains zoo-gan and the detector on first use)."""
    order = np.random.default_rng(0).permutation(len(real))
    det = SyntheticImageDetector(detector="spectrum-gan")
    det.fit(Window(x=real[order[:250]]))
    return det


def _generated(name: str, n: int, seed: int) -> np.ndarray:
    return load_generator(name).sample(n, seed=seed)[:, None]


# --------------------------------------------------------------------------- the detector


def test_generated_windows_fire_and_real_windows_do_not(
    fitted: SyntheticImageDetector, real: np.ndarray
) -> None:
    held_out = real[np.random.default_rng(0).permutation(len(real))[250:]]
    calm = fitted.score(Window(x=held_out))
    assert not calm.drift and calm.p_value is not None and calm.p_value > 0.05
    assert calm.details["reference_rate"] <= 0.05  # the threshold is calibrated at 1% on real digits
    seen = fitted.score(Window(x=_generated("zoo-gan", 150, seed=11)))
    assert seen.drift and seen.p_value is not None and seen.p_value < 1e-10
    assert seen.statistic >= 0.5 and seen.details["n"] == 150  # most of its trained-on generator flagged
    unseen = fitted.score(Window(x=_generated("zoo-vae", 150, seed=11)))  # the generator it never saw
    assert unseen.drift and unseen.statistic > 3 * unseen.details["reference_rate"]


def test_p_value_is_fishers_exact_test(fitted: SyntheticImageDetector) -> None:
    res = fitted.score(Window(x=_generated("zoo-gan", 40, seed=3)))
    k, n = res.details["flagged"], res.details["n"]
    k_ref, n_ref = res.details["reference_flagged"], res.details["reference_n"]
    expected = stats.fisher_exact([[k, n - k], [k_ref, n_ref - k_ref]], alternative="greater").pvalue
    assert res.p_value == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert res.statistic == k / n


def test_false_alarms_stay_at_alpha_on_exchangeable_real_splits(real: np.ndarray) -> None:
    """300 seeded splits of the real digits: Fisher's test rejects at most alpha (plus noise)."""
    rng = np.random.default_rng(7)
    fired = 0
    for _ in range(300):
        order = rng.permutation(len(real))
        det = SyntheticImageDetector().fit(Window(x=real[order[:250]]))
        fired += det.score(Window(x=real[order[250:]])).drift
    assert fired / 300 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300)


def test_windows_that_are_not_images_cannot_run() -> None:
    with pytest.raises(CannotRun, match=r"reads images .* not inputs of shape \(30,\)"):
        window_images(np.zeros((5, 30), dtype=np.float32))
    report = check(
        MonitorConfig.model_validate({"rules": [{"detector": "ks"}, {"detector": "synthetic-image"}]}),
        Window(x=np.random.default_rng(0).normal(size=(100, 30))),
        Window(x=np.random.default_rng(1).normal(size=(60, 30))),
    )
    assert report.verdict == "partial"
    assert [n["check"] for n in report.not_run] == ["synthetic-image"]
    with pytest.raises(UsageError, match="non-finite"):
        window_images(np.full((2, 1, 8, 8), np.nan, dtype=np.float32))


def test_rgb_windows_are_read_as_their_luminance(fitted: SyntheticImageDetector) -> None:
    grey = _generated("zoo-gan", 20, seed=5)
    rgb = np.repeat(grey, 3, axis=1)  # (N, 3, 8, 8): the same image in every channel
    assert np.array_equal(fitted._flags(Window(x=rgb)), fitted._flags(Window(x=grey)))


def test_bad_settings_are_refused_before_fitting() -> None:
    with pytest.raises(UsageError, match="unknown detector 'spectrum-x'"):
        SyntheticImageDetector(detector="spectrum-x").fit(np.zeros((4, 1, 8, 8), dtype=np.float32))


# --------------------------------------------------------------------------- monitor.yaml


def _yaml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{detector: spectrum-x}", "synthetic-image: unknown detector 'spectrum-x'; built-in: spectrum-gan"),
        ("{threshold: high}", "threshold must be a finite number"),
        ("{alpha: 2}", "alpha must be between 0 and 1"),
        (
            "{fpr: 0.01}",
            "unknown setting 'fpr' for synthetic-image (known: detector, threshold, alpha, home)",
        ),
    ],
)
def test_config_errors_name_the_line_and_the_setting(
    via_entry_point: None, tmp_path: Path, params: str, message: str
) -> None:
    path = _yaml(
        tmp_path,
        f"""\
        version: 1
        rules:
          - {{detector: ks}}
          - {{name: generated, detector: synthetic-image, params: {params}}}
        """,
    )
    with pytest.raises(MonitorConfigError) as err:
        load_monitor_config(path)
    text = str(err.value)
    assert "\n" not in text and "monitor.yaml:4" in text and "rules.1.params" in text and message in text


def test_the_name_resolves_through_the_entry_point(via_entry_point: None, tmp_path: Path) -> None:
    assert "synthetic-image" not in DETECTORS
    cfg = load_monitor_config(
        _yaml(tmp_path, "rules:\n  - {detector: synthetic-image, params: {detector: spectrum-gan}}\n")
    )
    assert DETECTORS["synthetic-image"] is SyntheticImageDetector
    assert cfg.rules[0].params == {"detector": "spectrum-gan"}


def test_a_plugin_that_fails_to_import_fails_closed(
    via_entry_point: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "dlsec.generative", None)  # importing it raises ImportError
    path = _yaml(tmp_path, "rules:\n  - {detector: synthetic-image}\n")
    with pytest.raises(
        MonitorConfigError, match=r"'synthetic-image' \(entry point dlsec.generative:.*failed to load"
    ):
        load_monitor_config(path)
    code, _, err = run(
        capsys, "monitor", "check", "-r", "builtin:digits", "-c", "builtin:digits", "--config", str(path)
    )
    assert_user_error(code, err, "failed to load")


def test_check_holm_adjusts_it_with_the_other_detectors(
    fitted: SyntheticImageDetector, real: np.ndarray
) -> None:
    cfg = MonitorConfig.model_validate(
        {
            "rules": [
                {"detector": "ks", "params": {"correction": "fdr"}},
                {"name": "gen", "detector": "synthetic-image"},
            ]
        }
    )
    report = check(cfg, Window(x=real[:250]), Window(x=_generated("zoo-gan", 100, seed=8)))
    entry = next(d for d in report.results if d["name"] == "synthetic-image")
    assert entry["p_adjusted"] >= entry["p_value"] and entry["drift"]
    assert entry["alpha_share"] == pytest.approx(0.025)
    assert next(r for r in report.rules if r["name"] == "gen")["fired"]


def test_online_rule_alerts_on_generated_traffic_only(real: np.ndarray) -> None:
    cfg = MonitorConfig.model_validate(
        {
            "window": 100,
            "stride": 50,
            "ert": 5000,
            "rules": [{"name": "generated images", "severity": "high", "detector": "synthetic-image"}],
        }
    )
    monitor = build_monitor(cfg).fit(Window(x=real))
    train = real_digits("train")[:400, None]
    assert [a for i in range(0, 400, 50) for a in monitor.update(train[i : i + 50])] == []
    fake = _generated("zoo-gan", 200, seed=5)
    alerts = [a for i in range(0, 200, 50) for a in monitor.update(fake[i : i + 50])]
    assert alerts and alerts[0].rule == "generated images" and alerts[0].severity == "high"


# --------------------------------------------------------------------------- the CLI


def _npz(path: Path, x: np.ndarray) -> str:
    np.savez(path, x=x.astype(np.float32), y=np.zeros(len(x), dtype=np.int64))
    return str(path)


def test_cli_monitor_check_fires_on_generated_digits_only(
    via_entry_point: None, real: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _yaml(
        tmp_path,
        """\
        version: 1
        rules:
          - name: generated images
            severity: high
            detector: synthetic-image
            params: {detector: spectrum-gan}
        """,
    )
    order = np.random.default_rng(1).permutation(len(real))
    ref = _npz(tmp_path / "ref.npz", real[order[:250]])
    same = _npz(tmp_path / "same.npz", real[order[250:]])
    fake = _npz(tmp_path / "fake.npz", _generated("zoo-gan", 120, seed=21)[:, 0][:, None])
    code, out, err = run(capsys, "monitor", "check", "-r", ref, "-c", same, "--config", str(config), "--json")
    assert code == 0, err
    calm = json.loads(out)
    assert calm["verdict"] == "pass" and calm["detectors"][0]["name"] == "synthetic-image"
    code, out, err = run(capsys, "monitor", "check", "-r", ref, "-c", fake, "--config", str(config), "--json")
    assert code == 1, err
    fired = json.loads(out)
    assert fired["verdict"] == "fail" and fired["rules"][0]["fired"]
    assert fired["detectors"][0]["details"]["flagged"] >= 60


def _declare(folder: Path) -> dict[str, str]:
    """An environment whose ``sys.path`` has a distribution declaring the entry point, as pyproject does."""
    info = folder / "dlsec_monitor_plugin-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dlsec-monitor-plugin\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\nsynthetic-image = {VALUE}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), *sys.path])}


def test_cli_in_a_fresh_interpreter_resolves_the_declared_name(real: np.ndarray, tmp_path: Path) -> None:
    """No test import registers it there: only the entry point can (as for ``dlsec`` and the worker)."""
    config = _yaml(tmp_path, "rules:\n  - {name: generated images, detector: synthetic-image}\n")
    ref = _npz(tmp_path / "ref.npz", real[:200])
    fake = _npz(tmp_path / "fake.npz", _generated("zoo-gan", 80, seed=2))
    argv = ["monitor", "check", "-r", ref, "-c", fake, "--config", str(config), "--json"]
    code = f"import sys; from dlsec.cli import main; sys.exit(main({argv!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_declare(tmp_path), timeout=300
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["rules"][0]["fired"]


def test_installed_entry_point_resolves_in_a_fresh_interpreter(tmp_path: Path) -> None:
    if not [ep for ep in entry_points(group=GROUP, name="synthetic-image")]:
        pytest.skip(f"dlsec's installed metadata lacks [project.entry-points.{GROUP!r}] synthetic-image")
    path = _yaml(tmp_path, "rules:\n  - {detector: synthetic-image}\n")
    code = (
        "from dlsec.monitor import load_monitor_config, DETECTORS;"
        f"load_monitor_config({str(path)!r}); print(DETECTORS['synthetic-image'].__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "dlsec.generative._monitor"
