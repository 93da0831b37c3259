"""Monitoring detectors, side by side with alibi-detect: drift power, p-values, speed, attack AUC.

On ``builtin:digits`` (the zoo model's train split as the reference, windows drawn from the
held-out test split) the benchmark makes four shifts (Gaussian noise, blur, a class-prior
change, an unseen pattern on part of the rows) and measures, at the same significance level:

* detection power of dlsec's KS and MMD detectors and of alibi-detect's ``KSDrift`` and
  ``MMDDrift`` (PyTorch backend), and their false-alarm rates on unshifted windows;
* agreement of the p-values on the same windows (KS: same asymptotic method; MMD: same
  kernel and bandwidth, permutation noise only);
* the time of one MMD permutation test at the same sizes (ratio alibi / dlsec);
* the false-alarm rate of ``dlsec monitor check`` as a whole (its default rules and nine
  detectors on zoo:digits-cnn) over same-distribution splits (two random halves of the test
  split), and its power on each shift, with each detector deciding alone (uncorrected, the
  behaviour before Holm), with Holm's correction at equal weights and with the default
  config's weighted Holm (what the check does now), at the same alpha;
* the AUC of feature squeezing and Mahalanobis detection against dlsec's PGD (white-box) and
  Square (score-based) attacks at L-inf 0.1, and against an adaptive PGD that also lowers the
  detector's score (the honest number).

alibi-detect is BSL-licensed: it comes from ``make bench-setup`` only, never as a dependency.

    python benchmarks/monitor.py            # full run
    python benchmarks/monitor.py --quick    # fewer windows and examples
    python benchmarks/monitor.py --only alarms   # just the whole-check false alarms and power
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from dlsec.attacks import get_attack
from dlsec.core import Dataset, WhiteBoxModel, load_dataset
from dlsec.monitor import (
    FeatureSqueezing,
    KSDrift,
    Mahalanobis,
    MMDDrift,
    check,
    default_monitor_config,
    holm_adjust,
    make_window,
    shift_dataset,
)
from dlsec.monitor._base import ExampleDetector
from dlsec.monitor.drift import median_heuristic_gamma, mmd2_permutation_test
from dlsec.zoo import load_zoo_model

ALPHA = 0.05
SHIFTS = [  # (label, kind, severity, fraction): mild enough that power is not 1 everywhere
    ("gaussian noise (sev. 1)", "noise", 1, 1.0),
    ("blur (sev. 1)", "blur", 1, 1.0),
    ("class prior (sev. 2)", "prior", 2, 1.0),
    ("unseen pattern (20% of rows)", "pattern", 3, 0.2),
]


def _alibi() -> Any:
    try:
        import alibi_detect.cd as cd
    except ImportError as exc:  # reported, never silently skipped
        print(f"alibi-detect not available ({exc}); run `make bench-setup`")
        return None
    return cd


def drift_power(
    ref: np.ndarray, test: Dataset, *, windows: int, size: int, perms: int
) -> list[dict[str, Any]]:
    """Detection rate over random windows of the test split, unshifted and shifted."""
    cd = _alibi()
    flat_ref = ref.reshape(len(ref), -1)
    ours = {
        "dlsec KS (Bonferroni)": KSDrift(alpha=ALPHA, method="asymp").fit(ref),
        "dlsec MMD": MMDDrift(alpha=ALPHA, n_permutations=perms, max_reference=None, device="cpu").fit(ref),
    }
    peers: dict[str, Any] = {}
    if cd is not None:
        peers["alibi-detect KSDrift"] = cd.KSDrift(flat_ref, p_val=ALPHA, correction="bonferroni")
        peers["alibi-detect MMDDrift (torch)"] = cd.MMDDrift(
            flat_ref, backend="pytorch", p_val=ALPHA, n_permutations=perms, device="cpu"
        )
    rows = []
    cases = [("none (false alarms)", test)] + [
        (label, shift_dataset(test, kind, severity=sev, fraction=frac, seed=1))
        for label, kind, sev, frac in SHIFTS
    ]
    for label, data in cases:
        rng = np.random.default_rng(0)
        hits: dict[str, list[bool]] = {k: [] for k in [*ours, *peers]}
        p_ks, p_mmd = [], []
        for _ in range(windows):
            w = data.x[rng.choice(len(data), size, replace=False)]
            res = {name: det.score(w) for name, det in ours.items()}
            for name, r in res.items():
                hits[name].append(r.drift)
            for name, det in peers.items():
                out = det.predict(w.reshape(size, -1))["data"]
                hits[name].append(bool(out["is_drift"]))
                if "KS" in name:
                    p_ks.append(
                        np.max(
                            np.abs(
                                np.asarray(out["p_val"]) - res["dlsec KS (Bonferroni)"].details["p_values"]
                            )
                        )
                    )
                else:
                    p_mmd.append(abs(float(out["p_val"]) - float(res["dlsec MMD"].p_value or 0)))
        rows.append(
            {
                "shift": label,
                **{name: float(np.mean(v)) for name, v in hits.items()},
                "KS p-value max diff": max(p_ks) if p_ks else None,
                "MMD p-value mean diff": float(np.mean(p_mmd)) if p_mmd else None,
            }
        )
        print(rows[-1], flush=True)
    return rows


def mmd_speed(sizes: list[tuple[int, int]], *, perms: int, repeats: int) -> list[dict[str, Any]]:
    """Median time of one MMD permutation test (same data, bandwidth and permutations)."""
    cd = _alibi()
    rows = []
    rng = np.random.default_rng(0)
    for n_ref, n_cur in sizes:
        x = rng.normal(size=(n_ref, 64)).astype(np.float32)
        y = rng.normal(0.05, 1.0, size=(n_cur, 64)).astype(np.float32)
        ours = MMDDrift(n_permutations=perms, max_reference=None, device="cpu").fit(x)
        peer = (
            cd.MMDDrift(x, backend="pytorch", n_permutations=perms, device="cpu") if cd is not None else None
        )
        t_ours, t_peer = [], []
        for _ in range(repeats):  # interleaved
            start = time.perf_counter()
            ours.score(y)
            t_ours.append(time.perf_counter() - start)
            if peer is not None:
                start = time.perf_counter()
                peer.score(y)
                t_peer.append(time.perf_counter() - start)
        a, b = statistics.median(t_ours), statistics.median(t_peer) if t_peer else None
        rows.append(
            {
                "sizes": f"{n_ref} x {n_cur}",
                "dlsec (s)": a,
                "alibi (s)": b,
                "alibi / dlsec": b / a if b else None,
            }
        )
        print(rows[-1], flush=True)
    return rows


def adaptive_pgd(
    model: WhiteBoxModel,
    detector: ExampleDetector,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    weights: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0),
) -> torch.Tensor:
    """PGD that fools the model *and* keeps the detector's score low (Carlini & Wagner 2017 style).

    Per example the loss is ``CE(model(x), y) * [not yet fooled] - w * relu(score(x) - thr/2) / thr``:
    while the example is still classified correctly it climbs the cross-entropy, penalised for
    a detector score above half the threshold; once fooled it only pushes the score down. The
    detector's score is differentiated directly (feature squeezing's rounding passes gradients
    straight through, as in BPDA). Over the weights ``w`` the attack keeps, per example, the
    iterate that fools the model with the lowest detector score.
    """
    thr = max(detector.threshold_, 1e-6)
    best = x.clone()
    best_score = torch.full((len(x),), float("inf"))
    step = 2.5 * eps / steps
    for w in weights:
        xa = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        for _ in range(steps):
            xa.requires_grad_(True)
            logits = model(xa)
            score = detector._score_torch(xa)
            not_fooled = (logits.argmax(1) == y).float().detach()
            ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
            loss = (ce * not_fooled - w * torch.relu(score - thr / 2) / thr).sum()
            (grad,) = torch.autograd.grad(loss, xa)
            with torch.no_grad():
                xa = torch.min(torch.max(xa + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
                fooled = model(xa).argmax(1) != y
                s = detector._score_torch(xa).cpu()
                better = fooled.cpu() & (s < best_score)
                best[better] = xa[better]
                best_score[better] = s[better]
    return best


def adversarial_auc(train: Dataset, test: Dataset, *, n: int, steps: int) -> list[dict[str, Any]]:
    """AUC of clean vs successful adversarial examples, and detection rate at the threshold."""
    model = load_zoo_model("digits-cnn")
    half = len(test) // 2
    test = test.subset(np.random.default_rng(0).permutation(len(test)))  # rows are grouped by writer
    cal, ev = test.x[:half], test.subset(np.arange(half, min(len(test), half + n)))
    x, y = torch.from_numpy(ev.x), torch.from_numpy(ev.y)
    detectors: dict[str, Callable[[], ExampleDetector]] = {
        "feature squeezing (3 bits)": lambda: FeatureSqueezing(model=model, bit_depth=3),
        "Mahalanobis (penultimate)": lambda: Mahalanobis(model=model),
        "Mahalanobis (conv features)": lambda: Mahalanobis(model=model, layer="features"),
    }
    attacks = {
        "PGD linf 0.1 (40 steps)": get_attack("pgd", eps=0.1, steps=40)(model, x, y),
        "Square linf 0.1 (1000 queries)": get_attack("square", eps=0.1, n_queries=1000)(
            model.as_score(), x, y
        ),
    }
    rows = []
    for dname, make in detectors.items():
        det = make().fit(train.x, train.y).calibrate(cal)
        clean = det.score_samples(ev.x)
        results = dict(attacks)
        start = time.perf_counter()
        x_adapt = adaptive_pgd(model, det, x, y, eps=0.1, steps=steps)
        adaptive_time = time.perf_counter() - start
        fooled = model.predict(x_adapt) != y
        for aname, x_adv, success in [
            *[(k, r.x_adv, r.success) for k, r in results.items()],
            (f"adaptive PGD linf 0.1 ({steps} steps x 4 weights)", x_adapt, fooled),
        ]:
            s = success.cpu().numpy().astype(bool)
            adv = det.score_samples(x_adv[s])
            auc = (
                roc_auc_score(np.r_[np.zeros(len(clean)), np.ones(len(adv))], np.r_[clean, adv])
                if len(adv)
                else None
            )
            rows.append(
                {
                    "detector": dname,
                    "attack": aname,
                    "fooled": f"{int(s.sum())}/{len(s)}",
                    "AUC": auc,
                    "detected at threshold": float((adv > det.threshold_).mean()) if len(adv) else None,
                    "clean FPR": float((clean > det.threshold_).mean()),
                    "fooled and undetected": float((s & (det.score_samples(x_adv) <= det.threshold_)).mean()),
                }
            )
            print(rows[-1], flush=True)
        print(f"adaptive attack on {dname}: {adaptive_time:.1f}s", flush=True)
    return rows


def _rate(count: int, n: int) -> str:
    ci = stats.binomtest(count, n).proportion_ci(0.95, method="exact")
    return f"{count / n:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def whole_check_alarms(
    test: Dataset, *, splits: int, windows: int, seed: int = 0, kinds: list[str] | None = None
) -> list[dict[str, Any]]:
    """False alarms and power of the whole default check, uncorrected and with Holm.

    ``seed`` draws the splits and the shifts: the default weights were chosen on seed 0, so
    another seed measures them on draws they were not chosen on.
    """
    model = load_zoo_model("digits-cnn")
    cfg = default_monitor_config(model)
    rng = np.random.default_rng(seed)
    scenarios: list[tuple[str, int, str | None, int, float]] = (
        [("same distribution", splits, None, 0, 0.0)] if splits else []
    )
    scenarios += [(label, windows, k, sev, frac) for label, k, sev, frac in SHIFTS if not kinds or k in kinds]
    rows = []
    for label, n, kind, severity, fraction in scenarios:
        raw = holm = weighted = 0
        started = time.perf_counter()
        for i in range(n):
            idx = rng.permutation(len(test))
            half = len(idx) // 2
            ref = test.subset(idx[:half])
            cur = test.subset(idx[half:])
            if kind is not None:
                cur = shift_dataset(
                    cur, kind, severity=severity, fraction=fraction, seed=seed * 1_000_003 + i
                )
            report = check(
                cfg,
                make_window(ref.x, model=model, y=ref.y),
                make_window(cur.x, model=model, y=cur.y),
                model=model,
            )
            weighted += report.fired
            raw += any(d["drift_raw"] for d in report.results)  # every default rule is an any_of
            with_p = [d["p_value"] for d in report.results if d["p_value"] is not None]
            holm += any(p < ALPHA for p in holm_adjust(with_p))
            if (i + 1) % 10 == 0:
                print(f"… {label}: {i + 1}/{n} checks ({time.perf_counter() - started:.0f} s)", flush=True)
        rows.append(
            {
                "windows": label,
                "checks": n,
                "fired, each detector at 0.05 (before)": _rate(raw, n),
                "fired, Holm at 0.05 (equal weights)": _rate(holm, n),
                "fired, weighted Holm at 0.05 (now)": _rate(weighted, n),
            }
        )
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"
    return str(v)


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer windows, examples and repeats")
    parser.add_argument("--only", choices=["alarms"], help="run one section only")
    parser.add_argument(
        "--seed", type=int, default=0, help="draws of the whole-check section (weights: seed 0)"
    )
    parser.add_argument("--windows", type=int, help="shifted windows per shift in the whole-check section")
    parser.add_argument("--skip-clean", action="store_true", help="whole-check section: shifted windows only")
    parser.add_argument(
        "--shift", action="append", help="whole-check section: only this shift kind (repeatable)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load_dataset("builtin:digits")
    train, test = data.split(test_size=0.25, seed=0)
    windows = 20 if args.quick else 50
    alarms = whole_check_alarms(
        test,
        splits=0 if args.skip_clean else 40 if args.quick else 200,
        windows=args.windows or (10 if args.quick else 50),
        seed=args.seed,
        kinds=args.shift,
    )
    title = "`dlsec monitor check` as a whole (default rules, 9 detectors, zoo:digits-cnn), 95% CI"
    print(f"\n### {title}\n")
    print(_table(alarms))
    if args.only == "alarms":
        return
    ref = train.x[np.random.default_rng(0).choice(len(train), 500, replace=False)]
    power = drift_power(ref, test, windows=windows, size=50, perms=100)
    sizes = [(500, 50), (1000, 200)] if args.quick else [(500, 50), (1000, 200), (2000, 500)]
    speed = mmd_speed(sizes, perms=100, repeats=3)
    adv = adversarial_auc(train, test, n=100 if args.quick else 225, steps=20 if args.quick else 50)
    gamma = median_heuristic_gamma(torch.from_numpy(ref.reshape(len(ref), -1)))
    check = mmd2_permutation_test(
        torch.from_numpy(ref[:50].reshape(50, -1)), torch.from_numpy(ref[50:100].reshape(50, -1)), gamma
    )
    print(f"\nsanity: MMD^2 of two reference halves {check[0]:.2e}, p={check[1]:.3f}")
    title = f"Drift detection rate at alpha {ALPHA} (windows of 50 from the test split, {windows} windows)"
    print(f"\n### {title}\n")
    print(_table(power))
    print("\n### MMD permutation test, 100 permutations, 64 features (median time)\n")
    print(_table(speed))
    print("\n### Adversarial-input detection on zoo:digits-cnn (linf 0.1)\n")
    print(_table(adv))


if __name__ == "__main__":
    main()
