"""Ship a model end to end (what ``dlsec demo`` shows): keys, signature, registry, policy, audit."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

from dlsec.release import generate_signing_keys, load_signing_keys, sign_model, verify_model
from dlsec.store._registry import Policy, Registry

__all__ = ["ship_model"]


def ship_model(
    model_file: str | Path, report: str | Path | None, workdir: str | Path, *, name: str
) -> dict[str, Any]:
    """Sign ``model_file`` with fresh keys and promote it through a registry kept in ``workdir``.

    ``workdir`` is wiped first: the keys are throwaway (their passphrase is random and never
    stored), so the registry inside is a self-contained demonstration. With a ``report``, the
    promotion policy requires the assessment to have passed its gates.
    """
    workdir = Path(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    keys_dir = workdir / "keys"
    passphrase = secrets.token_urlsafe(24)
    generate_signing_keys(keys_dir, passphrase=passphrase, scrypt_log_n=14)
    model_dir = workdir / "model"
    model_dir.mkdir(parents=True)
    shutil.copyfile(model_file, model_dir / Path(model_file).name)
    sig, manifest = sign_model(model_dir, load_signing_keys(keys_dir, passphrase=passphrase))
    verified = verify_model(model_dir, load_signing_keys(keys_dir, passphrase=passphrase).public())
    registry = Registry.open(home=workdir)
    try:
        registry.audit.append(
            "keys.generate", str(keys_dir), {"fingerprints": verified.key_fingerprints}, publish=True
        )
        record = registry.add(model_dir, name, report=report)
        policy = Policy(require_report=report is not None)
        registry.promote(name, record.version, alias="production", policy=policy)
        check = registry.audit.verify()
        served = registry.open_for_use(f"{name}@production")
    finally:
        registry.close()
    return {
        "signature": str(sig),
        "root_digest": manifest.root_digest,
        "keys": verified.key_fingerprints,
        "ref": served.ref,
        "alias": "production",
        "policy": {"signature": True, "scan": True, "gates": report is not None},
        "audit": check.to_dict(),
        "registry": str(workdir),
    }
