"""``dlsec text``: train text classifiers and attack them with word- and character-level attacks.

``dlsec text attack`` exits 0 with its results (a successful attack is a measurement, as in
``dlsec attack``), 2 on bad input; ``dlsec text check`` exits 1 when a model folder holds
remote code hooks or pickled files; ``dlsec text certify`` reports SAFER certified accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dlsec.cli._app import ForceOpt, JsonOpt, app, emit_json, out_console, settings
from dlsec.errors import EXIT_FINDING, UsageError

group = typer.Typer(
    help="Text classifiers: safe Hugging Face folders, word/char attacks, SAFER certificates.",
    no_args_is_help=True,
)
app.add_typer(group, name="text")

DataOpt = Annotated[
    str,
    typer.Option(
        "--data", help="builtin:rotten-tomatoes, or a UTF-8 .csv / .jsonl with text and label columns."
    ),
]
TextColOpt = Annotated[str | None, typer.Option("--text-column", help="The text column or key (CSV/JSONL).")]
LabelColOpt = Annotated[
    str | None, typer.Option("--label-column", help="The label column or key (CSV/JSONL).")
]


@group.command("train")
def text_train(
    data: DataOpt,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to write (config, safetensors, tokenizer, card).")
    ],
    arch: Annotated[str, typer.Option("--arch", help="embedding-bag or bert-tiny.")] = "embedding-bag",
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Epochs (default 8, bert-tiny 4).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the split, weights and batches.")] = 0,
    augment: Annotated[
        str | None,
        typer.Option("--augment", help="Adversarial augmentation with this attack (pwws, deepwordbug, ...)."),
    ] = None,
    augment_n: Annotated[int, typer.Option("--augment-n", min=1, help="Training texts attacked.")] = 500,
    max_change: Annotated[
        float, typer.Option("--max-change", help="The augmentation attack's budget (fraction of words).")
    ] = 0.2,
    text_column: TextColOpt = None,
    label_column: LabelColOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a text classifier from scratch; write a Hugging Face style folder with a training card.

    Example:

    \b
        dlsec text train --data builtin:rotten-tomatoes --out runs/rt-bag
    """
    from dlsec.text import load_text_dataset, train_text_model

    if out.exists() and not force:
        raise UsageError(f"{out} exists; pass --force to replace it")
    corpus = load_text_dataset(data, text_column=text_column, label_column=label_column)
    result = train_text_model(
        corpus,
        arch=arch,
        out=out,
        epochs=epochs,
        seed=seed,
        augment=augment,
        augment_n=augment_n,
        max_change=max_change,
    )
    payload = {"out": str(out), "arch": arch, "data": corpus.name, "seed": seed, "metrics": result.metrics}
    if json_out:
        emit_json(payload)
        return
    metrics = " ".join(f"{k}={v:.3f}" for k, v in result.metrics.items())
    out_console().print(
        f"{escape(arch)} trained on {escape(corpus.name)}: {metrics}; written to {escape(str(out))}"
    )


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        help="A text model folder (safetensors + tokenizer.json), zoo:rotten-tomatoes-bag, or a gateway "
        "URL http(s)://HOST:PORT/v1/models/NAME (key from $DLSEC_API_KEY; charged to its budget).",
    ),
]


def _text_model(ctx: typer.Context, model: str) -> tuple[Any, Path | None]:
    """The model under attack and its folder (``None`` behind a gateway: the split defaults apply)."""
    from dlsec.text import load_text_model, resolve_text_model

    if model.startswith(("http://", "https://")):
        from dlsec.serve import connect_text

        return connect_text(model), None
    folder = resolve_text_model(model, home=settings(ctx).home)
    return load_text_model(folder), folder


