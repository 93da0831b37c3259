"""``dlsec assess`` and ``dlsec demo``: run a campaign, write the reports, apply the gates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from dlsec.assess import Assessment, default_campaign, load_campaign, run_assessment
from dlsec.cli._app import JsonOpt, app, emit_json, out_console, progress_bar, settings
from dlsec.cli.commands import (
    ArchArgOpt,
    ArchOpt,
    LabelColOpt,
    SplitSeedOpt,
    TestSizeOpt,
    _model_and_data,
    _pick_split,
)
from dlsec.errors import EXIT_FINDING, UsageError
from dlsec.fsutil import sha256_file


@app.command()
def assess(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="zoo:NAME (or a generator, zoo:zoo-gan), a .safetensors or .onnx file, a text model folder.",
        ),
    ],
    data: Annotated[
        str,
        typer.Option(
            "--data", "-d", help="builtin:NAME, a .npz, a .csv, an image folder or (text) a .jsonl."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the reports (resumable).")],
    campaign: Annotated[
        Path | None,
        typer.Option(
            "--campaign",
            "-c",
            help="Campaign YAML (threat model, attacks, gates); default per data and access.",
        ),
    ] = None,
    access: Annotated[
        str | None,
        typer.Option(
            "--access",
            help="Without a campaign: white-box, score or decision (default: what the model offers).",
        ),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="auto, test, train or all.")] = "auto",
    test_size: TestSizeOpt = 0.25,
    split_seed: SplitSeedOpt = 0,
    arch: ArchOpt = None,
    arch_arg: ArchArgOpt = None,
    label_column: LabelColOpt = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run the attack units as Ray tasks: 'local' (a local Ray), host:port, ray://host:port or "
            "auto (default: $DLSEC_RAY_ADDRESS, else in this process).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="CPUs of a local Ray (default: all cores).")
    ] = None,
    gpus_per_unit: Annotated[
        float, typer.Option("--gpus-per-unit", help="GPUs each Ray task asks for (default 0).")
    ] = 0.0,
    amp: Annotated[
        str | None,
        typer.Option("--amp", help="Mixed precision for a PyTorch model: bf16 (CPU or CUDA) or fp16 (CUDA)."),
    ] = None,
    channels_last: Annotated[
        bool,
        typer.Option("--channels-last", help="Run a PyTorch image model in channels-last memory format."),
    ] = False,
    compiled: Annotated[
        bool,
        typer.Option("--compile", help="Run a PyTorch model through torch.compile (falls back if it fails)."),
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Run a red-team campaign and write report.json, report.html, junit.xml and report.sarif.

    Exits 1 when a gate fails. Interrupted runs resume: run the same command again. With --ray the
    attack units run as Ray tasks, with the same report as a run in this process.

    Example:

    \b
        dlsec assess --model zoo:digits-cnn --data builtin:digits --out runs/assess
    """
    from dlsec.assess.generative import generator_name

    generator = generator_name(model)
    if generator is not None:
        if (
            ray
            or workers is not None
            or gpus_per_unit
            or arch
            or arch_arg
            or amp
            or channels_last
            or compiled
        ):
            raise UsageError(f"--model {model} is a built-in generator; the classifier options do not apply")
        result = _assess_generator(
            ctx, generator, model, data, out, campaign, access, split, test_size, split_seed, json_out
        )
        _finish(result, out, json_out)
        return
    if _is_text(model, data):
        if ray or workers is not None or gpus_per_unit or arch or arch_arg:
            raise UsageError(
                "--ray, --workers, --gpus-per-unit, --arch and --arch-arg do not apply to text models"
            )
        result = _assess_text(
            model,
            data,
            out,
            campaign,
            access,
            split,
            test_size,
            split_seed,
            label_column,
            json_out,
            settings(ctx).home,
        )
        _finish(result, out, json_out)
        return
    loaded, dataset = _model_and_data(ctx, model, data, arch, arch_arg, label_column)
    if amp is not None or channels_last or compiled:
        from dlsec.core import WhiteBoxModel

        if not isinstance(loaded, WhiteBoxModel):
            raise UsageError("--amp, --channels-last and --compile apply to a PyTorch (white-box) model")
        loaded = loaded.tuned(amp=amp, channels_last=channels_last, compiled=compiled)  # type: ignore[arg-type]
    subset, _ = _pick_split(dataset, split, test_size, split_seed)
    if campaign is not None:
        if access is not None:
            raise UsageError("--access applies without a campaign; set threat_model.access in the campaign")
        plan = load_campaign(campaign)
    else:
        plan = default_campaign(kind=loaded.spec.kind, access=access or loaded.access.label)
    from dlsec.zoo import model_file as resolve_model_file

    model_file = resolve_model_file(model, home=settings(ctx).home)
    if model_file is None:
        raise UsageError(f"--model {model}: dlsec assess needs a model file or zoo:NAME")
    engine = None
    address = ray or os.environ.get("DLSEC_RAY_ADDRESS")
    if address:
        from dlsec.assess import ray_engine

        with progress_bar("starting Ray", enabled=not json_out):
            engine = ray_engine(address, workers=workers, gpus_per_unit=gpus_per_unit)
    elif workers is not None or gpus_per_unit:
        raise UsageError("--workers and --gpus-per-unit apply with --ray (or $DLSEC_RAY_ADDRESS)")
    try:
        with progress_bar("assessing", enabled=not json_out) as callback:
            result = run_assessment(
                loaded,
                subset,
                plan,
                out,
                model_ref=model,
                model_sha256=sha256_file(model_file),
                model_file=model_file,
                progress=callback,
                engine=engine,
            )
    finally:
        if engine is not None:
            engine.shutdown()
    _finish(result, out, json_out)


