"""Privacy attacks and audits, side by side with ART's membership inference attacks.

Three parts, in one process:

1. Membership inference on a deliberately overfitted target (an MLP trained on half of
   ``builtin:digits`` for many epochs) and on ``zoo:digits-cnn`` (its card's train split as
   members, the test split as non-members). ART's attacks that train an attack model
   (``MembershipInferenceBlackBox``, and with ``ShadowModels``) learn from half of the members
   and non-members; every tool is scored on the other half. dlsec's reference-model attacks
   know no membership of the target: their reference models train on random halves of the
   candidate rows. AUC, TPR at 1% and at 0.1% FPR (the latter at zero false positives when
   there are fewer than 1,000 non-members: the same rule for every tool).
2. Shadow-model training throughput: dlsec's vectorised trainer (``stack_module_state`` +
   ``vmap``) against the same models trained one after another (the same loop without
   ``vmap``, and ``dlsec.train.fit`` per model).
3. A model trained outside dlsec (no card, no architecture in its file): a digits CNN on 300
   members, full-batch Adam for 150 steps, audited as ``dlsec privacy audit`` would, with and
   without ``--arch`` and ``--ref-config`` (``--only nocard`` runs just this part).
4. DP audits: DP-SGD at epsilon 1 and 8 (the audited lower bound must stay below the claim),
   and the recipe with its noise switched off while claiming epsilon 1 (the audit must exceed
   the claim).

    python benchmarks/privacy.py            # everything
    python benchmarks/privacy.py --quick    # fewer reference models, epochs and canaries
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from dlsec.attacks.privacy import ShadowTrainer, audit_membership, dp_audit, half_inclusion, members_mask
from dlsec.attacks.privacy._metrics import roc_curve, tpr_at_fpr
from dlsec.core import Dataset, WhiteBoxModel, load_dataset
from dlsec.core.arch import build_architecture
from dlsec.train import DPSGD, TrainConfig, UnsafeNoNoiseDPSGD, fit, fit_normalisation
from dlsec.zoo import ZOO, load_zoo_model

OVERFIT_ARCH = {"in_features": 64, "num_classes": 10, "hidden": [256, 256]}


def metrics(members: np.ndarray, others: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    fpr, tpr, _ = roc_curve(members, others)
    labels = np.concatenate([np.ones(len(members)), np.zeros(len(others))])
    return {
        "auc": float(roc_auc_score(labels, np.concatenate([members, others]))),
        "tpr@1%": tpr_at_fpr(fpr, tpr, 0.01),
        "tpr@0.1%": tpr_at_fpr(fpr, tpr, 0.001),
    }


def overfitted_target(quick: bool) -> dict[str, Any]:
    data = load_dataset("builtin:digits")
    rng = np.random.default_rng(0)
    members = np.sort(rng.permutation(len(data))[: len(data) // 2])
    config = TrainConfig(epochs=100 if quick else 200, batch_size=64, lr=1e-3)
    torch.manual_seed(0)
    train_rows = data.subset(members)
    model = WhiteBoxModel(
        build_architecture("mlp", OVERFIT_ARCH), fit_normalisation(train_rows), device="cpu"
    )
    fit(model, train_rows, config)
    return {
        "name": "digits MLP, overfitted",
        "model": model,
        "data": data,
        "members": members,
        "trainer": ShadowTrainer(arch="mlp", arch_kwargs=OVERFIT_ARCH, config=config, group_size=32),
    }


def zoo_target() -> dict[str, Any]:
    from dlsec.assess.privacy import split_indices

    data = load_dataset("builtin:digits")
    entry = ZOO["digits-cnn"]
    config = TrainConfig(epochs=entry.epochs, batch_size=entry.batch_size, lr=entry.lr)
    return {
        "name": "zoo:digits-cnn",
        "model": load_zoo_model("digits-cnn"),
        "data": data,
        "members": split_indices(data.y, 10, test_size=entry.test_size, seed=entry.split_seed),
        "trainer": ShadowTrainer(
            arch=entry.arch, arch_kwargs=entry.arch_kwargs, config=config, group_size=32
        ),
    }


def art_attacks(target: dict[str, Any], fit_idx: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """ART's scores on every row; its trained attacks learn from the rows in ``fit_idx``."""
    from art.attacks.inference.membership_inference import (
        MembershipInferenceBlackBox,
        MembershipInferenceBlackBoxRuleBased,
        ShadowModels,
    )
    from art.estimators.classification import PyTorchClassifier

    model: WhiteBoxModel = target["model"]
    data: Dataset = target["data"]
    x, y = data.x, data.y
    shape = {"input_shape": model.spec.shape, "nb_classes": model.spec.num_classes, "clip_values": (0.0, 1.0)}
    clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), device_type="cpu", **shape)
    scores: dict[str, np.ndarray] = {}
    rule = MembershipInferenceBlackBoxRuleBased(clf)
    scores["ART rule-based (gap)"] = rule.infer(x, y).astype(np.float64).reshape(-1)
    mem = fit_idx[labels[fit_idx] == 1]
    non = fit_idx[labels[fit_idx] == 0]
    for kind in ("nn", "rf", "gb"):
        attack = MembershipInferenceBlackBox(clf, attack_model_type=kind)
        attack.fit(x[mem], y[mem], x[non], y[non])
        scores[f"ART black-box ({kind})"] = attack.infer(x, y, probabilities=True).reshape(-1)
    # Shadow models (Shokri et al.): ART trains them on the attacker's rows, one after another.
    template_module = build_architecture(target["trainer"].arch, target["trainer"].arch_kwargs)
    template = PyTorchClassifier(
        model=WhiteBoxModel(template_module, model.spec, device="cpu"),
        loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(template_module.parameters(), lr=1e-3),
        device_type="cpu",
        **shape,
    )
    shadows = ShadowModels(template, num_shadow_models=3, random_state=0)
    (mx, my, mp), (nx, ny, np_) = shadows.generate_shadow_dataset(
        x[fit_idx], np.eye(model.spec.num_classes)[y[fit_idx]]
    )
    attack = MembershipInferenceBlackBox(clf, attack_model_type="rf")
    attack.fit(mx, my, nx, ny, mp, np_)
    scores["ART shadow models (3) + rf"] = attack.infer(x, y, probabilities=True).reshape(-1)
    return scores


