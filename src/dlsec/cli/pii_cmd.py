"""``dlsec data pii``: personal data in a training-data file, per column and per row."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from dlsec.cli._app import JsonOpt, emit_json, out_console, progress_bar
from dlsec.cli.data_cmd import group
from dlsec.errors import EXIT_FINDING, UsageError

if TYPE_CHECKING:
    from dlsec.comply.pii import PiiReport

_SHOWN_ROWS = 20


@group.command("pii")
def pii(
    file: Annotated[Path, typer.Argument(help="A .csv, .tsv, .npz (string arrays), .txt or .jsonl file.")],
    write_redacted: Annotated[
        Path | None,
        typer.Option(
            "--write-redacted", help="Write a copy with every finding replaced by <ENTITY> (same suffix)."
        ),
    ] = None,
    entities: Annotated[
        list[str] | None,
        typer.Option(
            "--entities",
            "-e",
            help="Entities to look for (repeatable or comma-separated; default: the standard set).",
        ),
    ] = None,
    min_score: Annotated[
        float, typer.Option("--min-score", help="Drop findings below this confidence (0 to 1).")
    ] = 0.4,
    quasi: Annotated[
        list[str] | None,
        typer.Option(
            "--quasi", help="Quasi-identifier column for k-anonymity (repeatable; default: by name)."
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Rows in equivalence classes smaller than k are at risk.")] = 5,
    json_out: JsonOpt = False,
) -> None:
    """Find personal data in training data (Presidio's recognisers, offline); exit 1 when any is found.

    Looks for e-mail addresses, phone numbers, US SSNs, UK NHS numbers, payment cards (Luhn),
    IBANs (mod 97), IP addresses, dates of birth and person names; for tables also the
    quasi-identifiers (zip, age or birth date, sex) and k-anonymity. Samples are masked.

    Example:

    \b
        dlsec data pii customers.csv --write-redacted customers.redacted.csv
        dlsec data pii corpus.jsonl --entities EMAIL_ADDRESS,PHONE_NUMBER --json
    """
    from dlsec.comply.pii import ALL_ENTITIES, PiiScanner

    names = [n.strip().upper() for item in entities or [] for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_ENTITIES]
    if unknown:
        raise UsageError(f"--entities: unknown entity {unknown[0]!r}; known: {', '.join(ALL_ENTITIES)}")
    if write_redacted is not None and write_redacted.suffix.lower() != file.suffix.lower():
        raise UsageError(
            f"--write-redacted must have the input's suffix ({file.suffix}), got {write_redacted}"
        )
    scanner = PiiScanner(entities=names or None, min_score=min_score, quasi_identifiers=quasi, k=k)
    with progress_bar("scanning for PII", enabled=not json_out) as cb:
        report = scanner.scan_file(file, progress=cb)
    payload = report.to_dict()
    if write_redacted is not None:
        payload["redacted"] = str(report.write_redacted(write_redacted))
    if json_out:
        emit_json(payload)
    else:
        _print(report, payload)
    if report.found:
        raise typer.Exit(EXIT_FINDING)


def _print(report: PiiReport, payload: dict[str, Any]) -> None:
    from rich.table import Table

    console = out_console()
    totals = payload["totals"]
    what = ", ".join(f"{n} {e}" for e, n in totals.items()) or "no personal data found"
    console.print(
        f"{escape(report.path)}: {report.rows} rows, {payload['rows_with_pii']} with personal data: {what}"
    )
    table = Table("column", "entity", "count", "rows", "confidence", "sample")
    for col in report.columns.values():
        for entity in sorted(col.counts):
            table.add_row(
                escape(col.name),
                entity,
                str(col.counts[entity]),
                str(col.rows[entity]),
                f"{col.mean_score[entity]:.2f} (max {col.max_score[entity]:.2f})",
                escape(col.sample[entity]),
            )
    if table.rows:
        console.print(table)
        by_row = report.by_row()
        for row in sorted(by_row)[:_SHOWN_ROWS]:
            items = "; ".join(
                f"{escape(f.column)}: {f.entity} {escape(f.masked)} ({f.score:.2f})" for f in by_row[row]
            )
            console.print(f"row {row}: {items}")
        if len(by_row) > _SHOWN_ROWS:
            console.print(f"... {len(by_row) - _SHOWN_ROWS} more rows (--json lists them all)")
    kanon = report.k_anonymity
    if kanon is not None:
        console.print(
            f"quasi-identifiers {', '.join(escape(q) for q in kanon.quasi_identifiers)}: "
            f"k = [bold]{kanon.k}[/] ({kanon.classes} classes), {kanon.at_risk:.1%} of rows in classes "
            f"smaller than {kanon.threshold}, prosecutor risk max {kanon.max_risk:.3f} "
            f"mean {kanon.mean_risk:.3f}"
        )
    for entity, reason in report.not_run.items():
        console.print(f"[yellow]not run[/]: {entity}: {escape(reason)} (the scan is partial)")
    if "redacted" in payload:
        console.print(f"wrote {escape(payload['redacted'])}")