def _is_text(model: str, data: str) -> bool:
    """Whether the assessment is a text one (a text model folder, text data); mixed kinds are refused."""
    from dlsec.text import BUILTIN_TEXT_DATASETS, is_text_zoo_ref

    folder = Path(model)
    text_model = is_text_zoo_ref(model) or (folder.is_dir() and (folder / "config.json").is_file())
    text_data = (
        data.startswith("builtin:") and data.removeprefix("builtin:") in BUILTIN_TEXT_DATASETS
    ) or data.lower().endswith(".jsonl")
    if text_model and not text_data and not data.lower().endswith(".csv"):
        raise UsageError(
            f"--model {model} is a text model but --data {data} is not text; give builtin:rotten-tomatoes, "
            "a .csv or a .jsonl"
        )
    if text_data and not text_model:
        raise UsageError(
            f"--data {data} is text but --model {model} is not a text model folder (dlsec text train)"
        )
    return text_model


def _assess_text(
    model: str,
    data: str,
    out: Path,
    campaign: Path | None,
    access: str | None,
    split: str,
    test_size: float,
    split_seed: int,
    label_column: str | None,
    json_out: bool,
    home: Path | None = None,
) -> Assessment:
    from dlsec.assess import run_text_assessment
    from dlsec.core.card import TrainingCard
    from dlsec.text import load_text_dataset, load_text_model, resolve_text_model

    folder = resolve_text_model(model, home=home)
    text_model = load_text_model(folder)
    corpus = load_text_dataset(data, label_column=label_column)
    if campaign is not None:
        if access is not None:
            raise UsageError("--access applies without a campaign; set threat_model.access in the campaign")
        plan = load_campaign(campaign)
    else:
        plan = default_campaign(kind="text", access=access or text_model.access.label)
    if split not in ("auto", "test", "train", "all"):
        raise UsageError(f"--split must be auto, test, train or all, got {split!r}")
    if split != "all":
        card = TrainingCard.find(folder)
        saved = (card.split if card is not None else {}) or {}
        size = float(saved.get("test_size", test_size))
        seed = int(saved.get("seed", split_seed))
        train_part, test_part = corpus.split(test_size=size, seed=seed)
        corpus = train_part if split == "train" else test_part
    with progress_bar("assessing", enabled=not json_out) as callback:
        return run_text_assessment(
            text_model,
            corpus,
            plan,
            out,
            model_ref=model,
            model_sha256=sha256_file(folder / "model.safetensors"),
            model_folder=folder,
            progress=callback,
        )