def bench_membership(target: dict[str, Any], n_refs: int) -> list[dict[str, Any]]:
    data: Dataset = target["data"]
    labels = members_mask(len(data), target["members"])
    rng = np.random.default_rng(1)
    order = rng.permutation(len(data))
    fit_idx, eval_idx = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])
    start = time.perf_counter()
    audit = audit_membership(
        target["model"], data, labels, trainer=target["trainer"], n_references=n_refs, bootstrap=0
    )
    ours_seconds = time.perf_counter() - start
    rows = []
    ev = labels[eval_idx]
    for name, s in audit.scores.items():
        rows.append(
            {
                "target": target["name"],
                "tool": "dlsec",
                "attack": name,
                **metrics(s[eval_idx][ev == 1], s[eval_idx][ev == 0]),
            }
        )
    try:
        start = time.perf_counter()
        peer = art_attacks(target, fit_idx, labels)
        art_seconds = time.perf_counter() - start
        for name, s in peer.items():
            rows.append(
                {
                    "target": target["name"],
                    "tool": "ART",
                    "attack": name,
                    **metrics(s[eval_idx][ev == 1], s[eval_idx][ev == 0]),
                }
            )
    except ImportError as exc:
        rows.append(
            {"target": target["name"], "tool": "ART", "attack": f"not run: {exc}", "auc": float("nan")}
        )
        art_seconds = float("nan")
    n_mem, n_non = int((ev == 1).sum()), int((ev == 0).sum())
    print(
        f"{target['name']}: scored on {n_mem} members, {n_non} non-members; dlsec {ours_seconds:.1f} s "
        f"({n_refs} reference models), ART {art_seconds:.1f} s",
        flush=True,
    )
    return rows


