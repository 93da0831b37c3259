"""``dlsec comply``: map a model's evidence to GDPR, CCPA, HIPAA, the EU AI Act, NIST AI RMF, ISO 42001."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dlsec.cli._app import JsonOpt, app, emit_json, err_console, out_console, settings
from dlsec.cli.keys_cmd import RegistryUrlOpt
from dlsec.errors import UsageError

_STYLE = {
    "met": "green",
    "attested": "blue",
    "partial": "yellow",
    "gap": "bold yellow",
    "failing": "bold red",
}
_FRAMEWORKS = "gdpr, ccpa, hipaa, eu-ai-act, nist-ai-rmf, iso-42001"


def _attached(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        kind, sep, path = value.partition("=")
        if not sep or not kind or not path:
            raise UsageError(f"--evidence {value!r}: give KIND=FILE (e.g. encryption=tls-policy.pdf)")
        out[kind] = path
    return out


@app.command("comply")
def comply(
    ctx: typer.Context,
    framework: Annotated[
        list[str],
        typer.Option("--framework", "-f", help=f"Framework (repeatable): {_FRAMEWORKS}, or all."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the evidence files.")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Registry version (NAME@VERSION, NAME@ALIAS) or a model file/folder."
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Assessment report.json (default: the one registered).")
    ] = None,
    pii: Annotated[Path | None, typer.Option("--pii", help="`dlsec data pii --json` output.")] = None,
    fairness: Annotated[
        Path | None, typer.Option("--fairness", help="`dlsec fairness --json` output.")
    ] = None,
    monitor: Annotated[Path | None, typer.Option("--monitor", help="The production monitor.yaml.")] = None,
    playbooks: Annotated[Path | None, typer.Option("--playbooks", help="Incident playbook YAML.")] = None,
    evidence: Annotated[
        list[str] | None,
        typer.Option("--evidence", help="KIND=FILE a person vouches for (repeatable); cited, not checked."),
    ] = None,
    intended_use: Annotated[
        str | None, typer.Option("--intended-use", help="The model card's intended use, in words.")
    ] = None,
    pub: Annotated[
        Path | None, typer.Option("--pub", help="Trusted public signing keys (default: HOME/keys).")
    ] = None,
    allow_gaps: Annotated[
        bool,
        typer.Option("--allow-gaps", help="Exit 0 when controls have no evidence (failing still exits 1)."),
    ] = False,
    registry_url: RegistryUrlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Map a model's evidence to GDPR, CCPA, HIPAA, EU AI Act, NIST AI RMF, ISO 42001; model card, ML-BOM.

    Writes compliance.json, compliance.html, compliance.sarif, and with --model the model card
    (model-card.json, model-card.html) and a CycloneDX 1.6 ML-BOM (bom.cdx.json). Evidence is
    checked now: the signature verified, the files scanned, the audit log replayed. Exits 1 when
    a control's evidence fails, or when a control has no evidence (unless --allow-gaps).
    Engineering evidence, not legal advice.

    Example:

        dlsec comply -f gdpr -f eu-ai-act -m digits@production -o comply/
    """
    from dlsec.comply.evidence import FRAMEWORKS, build_compliance

    names = list(FRAMEWORKS) if "all" in framework else list(dict.fromkeys(framework))
    for name in names:
        if name not in FRAMEWORKS:
            raise UsageError(f"--framework {name!r}: unknown; choose from {_FRAMEWORKS} or all")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if playbooks is not None:
        from dlsec.respond.playbook import load_playbook

        load_playbook(playbooks)  # a playbook that does not load is no evidence: bad input
    registry = None
    if model is not None and not Path(model).exists():
        from dlsec.store import Registry

        registry = Registry.open(registry_url, home=settings(ctx).home)
    try:
        with err_console().status("gathering evidence (verifying signatures, scanning, replaying the log)"):
            run = build_compliance(
                model,
                frameworks=names,
                registry=registry,
                keys=pub,
                report=report,
                pii=pii,
                fairness=fairness,
                monitor=monitor,
                playbooks=playbooks,
                attached=_attached(evidence or []),
                intended_use=intended_use,
            )
    finally:
        if registry is not None:
            registry.close()
    written = run.write(out)
    if json_out:
        emit_json({**run.to_dict(), "files": {k: str(v) for k, v in written.items()}})
    else:
        console = out_console()
        for m in run.maps:
            table = Table(title=f"{m.framework.title} ({m.framework.source})", title_justify="left")
            for col in ("control", "title", "status", "missing evidence"):
                table.add_column(col)
            for r in m.results:
                style = _STYLE[r.status]
                table.add_row(
                    escape(r.control.ref),
                    escape(r.control.title),
                    f"[{style}]{r.status}[/{style}]",
                    escape(", ".join(r.missing)),
                )
            console.print(table)
        for n in run.evidence.not_run:
            console.print(f"not checked: {n['kind']}: {escape(n['reason'])}")
        console.print(
            f"{run.failing} failing, {run.gaps} gap(s); evidence in {escape(str(out))} "
            "(engineering evidence, not legal advice)"
        )
    if run.failing or (run.gaps and not allow_gaps):
        raise typer.Exit(1)
