"""Poisoning detectors side by side: dlsec's data audit, ART and cleanlab, plus the backdoor scan.

``builtin:digits`` (the 1,347-row training split) is poisoned at 10% by BadNets (3x3 patch),
a blended trigger (alpha 0.2) and random label flipping. Each detector flags rows; the table
gives its true and false positive rates. After removing each detector's flagged rows, a model
is retrained and scored (backdoor attack success rate, clean accuracy) against a model
trained on the clean split. Finally the Neural Cleanse scan runs on each poisoned model and on
the clean one; the clean-label backdoor's success rate and the shilling detector's rates on
generated ratings follow. Peers come from the ``bench`` extra (ART's ActivationDefence and
SpectralSignatureDefense, cleanlab's find_label_issues on the same out-of-fold probabilities
dlsec uses); a missing peer is reported, never silently skipped.

    python benchmarks/poison.py              # targets 0 and 5
    python benchmarks/poison.py --quick      # target 0 only
    python benchmarks/poison.py --only extra # clean-label and shilling only
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from dlsec.attacks.backdoor import CleanLabel
from dlsec.attacks.poisoning import (
    PoisonResult,
    ShillingAttack,
    get_poisoning,
    synthetic_ratings,
    train_victim,
)
from dlsec.core import Dataset, WhiteBoxModel, load_dataset
from dlsec.defend import DataAuditor, NeuralCleanse, ShillingDetector


def rates(flagged: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return float((flagged & truth).sum() / truth.sum()), float((flagged & ~truth).sum() / (~truth).sum())


def art_detectors(model: WhiteBoxModel, data: Dataset) -> dict[str, np.ndarray | str]:
    try:
        from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
        from art.estimators.classification import PyTorchClassifier
    except ImportError as exc:
        return {
            "ART activation clustering": f"not installed ({exc})",
            "ART spectral signatures": "not installed",
        }
    import copy

    clf = PyTorchClassifier(
        model=copy.deepcopy(model.module).cpu(),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=data.spec.shape,
        nb_classes=data.spec.num_classes,
        clip_values=(0.0, 1.0),
        preprocessing=(
            np.array(model.spec.mean, dtype=np.float32),
            np.array(model.spec.std, dtype=np.float32),
        ),
        device_type="cpu",
    )
    onehot = np.eye(data.spec.num_classes, dtype=np.float32)[data.y]
    out: dict[str, np.ndarray | str] = {}
    ac = ActivationDefence(clf, data.x, onehot)
    _, clean = ac.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA")
    out["ART activation clustering"] = np.asarray(clean) == 0
    ss = SpectralSignatureDefense(
        clf, data.x, onehot, batch_size=128, eps_multiplier=1.5, expected_pp_poison=0.1
    )
    _, clean = ss.detect_poison()
    out["ART spectral signatures"] = np.asarray(clean) == 0
    return out


def cleanlab_detector(data: Dataset, folds: int = 4, seed: int = 0) -> np.ndarray | str:
    try:
        from cleanlab.filter import find_label_issues
    except ImportError as exc:
        return f"not installed ({exc})"
    from sklearn.model_selection import StratifiedKFold

    probs = np.zeros((len(data), data.spec.num_classes))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (a, b) in enumerate(split.split(np.zeros(len(data)), data.y)):
        m = train_victim(data.subset(a), seed=seed + 1 + fold)
        probs[b] = m.probs(data.x[b]).cpu().double().numpy()
    return np.asarray(find_label_issues(data.y, probs))


def retrain(result: PoisonResult, flagged: np.ndarray, test: Dataset, seeds: int) -> dict[str, list[float]]:
    """Retrain without the flagged rows once per seed: a 450-row test set moves 0.2-0.4 points
    between seeds, as much as the differences the table is about."""
    keep = np.flatnonzero(~flagged)
    runs = [result.evaluate(train_victim(result.data.subset(keep), seed=s), test) for s in range(seeds)]
    return {key: [r[key] for r in runs] for key in runs[0]}


def spread(values: list[float]) -> str:
    """Mean, and the range over seeds when there are several."""
    mean = f"{np.mean(values):.4f}"
    return mean if len(values) == 1 else f"{mean} ({min(values):.4f}-{max(values):.4f})"


def clean_label_table(train: Dataset, test: Dataset) -> None:
    """The clean-label backdoor's success on five victims per setting (mean and range)."""
    print("\n| clean-label setting | ASR mean (min-max over 5 victims) | clean acc. mean |")
    print("|---|---:|---:|")
    settings: list[tuple[str, dict[str, Any]]] = [
        (
            "8%, eps 0.3, 4x4 patch in one corner, one surrogate (before)",
            {"size": 4, "corner": "bottom-right", "surrogates": 1},
        ),
        ("8%, eps 0.3, 3x3 patch in all corners, 4-model ensemble (default)", {}),
    ]
    for label, extra in settings:
        for target in (0, 5):
            result = CleanLabel(rate=0.08, target=target, **extra).poison(train)
            scores = [result.evaluate(train_victim(result.data, seed=s), test) for s in range(5)]
            asr = [sc["attack_success_rate"] for sc in scores]
            acc = float(np.mean([sc["clean_accuracy"] for sc in scores]))
            print(
                f"| {label}, target {target} | {np.mean(asr):.3f} ({min(asr):.3f}-{max(asr):.3f}) "
                f"| {acc:.4f} |"
            )