def bench_nocard(n_refs: int) -> list[dict[str, Any]]:
    """A CNN trained by a plain PyTorch loop, saved as bare safetensors, audited without a card."""
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    from dlsec.assess.privacy import reference_config_source, reference_trainer
    from dlsec.core.loading import LoadOptions, load_model_file

    data = load_dataset("builtin:digits")
    rng = np.random.default_rng(0)
    members = np.sort(rng.choice(len(data), 300, replace=False))
    kwargs = {"in_channels": 1, "num_classes": 10, "image_size": 8}
    torch.manual_seed(0)
    net = build_architecture("cnn", kwargs)
    x = torch.as_tensor(data.x[members], dtype=torch.float32)
    y = torch.as_tensor(data.y[members])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    print("… training the target outside dlsec: 300 members, full-batch Adam, 150 steps", flush=True)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "elsewhere.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        how = Path(tmp) / "how.yaml"
        how.write_text("epochs: 150\nbatch_size: 300\nlr: 0.001\noptimizer: adamw\n")
        model = load_model_file(path, LoadOptions(arch="cnn", arch_kwargs=kwargs, spec_hint=data.spec))
        labels = members_mask(len(data), members)
        for label, trainer in (
            ("no --arch (before: nothing said)", None),
            (
                "--arch cnn --ref-config",
                reference_trainer(path, arch="cnn", arch_kwargs=kwargs, ref_config=how, data_ref=data.name),
            ),
        ):
            print(f"… auditing: {label}", flush=True)

            def progress(done: int, total: int, stats: dict[str, float]) -> None:
                print(f"   reference models: {done}/{total}", flush=True)

            audit = audit_membership(
                model, data, labels, trainer=trainer, n_references=n_refs, bootstrap=0, progress=progress
            )
            for name, m in audit.metrics.items():
                low = min(m.tpr_at_fpr.values(), key=lambda r: r["fpr"])
                rows.append(
                    {
                        "setting": label,
                        "attack": name,
                        "auc": m.auc,
                        "fpr": low["fpr"],
                        "tpr": low["tpr"],
                        "references": audit.references,
                        "partial": audit.partial,
                    }
                )
            if trainer is not None:
                source = reference_config_source(path, ref_config=how)
                print(f"   references trained as: {source}", flush=True)
    return rows


def nocard_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| setting | attack | AUC | TPR at lowest FPR | references | audit |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['setting']} | {r['attack']} | {r['auc']:.3f} | {r['tpr']:.2%} at {r['fpr']:g} | "
            f"{r['references']} | {'partial' if r['partial'] else 'complete'} |"
        )
    return "\n".join(out)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_throughput(quick: bool) -> list[dict[str, Any]]:
    rows = []
    settings = [
        ("digits CNN", "builtin:digits", "cnn", ZOO["digits-cnn"].arch_kwargs, 64, 16),
        (
            "breast-cancer MLP",
            "builtin:breast-cancer",
            "mlp",
            {"in_features": 30, "num_classes": 2, "hidden": [64, 32]},
            32,
            64,
        ),
        (
            "digits MLP",
            "builtin:digits",
            "mlp",
            {"in_features": 64, "num_classes": 10, "hidden": [128, 64]},
            64,
            32,
        ),
    ]
    for name, ref, arch, kwargs, batch, k in settings:
        data = load_dataset(ref)
        k = k // 2 if quick else k
        config = TrainConfig(epochs=2 if quick else 5, batch_size=batch)
        trainer = ShadowTrainer(arch=arch, arch_kwargs=kwargs, config=config, group_size=k)
        inclusion = half_inclusion(k, len(data), seed=0)
        trainer.train(data, inclusion[:2])  # warm up both paths
        trainer.train_sequential(data, inclusion[:2])
        start = time.perf_counter()
        trainer.train(data, inclusion)
        _sync()
        t_vmap = time.perf_counter() - start
        start = time.perf_counter()
        trainer.train_sequential(data, inclusion)
        _sync()
        t_seq = time.perf_counter() - start
        start = time.perf_counter()
        for j in range(k):
            torch.manual_seed(j)
            rows_j = data.subset(np.nonzero(inclusion[j])[0])
            model = WhiteBoxModel(build_architecture(arch, kwargs), data.spec, device=trainer.device)
            fit(model, rows_j, config)
        _sync()
        t_fit = time.perf_counter() - start
        rows.append(
            {
                "setting": name,
                "models": k,
                "epochs": config.epochs,
                "vmap_s": t_vmap,
                "sequential_s": t_seq,
                "fit_s": t_fit,
                "ratio_sequential": t_seq / t_vmap,
                "ratio_fit": t_fit / t_vmap,
            }
        )
        print(
            f"throughput {name}: vmap {t_vmap:.2f} s, sequential {t_seq:.2f} s, fit {t_fit:.2f} s", flush=True
        )
    return rows