@group.command("attack")
def text_attack(
    ctx: typer.Context,
    model: ModelOpt,
    data: DataOpt,
    attack: Annotated[
        str, typer.Option("--attack", help="pwws, textfooler, deepwordbug or hotflip.")
    ] = "pwws",
    max_change: Annotated[
        float, typer.Option("--max-change", help="Most words changed, as a fraction.")
    ] = 0.2,
    n: Annotated[int, typer.Option("--n", min=1, help="Texts to attack (the first of the split).")] = 200,
    split: Annotated[str, typer.Option("--split", help="test (the model card's split) or all.")] = "test",
    query_budget: Annotated[
        int | None, typer.Option("--query-budget", min=1, help="Most model queries per text.")
    ] = None,
    keep_stopwords: Annotated[
        bool, typer.Option("--keep-stopwords/--swap-stopwords", help="Never change stop words.")
    ] = True,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the attack's random choices.")] = 0,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write every example (marked changes) as JSON Lines.")
    ] = None,
    text_column: TextColOpt = None,
    label_column: LabelColOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Attack a text classifier; print success rate, queries, words changed and marked examples.

    Example:

    \b
        dlsec text attack --model runs/rt-bag --data builtin:rotten-tomatoes --attack pwws --n 200
    """
    from dlsec.core.card import TrainingCard
    from dlsec.text import get_text_attack, load_text_dataset

    if split not in ("test", "all"):
        raise UsageError(f"--split must be test or all, got {split!r}")
    text_model, folder = _text_model(ctx, model)
    corpus = load_text_dataset(data, text_column=text_column, label_column=label_column)
    if corpus.num_classes > text_model.num_classes:
        raise UsageError(
            f"{corpus.name} has {corpus.num_classes} classes, the model {text_model.num_classes}"
        )
    if split == "test":
        card = TrainingCard.find(folder) if folder is not None else None
        saved = (card.split if card is not None else {}) or {}
        corpus = corpus.split(test_size=float(saved.get("test_size", 0.25)), seed=int(saved.get("seed", 0)))[
            1
        ]
    chosen = corpus.subset(range(min(n, len(corpus))))
    atk = get_text_attack(
        attack, max_change=max_change, query_budget=query_budget, keep_stopwords=keep_stopwords, seed=seed
    )
    result = atk(text_model, chosen.texts, chosen.y)
    summary: dict[str, Any] = {"model": str(folder or model), "data": chosen.name, **result.summary()}
    if out is not None:
        from dlsec.fsutil import atomic_write_text

        lines = "".join(json.dumps(e) + "\n" for e in result.examples())
        atomic_write_text(out, lines)
        summary["out"] = str(out)
    if json_out:
        emit_json({"summary": summary, "examples": result.examples()})
        return
    _print(summary, result)


def _print(summary: dict[str, Any], result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{summary['attack']} on {escape(summary['model'])}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in (
        "n",
        "clean_accuracy",
        "success_rate",
        "robust_accuracy",
        "median_queries",
        "mean_words_changed",
    ):
        value = summary[key]
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    table.add_row(
        "budget", f"{summary['max_change']:.0%} of words, {summary['query_budget'] or 'no'} query limit"
    )
    console = out_console()
    console.print(table)
    shown = [i for i in range(len(result.y)) if result.success[i] and result.clean_correct[i]][:5]
    for i in shown:
        console.print(f"  {escape(result.marked[i])}")
    if summary.get("truncated"):
        console.print(
            f"{summary['truncated']} text(s) were longer than the model's maximum and were truncated"
        )
    if summary.get("stopped"):
        console.print(
            f"partial: stopped after {summary['attacked']} of {summary['n']} texts "
            f"({escape(summary['stopped'])}); the rest were not attacked"
        )


@group.command("certify")
def text_certify(
    ctx: typer.Context,
    model: ModelOpt,
    data: DataOpt,
    n: Annotated[int, typer.Option("--n", min=1, help="Texts to certify (the first of the split).")] = 50,
    split: Annotated[str, typer.Option("--split", help="test (the model card's split) or all.")] = "test",
    n0: Annotated[int, typer.Option("--n0", min=1, help="Selection samples per text.")] = 50,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Estimation samples per text.")] = 500,
    alpha: Annotated[float, typer.Option("--alpha", help="Failure probability of a certificate.")] = 0.001,
    radii: Annotated[
        str, typer.Option("--radii", help="Comma-separated radii (words substituted) to report.")
    ] = "0,1,2,3,4",
    keep_stopwords: Annotated[
        bool, typer.Option("--keep-stopwords/--swap-stopwords", help="Stop words are not substituted.")
    ] = True,
    wordnet: Annotated[
        Path | None, typer.Option("--wordnet", help="WordNet database folder (default: the system's).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the random substitutions.")] = 0,
    text_column: TextColOpt = None,
    label_column: LabelColOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Certify a text classifier against synonym substitutions (SAFER); print certified accuracy.

    SAFER (Ye et al. 2020) smooths the model over random WordNet synonym substitutions and
    certifies, per text, how many substituted words cannot change the smoothed prediction.

    Example:

    \b
        dlsec text certify --model runs/rt-bag --data builtin:rotten-tomatoes --n 50
    """
    from dlsec.text import SAFER, WordNet

    try:
        wanted = sorted({int(r) for r in radii.split(",") if r.strip()})
    except ValueError:
        raise UsageError(f"--radii must be comma-separated integers, got {radii!r}") from None
    if not wanted or wanted[0] < 0:
        raise UsageError("--radii needs at least one non-negative integer")
    if not 0 < alpha < 0.5:
        raise UsageError(f"--alpha must lie in (0, 0.5), got {alpha}")
    text_model, folder = _text_model(ctx, model)
    chosen = _chosen(folder, data, split, n, text_column, label_column, text_model.num_classes)
    safer = SAFER(
        n0=n0,
        n=samples,
        alpha=alpha,
        keep_stopwords=keep_stopwords,
        wordnet=WordNet.load(wordnet) if wordnet is not None else None,
        seed=seed,
    )
    cert = safer.certify(text_model, chosen.texts)
    accuracy = cert.certified_accuracy(chosen.y, wanted)
    payload: dict[str, Any] = {
        "model": str(folder or model),
        "data": chosen.name,
        "texts": len(chosen),
        **safer.settings(),
        "radii": wanted,
        "certified_accuracy": accuracy,
        "abstain_rate": float((cert.prediction == -1).mean()),
        "smoothed_accuracy": float((cert.prediction == chosen.y).mean()),
    }
    if json_out:
        emit_json(payload)
        return
    from rich.table import Table

    table = Table(title=f"SAFER on {escape(str(model))} ({len(chosen)} texts)")
    table.add_column("words substituted", justify="right")
    table.add_column("certified accuracy", justify="right")
    for r, a in zip(wanted, accuracy, strict=True):
        table.add_row(str(r), f"{a:.3f}")
    console = out_console()
    console.print(table)
    console.print(
        f"smoothed accuracy {payload['smoothed_accuracy']:.3f}; abstained on {payload['abstain_rate']:.1%}; "
        f"n0 {n0}, n {samples}, alpha {alpha:g}"
    )


