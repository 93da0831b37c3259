"""The command table: which module defines each top-level command, loaded only when it runs.

``dlsec --help`` lists every command from :data:`COMMANDS` without importing one of them;
``dlsec scan`` imports ``dlsec.cli.release_cmd`` and nothing else of the CLI. So a command
costs what it needs: the scanner, the signature check and the registry start without
PyTorch (``tests/cli/test_startup.py`` checks it in a subprocess per command, and that this
table matches what the modules define). See docs/architecture.md, "Start-up cost".
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

# name -> (the dlsec.cli modules that define it, the help line ``dlsec --help`` shows)
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "version": (("commands",), "Print the versions of dlsec and of what it runs on."),
    "eval": (("commands",), "Clean accuracy and confusion matrix of a model on a dataset."),
    "zoo": (("commands",), "List the built-in zoo models (trained on first use, then cached)."),
    "assess": (
        ("assess_cmd",),
        "Run a red-team campaign and write report.json, report.html, junit.xml and report.sarif.",
    ),
    "demo": (
        ("assess_cmd",),
        "Run dlsec end to end on a zoo model: assess, sign, promote and serve it (a client, an attacker).",
    ),
    "attack": (
        ("attack_cmd",),
        "Run an evasion attack; print clean and robust accuracy, success rate and norms.",
    ),
    "explain": (
        ("explain_cmd",),
        "Explain predictions (Captum attributions), check the explanations, write heat maps or rankings.",
    ),
    "extract": (
        ("extract_cmd",),
        "Extract a clone of a model by querying it; report its agreement with the target and its accuracy.",
    ),
    "scan": (
        ("release_cmd",),
        "Scan model files for code that runs when loaded: safe, unsafe or unscannable.",
    ),
    "convert": (
        ("release_cmd",),
        "Convert a checkpoint to safetensors, only after it scans safe (never with torch.load).",
    ),
    "encrypt": (
        ("release_cmd",),
        "Encrypt a file with AES-256-GCM in authenticated chunks (passphrase or recipient key).",
    ),
    "decrypt": (
        ("release_cmd",),
        "Decrypt a file; wrong key or any tampered byte is an error (exit 1) and writes nothing.",
    ),
    "encrypt-keygen": (
        ("release_cmd",),
        "Create a recipient key pair (X25519 + ML-KEM-768); the private key is passphrase-encrypted.",
    ),
    "sign": (
        ("keys_cmd",),
        "Sign a model: per-file SHA-256 manifest, in-toto statement, DSSE with ECDSA P-256 + ML-DSA-65.",
    ),
    "verify": (
        ("keys_cmd",),
        "Verify a model's signature and files; exit 1 (naming what is wrong) unless everything matches.",
    ),
    "serve": (
        ("serve_cmd",),
        "Serve registry models behind API keys, limits, output hardening and extraction detection.",
    ),
    "ui": (
        ("ui_cmd",),
        "Serve the web dashboard: models, lineage, reports, audit log, incidents, API keys.",
    ),
    "train": (
        ("train_cmd",),
        "Train a classifier with a recipe; save safetensors and a training card; resume if interrupted.",
    ),
    "erase": (
        ("erase_cmd",),
        "Erase rows from a model (SISA, exact or approximate), verify with LiRA, sign, register, record.",
    ),
    "data": (
        ("data_cmd", "pii_cmd"),
        "Training-set audits (poisoning, backdoors, label noise) and poisoned demo sets.",
    ),
    "keys": (("keys_cmd", "serve_cmd"), "Signing keys (and, with the gateway, API keys)."),
    "model": (("model_cmd",), "Scan a trained model (backdoors)."),
    "monitor": (
        ("monitor_cmd",),
        "Watch a model's traffic: drift, prediction shifts, adversarial inputs, accuracy.",
    ),
    "fairness": (
        ("fairness_cmd",),
        "Fairness beside robustness: Fairlearn's group metrics, per-group robust accuracy.",
    ),
    "privacy": (
        ("privacy_cmd",),
        "Privacy attacks and audits (membership, inversion, attributes, DP).",
    ),
    "registry": (("registry_cmd",), "The model registry: signed versions, lineage, aliases, policy."),
    "audit": (("registry_cmd",), "The tamper-evident audit log (a Merkle log with signed checkpoints)."),
    "incident": (("respond_cmd",), "Incidents opened by playbooks, and playbook dry runs."),
    "gen": (
        ("gen_cmd",),
        "Generative models: C2PA-signed samples, provenance checks, watermarks, detection.",
    ),
    "fl": (
        ("fl_cmd",),
        "Federated learning on Flower: malicious clients against robust aggregation.",
    ),
    "text": (
        ("text_cmd",),
        "Text classifiers: safe Hugging Face folders, word/char attacks, SAFER certificates.",
    ),
    "comply": (
        ("comply_cmd",),
        "Map a model's evidence to GDPR, CCPA, HIPAA, EU AI Act, NIST AI RMF, ISO 42001; model card, ML-BOM.",
    ),
}


class _Placeholder(TyperCommand):
    """Stands for a command in listings (help, completion) until it is loaded."""


class LazyGroup(TyperGroup):
    """The root group: every command of :data:`COMMANDS`, its module imported on first use."""

    _listing = 0

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, (_, help_text) in COMMANDS.items():
            self.commands.setdefault(name, _Placeholder(name=name, help=help_text, callback=None))

    @contextmanager
    def _only_listing(self) -> Iterator[None]:
        self._listing += 1
        try:
            yield
        finally:
            self._listing -= 1

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = self.commands.get(cmd_name)
        if isinstance(cmd, _Placeholder) and not self._listing:
            cmd = self.commands[cmd_name] = load_command(cmd_name)
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with self._only_listing():
            super().format_help(ctx, formatter)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # Click cuts each line at the terminal's width; dlsec's lines are written to be read whole
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=300)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def shell_complete(self, ctx: Any, incomplete: str) -> Any:
        with self._only_listing():
            return super().shell_complete(ctx, incomplete)


def load_command(name: str) -> Any:
    """Import the modules that define ``name`` and build its Click command."""
    from dlsec.cli._app import app

    modules, _ = COMMANDS[name]
    for module in modules:
        importlib.import_module(f"dlsec.cli.{module}")
    cmd = typer.main.get_group(app).commands.get(name)
    if cmd is None or isinstance(cmd, _Placeholder):
        raise RuntimeError(f"dlsec.cli: {', '.join(modules)} did not define the command {name!r}")
    return cmd


def load_all() -> None:
    """Import every command module (for tests and documentation tools)."""
    for modules, _ in COMMANDS.values():
        for module in modules:
            importlib.import_module(f"dlsec.cli.{module}")
