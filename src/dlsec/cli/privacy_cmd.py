"""``dlsec privacy``: membership-inference audits, model inversion, attribute inference, DP audits.

Members are named by ``--members``: ``card`` (default: the split recorded in the model's
training card, i.e. the zoo entry's or ``model.json`` beside a ``.safetensors`` file),
``train`` (the train split of ``--data`` at ``--test-size``/``--split-seed``), a ``.npy`` or
text file of row indices into ``--data``, or a ``.npz`` of member rows (each must be a row of
``--data``). Non-members are the other rows unless ``--non-members`` names a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from dlsec.assess.privacy import (
    attribute_findings,
    dp_audit_findings,
    infer_attribute,
    inversion_findings,
    invert_classes,
    membership_findings,
    reference_config_source,
    reference_trainer,
    references_dir,
    resolve_members,
)
from dlsec.cli._app import JsonOpt, app, emit_json, out_console, progress_bar, settings
from dlsec.cli.commands import ArchArgOpt, ArchOpt, LabelColOpt, SplitSeedOpt, TestSizeOpt, _model_and_data
from dlsec.core.arch import parse_arch_kwargs
from dlsec.core.data import Dataset
from dlsec.core.model import Model, restrict_access
from dlsec.errors import EXIT_FINDING, UsageError
from dlsec.fsutil import atomic_write_text

group = typer.Typer(
    help="Privacy attacks and audits (membership, inversion, attributes, DP).", no_args_is_help=True
)
app.add_typer(group, name="privacy")

MembersOpt = Annotated[
    str,
    typer.Option(
        "--members",
        help="card (the model card's train split), train (--test-size/--split-seed), "
        "a .npy/.txt of row indices, or a .npz of member rows.",
    ),
]
NonMembersOpt = Annotated[
    Path | None,
    typer.Option("--non-members", help="Row indices (.npy/.txt) of non-members (default: the rest)."),
]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Also write the JSON result to this file.")]


def _members(
    ctx: typer.Context,
    model: str,
    data: Dataset,
    members: str,
    non_members: Path | None,
    test_size: float,
    split_seed: int,
) -> tuple[np.ndarray, str]:
    return resolve_members(
        data,
        members,
        model_ref=model,
        non_members=non_members,
        test_size=test_size,
        split_seed=split_seed,
        home=settings(ctx).home,
    )


def _finish(
    payload: dict[str, Any], out: Path | None, findings: list[dict[str, Any]], json_out: bool
) -> None:
    payload["findings"] = findings
    if out is not None:
        atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    if json_out:
        emit_json(payload)
    else:
        console = out_console()
        for f in findings:
            console.print(f"[bold red]{escape(f['severity'])}[/]: {escape(f['title'])}")
        if not findings:
            console.print("no findings")
    if any(f["severity"] in ("high", "critical") for f in findings):
        raise typer.Exit(EXIT_FINDING)


@group.command("audit")
def audit_cmd(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option("--model", "-m", help="zoo:NAME, a .safetensors file or an .onnx file.")
    ],
    data: Annotated[str, typer.Option("--data", "-d", help="The dataset the model was trained on.")],
    members: MembersOpt = "card",
    non_members: NonMembersOpt = None,
    attack: Annotated[
        list[str] | None,
        typer.Option("--attack", "-a", help="Membership attack (repeatable); default: all usable."),
    ] = None,
    references: Annotated[
        int, typer.Option("--references", help="Reference models for LiRA/RMIA/shadow (0: none).")
    ] = 16,
    ref_epochs: Annotated[
        int | None, typer.Option("--ref-epochs", help="Epochs per reference model (default: the target's).")
    ] = None,
    refs_dir: Annotated[
        Path | None,
        typer.Option("--refs-dir", help="Folder for reference models (resumable; default in home)."),
    ] = None,
    ref_config: Annotated[
        Path | None,
        typer.Option(
            "--ref-config",
            help="How the target was trained (the YAML dlsec train --config reads): references train alike.",
        ),
    ] = None,
    fpr: Annotated[
        list[float] | None,
        typer.Option("--fpr", help="Report TPR at this FPR (repeatable; needs 1/FPR non-members)."),
    ] = None,
    access: Annotated[
        str | None, typer.Option("--access", help="Attack as white-box, score or decision.")
    ] = None,
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for intervals.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice.")] = 0,
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    label_column: LabelColOpt = None,
    out: OutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Membership inference: how well attacks tell the model's training rows from other rows.

    Exits 1 when the leak is a high-severity finding (see the report's findings).

    Example:

    \b
        dlsec privacy audit --model zoo:breast-cancer-mlp --data builtin:breast-cancer --out membership.json
    """
    from dlsec.attacks.privacy import audit_membership

    if references < 0 or bootstrap < 0:
        raise UsageError("--references and --bootstrap must be >= 0")
    opts = settings(ctx)
    loaded, dataset = _model_and_data(ctx, model, data, arch, arch_arg, label_column)
    labels, how = _members(ctx, model, dataset, members, non_members, test_size, split_seed)
    target: Model = restrict_access(loaded, access)
    trainer = (
        reference_trainer(
            model,
            epochs=ref_epochs,
            seed=seed,
            device=opts.device,
            home=opts.home,
            arch=arch,
            arch_kwargs=parse_arch_kwargs(arch_arg or []) if arch else None,
            ref_config=ref_config,
            data_ref=data,
        )
        if references
        else None
    )
    if (
        trainer is None
        and attack
        and any(a in ("lira-online", "lira-offline", "rmia", "shadow") for a in attack)
    ):
        raise UsageError(
            "LiRA, RMIA and shadow attacks need reference models: use a zoo or .safetensors model "
            "with --references N"
        )
    if refs_dir is None and trainer is not None:
        refs_dir = references_dir(model, dataset, references, seed, home=opts.home)
    with progress_bar("reference models", enabled=not json_out) as callback:
        result = audit_membership(
            target,
            dataset,
            labels,
            attacks=attack,
            trainer=trainer,
            n_references=references,
            references_dir=refs_dir,
            fprs=tuple(fpr) if fpr else None,
            bootstrap=bootstrap,
            seed=seed,
            progress=callback,
        )
    payload = {
        "model": model,
        "data": data,
        "access": target.access.label,
        "members_from": how,
        **result.to_dict(),
    }
    if trainer is not None:
        source = reference_config_source(model, ref_config=ref_config, home=opts.home)
        payload["references_trained_as"] = source
    if not json_out:
        _print_audit(payload)
    _finish(payload, out, membership_findings(payload), json_out)