def _chosen(
    model: Path | None,
    data: str,
    split: str,
    n: int,
    text_column: str | None,
    label_column: str | None,
    num_classes: int,
) -> Any:
    """The first ``n`` texts of the split the model card names (or of the whole corpus)."""
    from dlsec.core.card import TrainingCard
    from dlsec.text import load_text_dataset

    if split not in ("test", "all"):
        raise UsageError(f"--split must be test or all, got {split!r}")
    corpus = load_text_dataset(data, text_column=text_column, label_column=label_column)
    if corpus.num_classes > num_classes:
        raise UsageError(f"{corpus.name} has {corpus.num_classes} classes, the model {num_classes}")
    if split == "test":
        card = TrainingCard.find(model) if model is not None else None
        saved = (card.split if card is not None else {}) or {}
        test_size, seed = float(saved.get("test_size", 0.25)), int(saved.get("seed", 0))
        corpus = corpus.split(test_size=test_size, seed=seed)[1]
    return corpus.subset(range(min(n, len(corpus))))


@group.command("check")
def text_check(
    folder: Annotated[Path, typer.Argument(help="A Hugging Face style model folder.")],
    json_out: JsonOpt = False,
) -> None:
    """Check a model folder for remote-code hooks (auto_map), Python files and pickled files; exit 1 if any.

    Example:

    \b
        dlsec text check runs/rt-bag
    """
    from dlsec.text import check_model_folder

    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder")
    problems = check_model_folder(folder)
    if json_out:
        emit_json({"folder": str(folder), "safe": not problems, "findings": problems})
    else:
        console = out_console()
        for p in problems:
            console.print(f"unsafe: {escape(p)}")
        if not problems:
            console.print(f"{escape(str(folder))}: no remote-code hooks, code or pickled files")
    if problems:
        raise typer.Exit(EXIT_FINDING)
