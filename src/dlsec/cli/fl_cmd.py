"""``dlsec fl``: federated learning on Flower under attack, with robust aggregation.

``dlsec fl simulate`` exits 0 when the simulation ran (its verdicts are in the report), and 2
on bad input: an unknown attack or defence, a malicious fraction the defence cannot tolerate
(Krum needs ``n > 2f + 2``, Bulyan ``n >= 4f + 3``, honest-majority rules ``f < 0.5``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from dlsec.cli._app import JsonOpt, app, emit_json, out_console, progress_bar

group = typer.Typer(
    help="Federated learning on Flower: malicious clients against robust aggregation.",
    no_args_is_help=True,
)
app.add_typer(group, name="fl")


@group.command("simulate")
def fl_simulate(
    clients: Annotated[int, typer.Option("--clients", min=2, help="Number of clients.")] = 10,
    malicious: Annotated[
        float, typer.Option("--malicious", min=0.0, max=0.99, help="Fraction of malicious clients.")
    ] = 0.0,
    attack: Annotated[str, typer.Option("--attack", help="Attack of the malicious clients.")] = "none",
    defense: Annotated[str, typer.Option("--defense", help="Aggregation rule of the server.")] = "fedavg",
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Federated rounds.")] = 5,
    partition: Annotated[str, typer.Option("--partition", help="iid or dirichlet.")] = "iid",
    alpha: Annotated[float, typer.Option("--alpha", help="Dirichlet concentration (non-IID).")] = 0.5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of split, model, training, attackers.")] = 0,
    dataset: Annotated[str, typer.Option("--dataset", help="A dlsec dataset.")] = "builtin:digits",
    per_round: Annotated[
        bool, typer.Option("--per-round", help="Draw the malicious clients afresh each round.")
    ] = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="flower (Ray simulation), local (same code, no Flower) or deployment "
            "(a SuperLink and one SuperNode per client as processes on loopback, run with flwr run).",
        ),
    ] = "flower",
    clients_per_round: Annotated[
        int | None, typer.Option("--clients-per-round", min=1, help="Clients sampled per round (all).")
    ] = None,
    dp: Annotated[
        str,
        typer.Option(
            "--dp",
            help="Client-level DP: none, fixed or adaptive clipping (DP-FedAvg with fedavg; with a "
            "robust defence, noise at the rule's sensitivity).",
        ),
    ] = "none",
    noise_multiplier: Annotated[
        float, typer.Option("--noise-multiplier", min=0.0, help="DP noise multiplier z.")
    ] = 1.0,
    clipping_norm: Annotated[
        float, typer.Option("--clipping-norm", help="DP clipping norm C (initial one when adaptive).")
    ] = 1.0,
    target_epsilon: Annotated[
        float | None,
        typer.Option("--target-epsilon", help="Choose z so that epsilon after --rounds is at most this."),
    ] = None,
    delta: Annotated[float | None, typer.Option("--delta", help="DP delta (default 1/clients^1.1).")] = None,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Run Flower's simulation on this existing Ray cluster (host:port)."),
    ] = None,
    secagg: Annotated[
        bool,
        typer.Option(
            "--secagg",
            help="Flower's SecAgg+: the server sees only the sum of the updates (FedAvg only).",
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for report.json and report.html.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Simulate federated training with malicious clients under a defence; measure every round.

    Reports per round the global accuracy, the backdoor success rate, each client's distance
    from the aggregate, and the clients the defence excluded, with precision and recall
    against the known malicious set.

    Example:

    \b
        dlsec fl simulate --malicious 0.2 --attack alie --defense krum --out fl-report
        dlsec fl simulate --clients 100 --clients-per-round 10 --dp fixed --target-epsilon 8
        dlsec fl simulate --clients 3 --malicious 0.34 --attack alie --defense median --engine deployment
    """
    from dlsec.federated import FLConfig, RoundRecord, simulate, write_report

    config = FLConfig(
        dataset=dataset,
        num_clients=clients,
        malicious_fraction=malicious,
        attack=attack,
        defense=defense,
        rounds=rounds,
        partition=partition,
        alpha=alpha,
        seed=seed,
        per_round=per_round,
        engine=engine,
        clients_per_round=clients_per_round,
        dp=dp,
        noise_multiplier=noise_multiplier,
        clipping_norm=clipping_norm,
        target_epsilon=target_epsilon,
        delta=delta,
        ray_address=ray,
        secure_aggregation=secagg,
    )
    with progress_bar(f"{attack} vs {defense}", enabled=not json_out) as callback:

        def progress(record: RoundRecord) -> None:
            stats = {"acc": record.accuracy, "backdoor": record.backdoor_success}
            callback(record.round, rounds, stats)

        result = simulate(config, progress=progress)
    payload = result.to_dict()
    if out is not None:
        json_path, html_path = write_report(result, out)
        payload["report"] = {"json": str(json_path), "html": str(html_path)}
    if json_out:
        emit_json(payload)
        return
    console = out_console()
    last = result.rounds[-1]
    console.print(
        f"{escape(attack)} vs {escape(defense)}: {clients} clients ({malicious:g} malicious), "
        f"{rounds} rounds; "
        f"accuracy {last.accuracy:.3f}, backdoor success {last.backdoor_success:.3f}"
    )
    trained = [r for r in result.rounds if r.round > 0]
    precision = [r.precision for r in trained if r.precision is not None]
    recall = [r.recall for r in trained if r.recall is not None]
    if precision or recall:
        console.print(
            "excluded clients vs the malicious set: mean precision "
            + (f"{sum(precision) / len(precision):.2f}" if precision else "-")
            + ", mean recall "
            + (f"{sum(recall) / len(recall):.2f}" if recall else "-")
        )
    if result.privacy is not None:
        p = result.privacy
        console.print(
            f"{escape(p['mechanism'])}: z={p['noise_multiplier']:.4g}, q={p['sample_rate']:.4g}; "
            f"epsilon {p['epsilon']:.3g} at delta {p['delta']:.3g} after {rounds} rounds (Opacus RDP)"
        )
    if out is not None:
        console.print(f"report: {escape(payload['report']['html'])}")