def bench_dp(quick: bool) -> list[dict[str, Any]]:
    data = load_dataset("builtin:digits")
    config = TrainConfig(epochs=30 if quick else 60, batch_size=64, lr=1.0, optimizer="sgd")
    canaries = 200 if quick else 500
    rows = []
    for label, recipe in (
        ("dp-sgd epsilon 1", DPSGD(epsilon=1.0)),
        ("dp-sgd epsilon 8", DPSGD(epsilon=8.0)),
        ("noise off, claims epsilon 1", UnsafeNoNoiseDPSGD(epsilon=1.0)),
    ):
        start = time.perf_counter()
        result = dp_audit(
            data, recipe=recipe, config=config, arch="mlp", arch_kwargs={"hidden": [256]}, canaries=canaries
        )
        rows.append(
            {
                "setting": label,
                "claimed": result.epsilon_claimed,
                "clopper_pearson": result.hypothesis_test.epsilon_lower,
                "one_run": float(result.one_run["epsilon_lower"]),
                "lower": result.epsilon_lower,
                "exceeds": result.exceeds_claim,
                "test_accuracy": result.test_accuracy,
                "canaries": canaries,
                "seconds": time.perf_counter() - start,
            }
        )
        print(f"dp audit {label}: lower bound {result.epsilon_lower:.3f}", flush=True)
    return rows


def tables(mia: list[dict[str, Any]], thr: list[dict[str, Any]], dp: list[dict[str, Any]]) -> str:
    out = ["| target | tool | attack | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR |", "|---|---|---|---:|---:|---:|"]
    for r in mia:
        if np.isnan(r.get("auc", np.nan)):
            out.append(f"| {r['target']} | {r['tool']} | {r['attack']} | | | |")
            continue
        out.append(
            f"| {r['target']} | {r['tool']} | {r['attack']} | {r['auc']:.4f} | {r['tpr@1%']:.4f} | "
            f"{r['tpr@0.1%']:.4f} |"
        )
    for target in dict.fromkeys(r["target"] for r in mia):
        best = {}
        for tool in ("dlsec", "ART"):
            rs = [r for r in mia if r["target"] == target and r["tool"] == tool and "tpr@0.1%" in r]
            if rs:
                best[tool] = (max(r["tpr@0.1%"] for r in rs), max(r["auc"] for r in rs))
        if len(best) == 2:
            out.append(
                f"\n{target}: best TPR @ 0.1% FPR dlsec {best['dlsec'][0]:.4f} vs ART {best['ART'][0]:.4f}; "
                f"best AUC dlsec {best['dlsec'][1]:.4f} vs ART {best['ART'][1]:.4f}"
            )
    out += [
        "",
        "| shadow models | models | epochs | vmap (s) | one after another (s) | ratio "
        "| dlsec.train.fit each (s) | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in thr:
        out.append(
            f"| {r['setting']} | {r['models']} | {r['epochs']} | {r['vmap_s']:.2f} | "
            f"{r['sequential_s']:.2f} | {r['ratio_sequential']:.2f} | {r['fit_s']:.2f} | "
            f"{r['ratio_fit']:.2f} |"
        )
    out += [
        "",
        "| DP-SGD audit | claimed epsilon | Clopper-Pearson bound | one-run bound | exceeds claim "
        "| test acc. |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in dp:
        out.append(
            f"| {r['setting']} | {r['claimed']:.3f} | {r['clopper_pearson']:.3f} | {r['one_run']:.3f} | "
            f"{'yes' if r['exceeds'] else 'no'} | {r['test_accuracy']:.4f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], choices=["membership", "throughput", "dp", "nocard"])
    parser.add_argument("--only", choices=["nocard"], help="run one part only")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady timings on a shared machine)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n_refs = 16 if args.quick else 32
    if args.only == "nocard" or "nocard" not in args.skip:
        print("\n### Membership inference on a model trained outside dlsec (16 references)\n")
        print(nocard_table(bench_nocard(16)), flush=True)
        if args.only == "nocard":
            return 0
    mia: list[dict[str, Any]] = []
    if "membership" not in args.skip:
        mia += bench_membership(overfitted_target(args.quick), n_refs)
        mia += bench_membership(zoo_target(), n_refs)
    thr = bench_throughput(args.quick) if "throughput" not in args.skip else []
    dp = bench_dp(args.quick) if "dp" not in args.skip else []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(tables(mia, thr, dp))
    if args.json:
        json.dump({"membership": mia, "throughput": thr, "dp": dp}, sys.stdout, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
