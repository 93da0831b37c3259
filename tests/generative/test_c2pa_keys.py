"""dlsec keys c2pa: the C2PA signing key and X.509 chain (create, show, rotate, trust), and what
dlsec gen verify says about images signed before and after a rotation.

Images are signed from a fixed grey PNG (no generator to train): signing and verifying are what
is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from dlsec.cli import main
from dlsec.errors import KeyFileError
from dlsec.generative import (
    GeneratorInfo,
    UntrustedSignerError,
    c2pa_signer_info,
    new_c2pa_chain,
    render_png,
    rotate_c2pa_signer,
    sign_image,
    trust_c2pa_root,
    verify_provenance,
)
from dlsec.store import Registry

INFO = GeneratorInfo("zoo-gan", "1", weights_sha256="ab" * 32)


def _signed(home: Path, path: Path) -> Path:
    png = render_png(np.full((32, 32, 3), 120, dtype=np.uint8))
    path.write_bytes(sign_image(png, INFO, home=home))
    return path


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_create_writes_a_private_key_and_a_trusted_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "keys", "c2pa", "create", "--json"]) == 0
    info = _json(capsys)
    folder = home / "keys" / "c2pa"
    assert info["key_mode"] == "0o600" and (folder / "signer.key.pem").stat().st_mode & 0o777 == 0o600
    assert info["valid"] and info["trusted"] and len(info["trust"]) == 1 and info["trust"][0]["current"]
    chain = x509.load_pem_x509_certificates((folder / "signer.chain.pem").read_bytes())
    assert len(chain) == 2 and chain[0].issuer == chain[1].subject  # leaf, then the intermediate CA
    assert chain[1].issuer.rfc4514_string() == info["trust"][0]["subject"]  # which the trusted root issued
    assert info["signer"]["sha256"] == chain[0].fingerprint(hashes.SHA256()).hex()
    # A second create refuses to replace it; show reads it back; both are audited.
    assert main(["--home", str(home), "keys", "c2pa", "create"]) == 2
    assert "rotate it" in capsys.readouterr().err
    assert main(["--home", str(home), "keys", "c2pa", "show", "--json"]) == 0
    assert _json(capsys)["signer"] == info["signer"]
    reg = Registry.open(home=home)
    assert [e.action for e in reg.audit.entries()] == ["keys.c2pa.create"]
    reg.close()


def test_show_without_a_signer_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(tmp_path), "keys", "c2pa", "show"]) == 2
    err = capsys.readouterr().err
    assert "dlsec keys c2pa create" in err and "Traceback" not in err
    with pytest.raises(KeyFileError):
        c2pa_signer_info(tmp_path)


def test_images_are_signed_with_the_managed_chain(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "keys", "c2pa", "create"]) == 0
    before = c2pa_signer_info(home)["signer"]["sha256"]
    report = verify_provenance(_signed(home, tmp_path / "a.png"), home=home)
    assert report.state == "Trusted" and report.generator["weights_sha256"] == INFO.weights_sha256
    assert c2pa_signer_info(home)["signer"]["sha256"] == before  # signing used it, made no other


def test_rotation_keeps_old_images_valid_unless_the_old_root_is_retired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    old_image = _signed(home, tmp_path / "old.png")  # first use creates the signer
    old_signer = c2pa_signer_info(home)["signer"]["sha256"]
    assert main(["--home", str(home), "keys", "c2pa", "rotate", "--json"]) == 0
    rotated = _json(capsys)
    assert (
        rotated["signer"]["sha256"] != old_signer and len(rotated["trust"]) == 2 and rotated["retired"] == []
    )
    new_image = _signed(home, tmp_path / "new.png")
    assert main(["--home", str(home), "gen", "verify", str(old_image), str(new_image)]) == 0
    capsys.readouterr()
    # A compromised key: rotate again and retire every old root.
    assert main(["--home", str(home), "keys", "c2pa", "rotate", "--retire-old", "--json"]) == 0
    retired = _json(capsys)
    assert len(retired["retired"]) == 2 and len(retired["trust"]) == 1 and retired["trust"][0]["current"]
    assert retired["key_mode"] == "0o600"
    with pytest.raises(UntrustedSignerError):
        verify_provenance(new_image, home=home)
    assert main(["--home", str(home), "gen", "verify", str(old_image), "--json"]) == 1
    payload = _json(capsys)
    assert payload["files"][0]["error"] == "UntrustedSignerError" and not payload["valid"]
    assert main(["--home", str(home), "gen", "verify", str(old_image)]) == 1
    assert "not in dlsec's C2PA trust list" in capsys.readouterr().err
    assert verify_provenance(_signed(home, tmp_path / "newest.png"), home=home).state == "Trusted"
    reg = Registry.open(home=home)
    assert [e.action for e in reg.audit.entries()] == ["keys.c2pa.rotate", "keys.c2pa.rotate"]
    reg.close()


def test_trusting_a_partner_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home, partner = tmp_path / "home", tmp_path / "partner"
    image = _signed(partner, tmp_path / "partner.png")
    _signed(home, tmp_path / "ours.png")
    with pytest.raises(UntrustedSignerError):
        verify_provenance(image, home=home)
    (root,) = (partner / "keys" / "c2pa" / "trust").glob("*.pem")
    assert main(["--home", str(home), "keys", "c2pa", "trust", str(root), "--json"]) == 0
    added = _json(capsys)
    assert (
        "CN=dlsec C2PA root" in added["subject"]
        and Path(added["file"]).parent == home / "keys" / "c2pa" / "trust"
    )
    assert verify_provenance(image, home=home).state == "Trusted"
    # Only CA certificates are trust anchors: a signer's certificate, or junk, is refused.
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(
        new_c2pa_chain()[1].split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    )
    assert main(["--home", str(home), "keys", "c2pa", "trust", str(leaf)]) == 2
    assert "not a CA certificate" in capsys.readouterr().err
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(KeyFileError, match="not a readable PEM certificate"):
        trust_c2pa_root(junk, home)


def test_rotate_creates_when_there_is_none(tmp_path: Path) -> None:
    info = rotate_c2pa_signer(tmp_path)
    assert info["trusted"] and info["retired"] == [] and len(info["trust"]) == 1