def _assess_generator(
    ctx: typer.Context,
    generator: str,
    model: str,
    data: str,
    out: Path,
    campaign: Path | None,
    access: str | None,
    split: str,
    test_size: float,
    split_seed: int,
    json_out: bool,
) -> Assessment:
    """A built-in generator: the generative section (provenance, watermarks, detectors) on real images."""
    from dlsec.assess import Campaign
    from dlsec.assess.generative import run_generative_assessment
    from dlsec.cli.commands import _load_data

    if access is not None:
        raise UsageError("--access does not apply to a generator (its section is white-box)")
    real, _ = _pick_split(_load_data(data, None), split, test_size, split_seed)
    plan = load_campaign(campaign) if campaign is not None else Campaign()
    with progress_bar("assessing", enabled=not json_out) as callback:
        return run_generative_assessment(
            generator, real, plan, out, model_ref=model, home=settings(ctx).home, progress=callback
        )


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo writes its reports.")] = Path(
        "dlsec-demo"
    ),
    model: Annotated[str, typer.Option("--model", "-m", help="Zoo model to assess.")] = "zoo:digits-cnn",
    examples: Annotated[int, typer.Option("--examples", help="Test examples to assess.")] = 200,
    json_out: JsonOpt = False,
) -> None:
    """Run dlsec end to end on a zoo model: assess, sign, promote and serve it (a client, an attacker).

    Example:

    \b
        dlsec demo --out dlsec-demo
    """
    from dlsec.respond.demo import run_demo

    opts = settings(ctx)
    result = run_demo(
        out,
        model=model,
        examples=examples,
        home=opts.home,
        device=opts.device,
        stage=lambda description: progress_bar(description, enabled=not json_out),
    )
    _finish(result.assessment, out, json_out, release=result.release, generated=result.generative)


def _print_generated(console: Any, generated: dict[str, Any]) -> None:
    """The demo's generative step in three lines: provenance, watermark, detector."""
    prov, mark, det = generated["provenance"], generated["watermark"], generated["detector"]
    name = generated["generator"]["name"]
    console.print(
        f"generative: {prov['verified']} {escape(name)} samples signed with C2PA and verified "
        f"(weights {str(prov['manifest_weights_sha256'])[:12]}...); {escape(generated['out'])}"
    )
    accuracy = ", ".join(f"{a:.3f}" for a in mark["bit_accuracy"])
    console.print(
        f"  watermark ({escape(mark['method'])}) after {mark['edit']}: detected in {mark['detected']}/"
        f"{mark['n']} (bit accuracy {accuracy})"
    )
    console.print(
        f"  {escape(det['name'])} flags {det['flagged']}/{det['n']} as generated "
        f"(scores {', '.join(f'{s:.2f}' for s in det['scores'])}; threshold {det['threshold']:.2f})"
    )


