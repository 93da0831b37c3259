"""A privacy audit of a model trained outside dlsec (no card, no architecture in the file):
the references train from --arch and --ref-config; without them the audit says it is partial."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from dlsec.assess.privacy import reference_config_source, reference_trainer, split_indices
from dlsec.attacks.privacy import audit_membership, members_mask
from dlsec.core import load_dataset
from dlsec.core.arch import parse_arch_kwargs
from dlsec.core.data import with_spec
from dlsec.core.loading import LoadOptions, load_model_file
from tests.cli.test_cli import run

FACTORY = "tests.privacy.test_nocard:small_mlp"


def small_mlp(in_features: int = 30, num_classes: int = 2, hidden: int = 16) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def _train_elsewhere(tmp_path):
    """Full-batch Adam on the train split, saved as bare safetensors (no dlsec metadata, no card)."""
    data = load_dataset("builtin:breast-cancer")
    members = split_indices(data.y, 2, test_size=0.25, seed=0)
    torch.manual_seed(0)
    net = small_mlp(hidden=16)
    x = torch.as_tensor(data.x[members], dtype=torch.float32)
    mean, std = x.mean(0), x.std(0) + 1e-6
    y = torch.as_tensor(data.y[members])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net((x - mean) / std), y).backward()
        opt.step()
    # Fold the standardisation into the first layer, as a model exported elsewhere would be.
    with torch.no_grad():
        first = net[0]
        first.bias -= (first.weight / std) @ mean
        first.weight /= std
    path = tmp_path / "elsewhere.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path, data, members


def test_references_train_from_arch_without_a_card(capsys, tmp_path):
    path, data, members = _train_elsewhere(tmp_path)
    assert reference_trainer(path) is None  # the file names no architecture
    trainer = reference_trainer(path, arch=FACTORY, arch_kwargs={"hidden": 16}, epochs=2)
    assert trainer is not None and trainer.arch == FACTORY and trainer.config.epochs == 2
    assert reference_config_source(path).startswith("a stated default")
    cfg = tmp_path / "how.yaml"
    cfg.write_text("epochs: 7\nbatch_size: 426\nlr: 0.01\noptimizer: adamw\n")
    trainer = reference_trainer(path, arch=FACTORY, ref_config=cfg, data_ref="builtin:breast-cancer")
    assert trainer is not None and (trainer.config.epochs, trainer.config.batch_size) == (7, 426)
    assert reference_config_source(path, ref_config=cfg) == f"--ref-config {cfg}"

    members_file = tmp_path / "members.npy"
    np.save(members_file, members)
    args = ["privacy", "audit", "-m", str(path), "-d", "builtin:breast-cancer", "--arch", FACTORY]
    args += ["--arch-arg", "hidden=16", "--members", str(members_file), "--references", "4"]
    args += ["--ref-config", str(cfg), "--ref-epochs", "3", "--bootstrap", "0", "--json"]
    code, out, err = run(capsys, *args)
    # Two epochs of a 16-unit MLP leak nothing measurable, and nothing was skipped: no finding, exit 0.
    assert code == 0, err
    payload = json.loads(out)
    assert payload["findings"] == []
    assert payload["references"] == 4 and not payload["partial"] and payload["skipped"] == {}
    assert {"lira-online", "lira-offline", "rmia", "shadow"} <= set(payload["attacks"])
    assert payload["references_trained_as"] == f"--ref-config {cfg}"


def test_without_references_the_audit_is_partial_and_names_what_did_not_run(tmp_path):
    path, data, members = _train_elsewhere(tmp_path)
    model = load_model_file(
        path, LoadOptions(arch=FACTORY, arch_kwargs=parse_arch_kwargs(["hidden=16"]), spec_hint=data.spec)
    )
    labels = members_mask(len(data), members)
    audit = audit_membership(model, with_spec(data, model.spec), labels, bootstrap=0)
    assert audit.partial and set(audit.skipped) == {"shadow", "lira-offline", "lira-online", "rmia"}
    assert set(audit.metrics) == {"loss", "confidence", "label-only"}
    assert audit.to_dict()["partial"] is True