def shilling_table(seeds: int = 4) -> None:
    """The shilling detector on generated ratings: TPR, FPR and the right target item."""
    print(
        "\n| shilling attack | sets | right target | TPR min / mean | FPR max / mean | clean sets flagged |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    sizes = [(0.05, 0.03), (0.05, 0.1), (0.1, 0.05), (0.1, 0.1), (0.08, 0.05), (0.1, 0.03)]
    clean = sum(len(ShillingDetector().detect(synthetic_ratings(seed=s)).flagged) > 0 for s in range(seeds))
    for kind in ("random", "average", "bandwagon"):
        right, tprs, fprs = 0, [], []
        for seed in range(seeds):
            ratings = synthetic_ratings(seed=seed)
            order = np.argsort((ratings != 0).sum(axis=0))
            for position in (30, 75, 110):  # unpopular, median, popular target
                item = int(order[position + seed])
                for profiles, filler in sizes:
                    attack = ShillingAttack(
                        kind=kind, profiles=profiles, filler=filler, target_item=item, seed=seed
                    )
                    result = attack.inject(ratings)
                    report = ShillingDetector().detect(result.ratings)
                    flagged = np.zeros(len(result.ratings), dtype=bool)
                    flagged[report.flagged] = True
                    fake = np.zeros_like(flagged)
                    fake[result.fake_index] = True
                    tpr, fpr = rates(flagged, fake)
                    right += report.target_item == item
                    tprs.append(tpr)
                    fprs.append(fpr)
        print(
            f"| {kind} | {len(tprs)} | {right} | {min(tprs):.2f} / {np.mean(tprs):.3f} | "
            f"{max(fprs):.3f} / {np.mean(fprs):.4f} | {clean} of {seeds} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="target class 0 only")
    parser.add_argument(
        "--only", choices=["all", "extra"], default="all", help="extra: clean-label and shilling only"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the clean and retrained models")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train, test = load_dataset("builtin:digits").split(test_size=0.25, seed=0)
    if args.only == "extra":
        clean_label_table(train, test)
        shilling_table(seeds=8)
        return
    clean_models = [train_victim(train, seed=s) for s in range(args.seeds)]
    clean_model = clean_models[0]
    clean_accs = [float((m.predict(test.x).numpy() == test.y).mean()) for m in clean_models]
    print(f"clean training: test accuracy {spread(clean_accs)}")
    targets = [0] if args.quick else [0, 5]
    settings: list[tuple[str, dict[str, Any]]] = []
    for t in targets:
        settings += [("badnets", {"rate": 0.1, "target": t}), ("blended", {"rate": 0.1, "target": t})]
    settings.append(("label-flip", {"rate": 0.1}))
    rows: list[list[str]] = []
    scans: list[list[str]] = []
    for name, params in settings:
        result = get_poisoning(name, **params).poison(train)
        truth = result.mask()
        label = f"{name} 10%" + (f", target {params['target']}" if "target" in params else "")
        poisoned_model = train_victim(result.data)
        before = result.evaluate(poisoned_model, test)
        print(
            f"\n{label}: model trained on it: ASR {before['attack_success_rate']:.4f}, clean acc "
            f"{before['clean_accuracy']:.4f}"
        )
        started = time.perf_counter()
        report = DataAuditor().audit(result.data)
        detectors: dict[str, Any] = {"dlsec data audit": (report.mask(), time.perf_counter() - started)}
        started = time.perf_counter()
        for key, value in art_detectors(poisoned_model, result.data).items():
            detectors[key] = (value, None)
        art_time = time.perf_counter() - started
        started = time.perf_counter()
        detectors["cleanlab find_label_issues"] = (
            cleanlab_detector(result.data),
            time.perf_counter() - started,
        )
        for det, (flags, seconds) in detectors.items():
            if isinstance(flags, str):
                rows.append([label, det, flags, "", "", "", ""])
                continue
            tpr, fpr = rates(flags, truth)
            after = retrain(result, flags, test, args.seeds)
            secs = seconds if seconds is not None else art_time / 2
            rows.append(
                [
                    label,
                    det,
                    f"{tpr:.3f}",
                    f"{fpr:.4f}",
                    spread(after["attack_success_rate"]),
                    spread(after["clean_accuracy"]),
                    f"{secs:.1f}",
                ]
            )
            print(" | ".join(rows[-1]))
        scan = NeuralCleanse().scan(poisoned_model, test)
        scans.append(
            [
                label,
                "backdoor" if scan.backdoor else "clean",
                str(scan.target),
                f"{scan.anomaly_index.max():.2f}",
            ]
        )
        print("scan:", " | ".join(scans[-1]))
    scan = NeuralCleanse().scan(clean_model, test)
    scans.append(
        [
            "clean training",
            "backdoor" if scan.backdoor else "clean",
            str(scan.target),
            f"{scan.anomaly_index.max():.2f}",
        ]
    )
    print(
        f"\nclean training: test accuracy {spread(clean_accs)} over {args.seeds} seed(s); ASR after "
        "retraining is the backdoor's (label flip: test error); after retraining: mean (range) over "
        "the same seeds\n"
    )
    print("| poisoning | detector | TPR | FPR | ASR after retraining | clean acc. after | time (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print("\n| model trained on | scan verdict | target | max anomaly index |")
    print("|---|---|---:|---:|")
    for s in scans:
        print("| " + " | ".join(s) + " |")
    clean_label_table(train, test)
    shilling_table(seeds=8)


if __name__ == "__main__":
    main()