def _print_audit(payload: dict[str, Any]) -> None:
    console = out_console()
    console.print(
        f"{escape(payload['model'])} ({payload['access']}): {payload['members']} members, "
        f"{payload['non_members']} non-members ({escape(payload['members_from'])}), "
        f"{payload['references']} reference models"
    )
    fprs = sorted({k for m in payload["attacks"].values() for k in m["tpr_at_fpr"]}, key=float, reverse=True)
    table = Table("attack", "AUC", "AUC CI", *[f"TPR @ FPR {k}" for k in fprs])
    for name, m in payload["attacks"].items():
        cells = [f"{m['tpr_at_fpr'][k]['tpr']:.4f}" if k in m["tpr_at_fpr"] else "-" for k in fprs]
        star = " *" if name == payload["best"] else ""
        table.add_row(name + star, f"{m['auc']:.4f}", f"{m['auc_ci'][0]:.3f}-{m['auc_ci'][1]:.3f}", *cells)
    console.print(table)
    for m in payload["attacks"].values():
        for note in m["notes"][:1]:
            console.print(f"[dim]{escape(note)}[/]")
        break
    if payload.get("references_trained_as"):
        console.print(f"reference models trained as: {escape(payload['references_trained_as'])}")
    for name, why in payload.get("skipped", {}).items():
        console.print(f"[yellow]not run:[/] {escape(name)}: {escape(why)}")
    if payload.get("partial"):
        console.print(
            "[bold yellow]partial audit:[/] stronger attacks did not run; the numbers are a lower bound"
        )


