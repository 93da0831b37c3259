"""Shadow and reference models, many trained at once.

Membership attacks that calibrate per example (LiRA, RMIA) or learn from shadow models
(Shokri) need tens of models of the target's architecture, each trained on a known subset of
the candidate rows. :class:`ShadowTrainer` trains a group of them in one vectorised program:
``torch.func.stack_module_state`` stacks their weights, ``vmap`` over ``functional_call`` runs
every model's forward and backward pass at once, and one optimiser steps the stacked weights
(AdamW and SGD are elementwise, so this is exactly each model's own optimiser). Finished
models are written to a folder as safetensors (never pickle) with a manifest; running again
with the same arguments resumes where it stopped.

The groups are independent: a ``runner`` (the assessment's Ray engine passes one) trains them
side by side, on other processes or machines, with the same models as one after the other.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from dlsec.core.arch import build_architecture
from dlsec.core.data import Dataset
from dlsec.core.model import default_device
from dlsec.core.spec import InputSpec
from dlsec.core.trainconfig import TrainConfig
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError
from dlsec.fsutil import atomic_write_text, atomic_write_with

__all__ = ["ReferenceModels", "ShadowTrainer", "half_inclusion"]

Progress = Callable[[int, int, dict[str, float]], None]
# runner(fn, common, items) calls fn(*common, *item) for every item, anywhere, and yields
# (index of the item, result) as each finishes; ``common`` is shipped once for all items.
GroupRunner = Callable[
    [Callable[..., Any], tuple[Any, ...], Sequence[tuple[Any, ...]]], Iterator[tuple[int, Any]]
]
_MANIFEST = "manifest.json"


def half_inclusion(n_models: int, n_rows: int, *, seed: int = 0) -> np.ndarray:
    """A ``(n_models, n_rows)`` inclusion mask: each model keeps half the rows and, for an even
    number of models, each row is in exactly half of them (Carlini et al. 2022's split)."""
    positive_int("n_models", n_models)
    positive_int("n_rows", n_rows)
    rng = np.random.default_rng(seed)
    if n_models >= 2:
        order = rng.random((n_models, n_rows)).argsort(axis=0)
        return np.asarray(order < n_models // 2)
    return np.asarray(rng.random((1, n_rows)).argsort(axis=1) < max(1, n_rows // 2))


class ReferenceModels:
    """A stack of trained models of one architecture and what each was trained on.

    Attributes:
        params, buffers: stacked tensors (leading dimension: the model).
        inclusion: ``(n_models, n_rows)`` bool: whether model ``k`` trained on row ``i``.
        spec: the input spec (normalisation applied before the module).
    """

    def __init__(
        self,
        base: nn.Module,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        inclusion: np.ndarray,
        spec: InputSpec,
        *,
        device: torch.device,
    ) -> None:
        self.base = base
        self.params = params
        self.buffers = buffers
        self.inclusion = inclusion
        self.spec = spec
        self.device = device
        self._norm = spec.normalisation(device=device)

    def __len__(self) -> int:
        return int(self.inclusion.shape[0])

    def _forward(self) -> Callable[..., torch.Tensor]:
        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (x,))

        return vmap(one, in_dims=(0, 0, None), randomness="different")

    @torch.no_grad()
    def logits(self, x: np.ndarray | torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        """Logits of every model on ``x``: ``(n_models, N, classes)`` on the CPU (eval mode)."""
        t = torch.as_tensor(x, dtype=torch.float32)
        fwd = self._forward()
        outs = []
        self.base.eval()
        for start in range(0, t.shape[0], batch_size):
            b = t[start : start + batch_size].to(self.device)
            if self._norm is not None:
                b = (b - self._norm[0]) / self._norm[1]
            outs.append(fwd(self.params, self.buffers, b).float().cpu())
        return torch.cat(outs, dim=1)


class ShadowTrainer:
    """Train many models of one architecture at once, each on its own subset of rows.

    Args:
        arch: a registered architecture name or ``module:factory``.
        arch_kwargs: its keyword arguments.
        config: epochs, batch size, optimiser (``adamw`` or ``sgd``), learning rate, weight
            decay and momentum (other fields are not used).
        group_size: models trained together in one vectorised program.
        seed: seeds each model's initialisation (``seed + k``) and batch order.
        device: where to train (default CUDA when present).
        runner: trains the groups side by side (see :data:`GroupRunner`); default one after
            the other here. The models are the same either way (each is seeded by its index).

    Example:
        >>> trainer = ShadowTrainer(arch="mlp", arch_kwargs={"in_features": 30, "num_classes": 2},
        ...                         config=TrainConfig(epochs=20))                # doctest: +SKIP
        >>> refs = trainer.train(data, half_inclusion(16, len(data)), out="refs") # doctest: +SKIP
        >>> refs.logits(data.x).shape                                            # doctest: +SKIP
        torch.Size([16, 569, 2])
    """

    def __init__(
        self,
        *,
        arch: str,
        arch_kwargs: dict[str, Any] | None = None,
        config: TrainConfig | None = None,
        group_size: int = 16,
        seed: int = 0,
        device: torch.device | str | None = None,
        runner: GroupRunner | None = None,
    ) -> None:
        self.runner = runner
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs or {})
        self.config = config or TrainConfig()
        self.group_size = positive_int("group_size", group_size)
        self.seed = seed
        self.device = torch.device(device) if device is not None else default_device()

    def _build(self, k: int) -> nn.Module:
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed + k)
            module = build_architecture(self.arch, self.arch_kwargs).to(self.device)
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
            raise UsageError("reference models with BatchNorm are not supported (running statistics)")
        return module

    def fingerprint(self, data: Dataset, inclusion: np.ndarray, spec: InputSpec) -> str:
        key = {
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "config": asdict(self.config),
            "seed": self.seed,
            "data": data.sha256,
            "inclusion": hashlib.sha256(np.packbits(inclusion).tobytes()).hexdigest(),
            "shape": list(inclusion.shape),
            "spec": spec.to_dict(),
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    def train(
        self,
        data: Dataset,
        inclusion: np.ndarray,
        *,
        spec: InputSpec | None = None,
        out: str | Path | None = None,
        progress: Progress | None = None,
    ) -> ReferenceModels:
        """Train ``inclusion.shape[0]`` models, model ``k`` on the rows where ``inclusion[k]``.

        Args:
            data: the candidate rows.
            inclusion: bool mask ``(n_models, len(data))``; each model needs at least one row.
            spec: the models' input spec (normalisation); default ``data.spec``.
            out: a folder for ``model-KKKK.safetensors`` files and a manifest; finished models
                found there (for the same arguments) are loaded instead of retrained.
            progress: called with ``(models done, models, stats)`` after each group.
        """
        inclusion = np.asarray(inclusion, dtype=bool)
        if inclusion.ndim != 2 or inclusion.shape[1] != len(data):
            raise UsageError(f"inclusion must have shape (models, {len(data)}), got {inclusion.shape}")
        if (inclusion.sum(axis=1) == 0).any():
            raise UsageError("every reference model needs at least one training row")
        spec = spec or data.spec
        n_models = inclusion.shape[0]
        folder = Path(out) if out is not None else None
        finished: dict[int, dict[str, torch.Tensor]] = {}
        if folder is not None:
            finished = self._resume(folder, self.fingerprint(data, inclusion, spec), n_models)
        base = copy.deepcopy(self._build(0)).to("meta")
        todo = [k for k in range(n_models) if k not in finished]
        if progress is not None:
            progress(len(finished), n_models, {})
        groups = [todo[start : start + self.group_size] for start in range(0, len(todo), self.group_size)]
        if self.runner is None:
            done: Iterator[tuple[int, list[dict[str, torch.Tensor]]]] = (
                (i, self._train_group(base, data, inclusion[g], g, spec)) for i, g in enumerate(groups)
            )
        else:
            done = self.runner(self._train_group, (base, data), [(inclusion[g], g, spec) for g in groups])
        for i, states in done:
            for k, state in zip(groups[i], states, strict=True):
                finished[k] = state
                if folder is not None:
                    self._save(folder, k, state)
            if progress is not None:
                progress(len(finished), n_models, {})
        return self._stack(base, [finished[k] for k in range(n_models)], inclusion, spec)

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to the runner's workers without the runner itself (an engine is not theirs).
        return {**self.__dict__, "runner": None}

    # ------------------------------------------------------------------ training
    def _train_group(
        self,
        base: nn.Module,
        data: Dataset,
        inclusion: np.ndarray,
        ids: list[int],
        spec: InputSpec,
    ) -> list[dict[str, torch.Tensor]]:
        cfg = self.config
        modules = [self._build(k) for k in ids]
        params, buffers = stack_module_state(modules)
        params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        x = torch.from_numpy(data.x).to(self.device)
        y = torch.from_numpy(data.y).to(self.device)
        norm = spec.normalisation(device=self.device)
        if norm is not None:
            x = (x - norm[0]) / norm[1]
        opt = _optimizer(cfg, list(params.values()))
        gens = [torch.Generator().manual_seed(self.seed * 1_000_003 + k) for k in ids]
        rows = [torch.from_numpy(np.nonzero(m)[0]) for m in inclusion]
        size = max(len(r) for r in rows)
        steps = max(1, math.ceil(size / cfg.batch_size))
        batch = min(cfg.batch_size, min(len(r) for r in rows))

        def loss_one(
            p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor
        ) -> torch.Tensor:
            logits = functional_call(base, (p, b), (xb,))
            return F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)

        losses = vmap(loss_one, randomness="different")
        base.train(_needs_train_mode(base))
        for epoch in range(cfg.epochs):
            for group in opt.param_groups:
                group["lr"] = cfg.lr_at(epoch)
            order = torch.stack([_stream(r, steps * batch, g) for r, g in zip(rows, gens, strict=True)])
            order = order.to(self.device)
            for s in range(steps):
                idx = order[:, s * batch : (s + 1) * batch]
                opt.zero_grad(set_to_none=True)
                # Each model's mean loss; their sum gives each model its own gradient.
                losses(params, buffers, x[idx], y[idx]).sum().backward()
                opt.step()
        return [
            {name: t[j].detach().cpu().contiguous() for name, t in {**params, **buffers}.items()}
            for j in range(len(ids))
        ]

    # ------------------------------------------------------------------ files
    def _resume(self, folder: Path, fingerprint: str, n_models: int) -> dict[int, dict[str, torch.Tensor]]:
        from safetensors.torch import load_file

        manifest = folder / _MANIFEST
        found: dict[int, dict[str, torch.Tensor]] = {}
        if manifest.is_file():
            try:
                same = json.loads(manifest.read_text()).get("fingerprint") == fingerprint
            except (OSError, json.JSONDecodeError):
                same = False
            if same:
                for k in range(n_models):
                    path = folder / f"model-{k:04d}.safetensors"
                    if path.is_file():
                        try:
                            found[k] = load_file(str(path))
                        except Exception:  # noqa: BLE001 - a damaged file is retrained, never trusted
                            path.unlink()
            else:
                for old in folder.glob("model-*.safetensors"):
                    old.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(manifest, json.dumps({"fingerprint": fingerprint, "models": n_models}) + "\n")
        return found

    def _save(self, folder: Path, k: int, state: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        atomic_write_with(folder / f"model-{k:04d}.safetensors", lambda tmp: save_file(state, str(tmp)))

    def _stack(
        self,
        base: nn.Module,
        states: list[dict[str, torch.Tensor]],
        inclusion: np.ndarray,
        spec: InputSpec,
    ) -> ReferenceModels:
        param_names = {n for n, _ in base.named_parameters()}
        names = list(states[0])
        stacked = {n: torch.stack([s[n] for s in states]).to(self.device) for n in names}
        params = {n: t for n, t in stacked.items() if n in param_names}
        buffers = {n: t for n, t in stacked.items() if n not in param_names}
        return ReferenceModels(base, params, buffers, inclusion, spec, device=self.device)

    def train_sequential(
        self, data: Dataset, inclusion: np.ndarray, *, spec: InputSpec | None = None
    ) -> list[nn.Module]:
        """The same models trained one after another with plain modules (the baseline that
        ``benchmarks/privacy.py`` times the vectorised trainer against)."""
        spec = spec or data.spec
        cfg = self.config
        norm = spec.normalisation(device=self.device)
        x = torch.from_numpy(data.x).to(self.device)
        if norm is not None:
            x = (x - norm[0]) / norm[1]
        y = torch.from_numpy(data.y).to(self.device)
        out = []
        for k, mask in enumerate(np.asarray(inclusion, dtype=bool)):
            module = self._build(k)
            module.train(_needs_train_mode(module))
            opt = _optimizer(cfg, list(module.parameters()))
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
            rows = torch.from_numpy(np.nonzero(mask)[0])
            batch = min(cfg.batch_size, len(rows))
            steps = max(1, math.ceil(len(rows) / cfg.batch_size))
            for epoch in range(cfg.epochs):
                for group in opt.param_groups:
                    group["lr"] = cfg.lr_at(epoch)
                order = _stream(rows, steps * batch, gen).to(self.device)
                for s in range(steps):
                    idx = order[s * batch : (s + 1) * batch]
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(module(x[idx]), y[idx], label_smoothing=cfg.label_smoothing).backward()
                    opt.step()
            out.append(module)
        return out


def _needs_train_mode(module: nn.Module) -> bool:
    """Whether training mode changes anything: active dropout (BatchNorm is refused). Without
    it, eval mode skips drawing dropout masks of probability 0 for every model."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules())


def _stream(rows: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
    """``length`` row indices: shuffled passes over ``rows``, concatenated."""
    parts, total = [], 0
    while total < length:
        parts.append(rows[torch.randperm(len(rows), generator=gen)])
        total += len(rows)
    return torch.cat(parts)[:length]


def _optimizer(cfg: TrainConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