def _finish(
    result: Assessment,
    out: Path,
    json_out: bool,
    *,
    release: dict[str, Any] | None = None,
    generated: dict[str, Any] | None = None,
) -> None:
    report = result.report
    summary: dict[str, Any] = {
        "report_html": str(out / "report.html"),
        "report_json": str(out / "report.json"),
        "junit": str(out / "junit.xml"),
        "sarif": str(out / "report.sarif"),
        "clean_accuracy": report.get("clean", {}).get("accuracy"),
        "robust_accuracy": {
            norm: dict(zip(map(str, c["eps"]), c["robust_accuracy"], strict=True))
            for norm, c in report.get("robustness", {}).get("curves", {}).items()
        },
        "findings": len(report["findings"]),
        "gates": report["gates"],
        "passed": result.passed,
        "verdict": report.get("verdict"),
        "not_run": report.get("not_run", []),
    }
    text = report.get("text") or {}
    if text.get("curve"):
        summary["text_robust_accuracy"] = dict(
            zip(map(str, text["curve"]["max_change"]), text["curve"]["robust_accuracy"], strict=True)
        )
    if text.get("safer"):
        safer = text["safer"]
        summary["text_certified_accuracy"] = dict(
            zip(map(str, safer["radii"]), safer["certified_accuracy"], strict=True)
        )
    generative = report.get("generative") or {}
    if generative:
        summary["generative"] = {
            "provenance_valid": generative["provenance"]["valid"],
            "samples": generative["provenance"]["samples"],
            "watermarks": {
                m: {e: r["bit_accuracy"] for e, r in w["edits"].items()}
                for m, w in generative["watermarks"].items()
            },
            "detectors": {
                d["detector"]: {"auroc": d["auroc"], "tpr": d["tpr"]} for d in generative["detectors"]
            },
        }
    if release is not None:
        summary["release"] = release
    if generated is not None:
        summary["generative_demo"] = generated
    if json_out:
        emit_json(summary)
    else:
        console = out_console()
        if "clean" in report:
            console.print(
                f"{escape(report['model']['ref'])}: clean accuracy "
                f"[bold]{report['clean']['accuracy']:.4f}[/] on {report['data']['rows']} examples"
            )
        if generative:
            _print_generative(console, report["model"]["ref"], generative)
        for norm, curve in report.get("robustness", {}).get("curves", {}).items():
            pairs = ", ".join(
                f"{e:g}: {a:.3f}" for e, a in zip(curve["eps"], curve["robust_accuracy"], strict=True)
            )
            console.print(f"robust accuracy ({norm}, worst case over {', '.join(curve['attacks'])}): {pairs}")
        if text.get("curve"):
            pairs = ", ".join(
                f"{b:.0%}: {a:.3f}"
                for b, a in zip(text["curve"]["max_change"], text["curve"]["robust_accuracy"], strict=True)
            )
            worst = ", ".join(text["curve"]["attacks"])
            console.print(f"robust accuracy (words changed, worst case over {worst}): {pairs}")
        if text.get("safer"):
            pairs = ", ".join(
                f"{k}: {a:.3f}"
                for k, a in zip(text["safer"]["radii"], text["safer"]["certified_accuracy"], strict=True)
            )
            console.print(f"SAFER certified accuracy (words substituted): {pairs}")
        if result.gates:
            table = Table("gate", "verdict", "value", "reason")
            for g in result.gates:
                table.add_row(
                    escape(g.name),
                    "[green]pass[/]" if g.passed else "[red]FAIL[/]",
                    "" if g.value is None else f"{g.value:.4f}",
                    escape(g.reason),
                )
            console.print(table)
        for item in report.get("not_run", []):
            console.print(f"[yellow]not run:[/] {escape(item['check'])}: {escape(item['reason'])}")
        verdict = report.get("verdict", "pass" if result.passed else "fail")
        style = {"pass": "green", "partial": "yellow", "fail": "red"}.get(verdict, "white")
        console.print(
            f"verdict [bold {style}]{verdict}[/]; {len(report['findings'])} finding(s); "
            f"report: {escape(str((out / 'report.html').resolve()))}"
        )
        if release is not None:
            console.print(
                f"release: signed (ECDSA P-256 + ML-DSA-65), registered and promoted {release['ref']} to "
                f"production; audit log verified ({release['audit']['entries']} entries)"
            )
            served = release.get("gateway")
            if served is not None:
                first = served["attacker"]["first_alert"]
                caught = (
                    f"flagged at query {first['query_index']} ({first['signal']})" if first else "not flagged"
                )
                console.print(
                    f"gateway: a client sent {served['client']['requests']} requests "
                    f"({served['client']['alerts']} alerts); an extraction attacker was {caught} and cut off "
                    f"after {served['attacker']['answered']} answered queries; "
                    f"{len(served['incidents'])} incident(s) opened by the playbook"
                )
            comply = release.get("comply")
            if comply is not None:
                console.print(
                    f"compliance: {comply['met']} of {comply['controls']} controls met across "
                    f"{len(comply['frameworks'])} frameworks, {comply['gaps']} gap(s), {comply['failing']} "
                    f"failing; model card, ML-BOM and maps in {escape(comply['out'])} (not legal advice)"
                )
        if generated is not None:
            _print_generated(console, generated)
    if not result.passed:
        raise typer.Exit(EXIT_FINDING)


def _print_generative(console: Any, ref: str, section: dict[str, Any]) -> None:
    prov = section["provenance"]
    console.print(
        f"{escape(ref)}: {prov['valid']} of {prov['samples']} outputs carry valid C2PA provenance; tampering "
        + ", ".join(
            f"{c['case']} {'caught' if c['detected'] else '[red]MISSED[/]'}" for c in prov["tampering"]
        )
    )
    methods = list(section["watermarks"])
    if methods:
        table = Table("edit", *(f"{m} bit acc / detected" for m in methods))
        for edit in section["edits"]:
            cells = []
            for m in methods:
                row = section["watermarks"][m]["edits"].get(edit)
                cells.append(
                    "not run" if row is None else f"{row['bit_accuracy']:.3f} / {row['tpr_at_1pct_fpr']:.0%}"
                )
            table.add_row(escape(section["edit_labels"][edit]), *cells)
        console.print(table)
    for d in section["detectors"]:
        console.print(
            f"detector {escape(d['detector'])} ({'seen' if d['seen'] else 'unseen'} generator): "
            f"AUROC {d['auroc']:.3f}, flags {d['tpr']:.1%} of outputs and {d['fpr']:.1%} of real images"
        )