@group.command("dp-audit")
def dp_audit_cmd(
    ctx: typer.Context,
    data: Annotated[
        str, typer.Option("--data", "-d", help="The dataset to train on (train split + canaries).")
    ],
    epsilon: Annotated[
        float, typer.Option("--epsilon", help="The privacy budget epsilon the training claims.")
    ],
    delta: Annotated[float, typer.Option("--delta", help="The budget's delta (< 1/n).")] = 1e-5,
    canaries: Annotated[
        int, typer.Option("--canaries", help="Canaries, each included with probability 1/2.")
    ] = 500,
    canary_kind: Annotated[str, typer.Option("--canary-kind", help="noise or mislabeled.")] = "noise",
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Training epochs (default: the recipe's).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Expected batch size.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.")] = None,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="Per-example clipping norm.")] = 1.0,
    confidence: Annotated[float, typer.Option("--confidence", help="Confidence of the lower bounds.")] = 0.95,
    unsafe_no_noise: Annotated[
        bool,
        typer.Option(
            "--unsafe-no-noise",
            help="UNSAFE, for testing the audit: train with NO noise while claiming --epsilon.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of canaries, inclusion and training.")] = 0,
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    label_column: LabelColOpt = None,
    out: OutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Audit DP-SGD: insert canaries, train, attack, and bound epsilon from below.

    Exits 1 (a critical finding) when the lower bound exceeds the claimed epsilon.

    Example:

    \b
        dlsec privacy dp-audit --data builtin:breast-cancer --epsilon 1 --delta 1e-5
    """
    from dlsec.assess.privacy import dp_audit_setup
    from dlsec.attacks.privacy import CANARY_KINDS, dp_audit
    from dlsec.core import load_dataset

    if canary_kind not in CANARY_KINDS:
        raise UsageError(f"--canary-kind must be one of {', '.join(CANARY_KINDS)}, got {canary_kind!r}")
    if canaries < 4:
        raise UsageError(f"--canaries must be at least 4, got {canaries}")
    if not 0 < confidence < 1:
        raise UsageError(f"--confidence must be in (0, 1), got {confidence}")
    dataset = load_dataset(data, label_column=label_column)
    recipe, config = dp_audit_setup(
        epsilon=epsilon,
        delta=delta,
        max_grad_norm=max_grad_norm,
        unsafe_no_noise=unsafe_no_noise,
        seed=seed,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
    )
    with progress_bar("training with canaries", enabled=not json_out) as callback:
        result = dp_audit(
            dataset,
            recipe=recipe,
            config=config,
            arch=arch,
            arch_kwargs=parse_arch_kwargs(arch_arg) if arch_arg else None,
            canaries=canaries,
            canary_kind=canary_kind,
            confidence=confidence,
            test_size=test_size,
            split_seed=split_seed,
            seed=seed,
            device=settings(ctx).device,
            progress=callback,
        )
    payload = {"data": data, "unsafe_no_noise": unsafe_no_noise, **result.to_dict()}
    if not json_out:
        console = out_console()
        ht, one = result.hypothesis_test, result.one_run
        console.print(
            f"claimed epsilon [bold]{result.epsilon_claimed:.3f}[/] (delta {result.delta:g}); "
            f"audited lower bound [bold]{result.epsilon_lower:.3f}[/] at {confidence:.0%} confidence "
            f"(Clopper-Pearson {ht.epsilon_lower:.3f}: TPR {ht.tpr:.3f}, FPR {ht.fpr:.3f}; "
            f"one-run {one['epsilon_lower']:.3f}: {one['correct']}/{one['guesses']} guesses right); "
            f"test accuracy {result.test_accuracy:.4f}"
        )
    _finish(payload, out, dp_audit_findings(payload), json_out)


@group.command("invert")
def invert_cmd(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option("--model", "-m", help="A white-box model (zoo:NAME or .safetensors).")
    ],
    data: Annotated[
        str, typer.Option("--data", "-d", help="The training dataset (for the evaluator and distances).")
    ],
    members: MembersOpt = "card",
    steps: Annotated[int, typer.Option("--steps", help="MI-Face gradient steps per class.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the evaluator's training.")] = 0,
    images: Annotated[
        Path | None, typer.Option("--images", help="Write the reconstructions (x, y) to this .npz.")
    ] = None,
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    label_column: LabelColOpt = None,
    out: OutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Model inversion (MI-Face): reconstruct each class, scored by an independent classifier.

    Example:

    \b
        dlsec privacy invert --model zoo:digits-mlp --data builtin:digits --images recon.npz
    """
    if images is not None and images.suffix != ".npz":
        raise UsageError(f"--images must name a .npz file, got {images}")
    loaded, dataset = _model_and_data(ctx, model, data, arch, arch_arg, label_column)
    labels, _ = _members(ctx, model, dataset, members, None, test_size, split_seed)
    recon, classes, result = invert_classes(loaded, dataset, labels, steps=steps, seed=seed)
    payload = {"model": model, "data": data, **result.to_dict()}
    if images is not None:
        Dataset(recon, np.array(classes, dtype=np.int64), loaded.spec, "reconstructions").save_npz(images)
        payload["images"] = str(images)
    if not json_out:
        out_console().print(
            f"MI-Face: the independent classifier recognises {result.recognition_rate:.0%} of "
            f"{len(classes)} reconstructions; {result.closer_to_own_class:.0%} lie nearest their own class"
        )
    _finish(payload, out, inversion_findings(payload), json_out)


@group.command("attribute")
def attribute_cmd(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option("--model", "-m", help="zoo:NAME, a .safetensors file or an .onnx file.")
    ],
    data: Annotated[str, typer.Option("--data", "-d", help="The tabular training dataset.")],
    feature: Annotated[str, typer.Option("--feature", help="The sensitive feature (name or index).")],
    members: MembersOpt = "card",
    bins: Annotated[int, typer.Option("--bins", help="Quantile bins the feature is recovered into.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the auxiliary split.")] = 0,
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    label_column: LabelColOpt = None,
    out: OutOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Attribute inference: recover a sensitive feature from outputs, beside a no-model baseline.

    Half of the non-members are the attacker's auxiliary rows, the other half are scored.

    Example:

    \b
        dlsec privacy attribute -m zoo:breast-cancer-mlp -d builtin:breast-cancer --feature 'mean radius'
    """
    loaded, dataset = _model_and_data(ctx, model, data, arch, arch_arg, label_column)
    labels, _ = _members(ctx, model, dataset, members, None, test_size, split_seed)
    result = infer_attribute(loaded, dataset, labels, feature=feature, bins=bins, seed=seed)
    payload = {"model": model, "data": data, **result.to_dict()}
    if not json_out:
        table = Table("attack", "members", "non-members")
        for k in result.members:
            table.add_row(k, f"{result.members[k]:.4f}", f"{result.non_members[k]:.4f}")
        out_console().print(table)
    _finish(payload, out, attribute_findings(payload), json_out)