@group.command("invert")
def fl_invert(
    method: Annotated[str, typer.Option("--method", help="dlg, idlg or geiping.")] = "geiping",
    examples: Annotated[int, typer.Option("--examples", min=1, help="Single-example updates to invert.")] = 8,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimiser iterations per example.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the model, the rows and the dummies.")] = 0,
    dataset: Annotated[str, typer.Option("--dataset", help="A dlsec dataset.")] = "builtin:digits",
    dp_epsilon: Annotated[
        float | None,
        typer.Option("--dp-epsilon", help="Add DP-FedAvg's noise for this epsilon (one client, one round)."),
    ] = None,
    dp_clipping_norm: Annotated[
        float, typer.Option("--dp-clipping-norm", help="DP clipping norm of the update.")
    ] = 1.0,
    dp_delta: Annotated[float, typer.Option("--dp-delta", help="DP delta.")] = 1e-5,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for inversion.json and the gallery.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Reconstruct clients' inputs from single-example updates (DLG, iDLG, inverting gradients).

    Scores each reconstruction by PSNR, SSIM and whether an independent classifier recognises
    it; with --out, writes a gallery of inputs beside their reconstructions.

    Example:

    \b
        dlsec fl invert --method geiping --examples 8 --out inversion
        dlsec fl invert --dp-epsilon 8
    """
    from dlsec.errors import UsageError
    from dlsec.federated import INVERSIONS, study_inversion, write_inversion_report

    if method not in INVERSIONS:
        raise UsageError(f"unknown inversion {method!r}; choose one of: {', '.join(INVERSIONS)}")
    with progress_bar(f"inverting ({method})", enabled=not json_out) as callback:
        study = study_inversion(
            method=method,
            examples=examples,
            steps=steps,
            seed=seed,
            dataset=dataset,
            dp_epsilon=dp_epsilon,
            dp_clipping_norm=dp_clipping_norm,
            dp_delta=dp_delta,
            progress=lambda done, total: callback(done, total, {}),
        )
    payload: dict[str, object] = {"method": method, "examples": examples, **study.summary()}
    if study.privacy is not None:
        payload["privacy"] = study.privacy
    if out is not None:
        json_path, html_path = write_inversion_report(study, out)
        payload["report"] = {"json": str(json_path), "html": str(html_path)}
    if json_out:
        emit_json(payload)
        return
    s = study.summary()
    out_console().print(
        f"{escape(method)}: {examples} single-example updates; recognised {s['recognition_rate']:.0%}, "
        f"label recovered {s['label_accuracy']:.0%}, mean PSNR {s['mean_psnr']:.1f} dB, "
        f"mean SSIM {s['mean_ssim']:.2f}"
        + (
            f"; under DP-FedAvg noise at epsilon {dp_epsilon:g} (z={study.privacy['noise_multiplier']:.3g})"
            if study.privacy is not None and dp_epsilon is not None
            else ""
        )
    )
    if out is not None:
        out_console().print(f"gallery: {escape(str(payload['report']['html']))}")  # type: ignore[index]
