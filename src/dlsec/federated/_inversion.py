"""Gradient inversion: what the server learns from one client's single-example update.

Three attacks on the gradient of a cross-entropy loss, as the papers define them:

* **DLG** (Zhu et al. 2019): optimise a dummy input and a dummy soft label with L-BFGS so that
  their gradient matches the observed one in squared L2 distance.
* **iDLG** (Zhao et al. 2020): read the label off the last layer's bias gradient (the only
  negative entry, for a single example), then optimise the input alone, as DLG.
* **Inverting gradients** (Geiping et al. 2020): the iDLG label, then Adam on one minus the
  cosine similarity of the gradients plus total variation, the input kept within its bounds.

A reconstruction is scored by PSNR and SSIM against the true input and by whether an
independent classifier (multinomial logistic regression fitted on other rows, not the attacked
model) recognises it as the true class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dlsec.errors import UsageError

__all__ = [
    "INVERSIONS",
    "InversionResult",
    "InversionStudy",
    "invert_gradients",
    "psnr",
    "single_example_gradients",
    "ssim",
    "study_inversion",
]

INVERSIONS = ("dlg", "idlg", "geiping")


@dataclass(frozen=True)
class InversionResult:
    """One reconstruction: the input (shape of one example) and the label the attack used."""

    x: np.ndarray
    label: int


def single_example_gradients(model: nn.Module, x: torch.Tensor, y: int) -> list[torch.Tensor]:
    """The gradient a client with one example sends (one SGD step's update is ``-lr`` times it)."""
    model.zero_grad()
    loss = nn.functional.cross_entropy(model(x[None]), torch.tensor([y]))
    return [g.detach() for g in torch.autograd.grad(loss, [p for p in model.parameters()])]


def _label_from_bias(gradients: list[torch.Tensor], num_classes: int) -> int:
    """iDLG: for one example, the last layer's bias gradient is ``softmax - onehot``: negative
    only at the true class."""
    for g in reversed(gradients):
        if g.ndim == 1 and g.numel() == num_classes:
            return int(torch.argmin(g))
    raise UsageError("iDLG needs a final layer with a bias of one entry per class")


def _tv(x: torch.Tensor) -> torch.Tensor:
    if x.ndim < 3:
        return x.new_zeros(())
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def invert_gradients(
    model: nn.Module,
    gradients: list[torch.Tensor],
    *,
    shape: tuple[int, ...],
    num_classes: int,
    method: str = "geiping",
    steps: int = 300,
    tv: float = 1e-2,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> InversionResult:
    """Reconstruct a single example from its gradient.

    Args:
        model: the model the gradient was taken on (the global model the server sent).
        gradients: one tensor per parameter, in ``model.parameters()`` order.
        shape: the shape of one input.
        num_classes: the number of classes.
        method: ``dlg``, ``idlg`` or ``geiping``.
        steps: optimiser iterations.
        tv: the total-variation weight (``geiping`` only).
        bounds: the input range (``geiping`` projects onto it).
        seed: seeds the dummy input.

    Raises:
        UsageError: unknown method, or gradients that do not match the model's parameters.

    Example:
        >>> grads = single_example_gradients(model, x, 3)                            # doctest: +SKIP
        >>> invert_gradients(model, grads, shape=x.shape, num_classes=10).label      # doctest: +SKIP
        3
    """
    if method not in INVERSIONS:
        raise UsageError(f"unknown inversion {method!r}; choose one of: {', '.join(INVERSIONS)}")
    params = list(model.parameters())
    if len(params) != len(gradients) or any(
        p.shape != g.shape for p, g in zip(params, gradients, strict=False)
    ):
        raise UsageError("the gradients do not match the model's parameters (count or shapes)")
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g).requires_grad_(True)
    lo, hi = bounds

    def grads_of(inp: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = model(inp[None])
        if target.dtype == torch.int64:
            loss = nn.functional.cross_entropy(out, target)
        else:  # DLG's soft label
            loss = torch.sum(-torch.softmax(target, -1) * torch.log_softmax(out, -1))
        return torch.autograd.grad(loss, params, create_graph=True)

    if method == "dlg":
        soft = torch.randn((1, num_classes), generator=g).requires_grad_(True)
        opt = torch.optim.LBFGS(
            [x, soft], lr=1.0, max_iter=steps, history_size=100, line_search_fn="strong_wolfe"
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = sum(((a - b) ** 2).sum() for a, b in zip(grads_of(x, soft), gradients, strict=True))
            assert isinstance(loss, torch.Tensor)
            loss.backward()
            return loss

        opt.step(closure)
        return InversionResult(x.detach().clamp(lo, hi).numpy(), int(soft.argmax()))

    label = _label_from_bias(gradients, num_classes)
    target = torch.tensor([label])
    if method == "idlg":
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=steps, history_size=100, line_search_fn="strong_wolfe")

        def closure_idlg() -> torch.Tensor:
            opt.zero_grad()
            loss = sum(((a - b) ** 2).sum() for a, b in zip(grads_of(x, target), gradients, strict=True))
            assert isinstance(loss, torch.Tensor)
            loss.backward()
            return loss

        opt.step(closure_idlg)
        return InversionResult(x.detach().clamp(lo, hi).numpy(), label)

    flat_true = torch.cat([t.reshape(-1) for t in gradients])
    adam = torch.optim.Adam([x], lr=0.1)
    schedule = torch.optim.lr_scheduler.MultiStepLR(
        adam, milestones=[int(steps * f) for f in (0.375, 0.625, 0.875)]
    )
    for _ in range(steps):
        adam.zero_grad()
        flat = torch.cat([t.reshape(-1) for t in grads_of(x, target)])
        loss = 1 - nn.functional.cosine_similarity(flat, flat_true, dim=0) + tv * _tv(x)
        loss.backward()
        x.grad.sign_()  # type: ignore[union-attr]  # signed gradients, as Geiping et al.
        adam.step()
        schedule.step()
        with torch.no_grad():
            x.clamp_(lo, hi)
    return InversionResult(x.detach().numpy(), label)


def psnr(reconstruction: np.ndarray, truth: np.ndarray, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (infinite for a perfect reconstruction)."""
    mse = float(np.mean((reconstruction.astype(np.float64) - truth.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def ssim(reconstruction: np.ndarray, truth: np.ndarray, *, data_range: float = 1.0, window: int = 7) -> float:
    """Structural similarity (Wang et al. 2004) of two images (``(C, H, W)`` or ``(H, W)``), as
    scikit-image computes it by default: a uniform ``window`` x ``window`` filter, sample
    covariances, ``K1 = 0.01``, ``K2 = 0.03``, the mean over the positions the window covers."""
    a = torch.as_tensor(np.asarray(reconstruction, dtype=np.float64))
    b = torch.as_tensor(np.asarray(truth, dtype=np.float64))
    if a.shape != b.shape:
        raise UsageError(f"ssim: shapes differ, {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = (t.reshape(-1, *t.shape[-2:])[:, None] for t in (a, b))
    w = min(window, a.shape[-1], a.shape[-2])
    pool = lambda t: nn.functional.avg_pool2d(t, w, stride=1)  # noqa: E731
    cov = w * w / (w * w - 1)
    ux, uy = pool(a), pool(b)
    vx, vy = cov * (pool(a * a) - ux * ux), cov * (pool(b * b) - uy * uy)
    vxy = cov * (pool(a * b) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s.mean())


@dataclass
class InversionStudy:
    """Reconstructions of several single-example updates, scored.

    Attributes:
        method: the attack.
        truths, reconstructions: the true inputs and the reconstructions, ``(N, *shape)``.
        labels, recovered_labels: the true labels and those the attack used.
        psnr, ssim: per example.
        recognised: per example, whether the independent classifier names the true class.
    """

    method: str
    truths: np.ndarray
    reconstructions: np.ndarray
    labels: np.ndarray
    recovered_labels: np.ndarray
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    recognised: list[bool] = field(default_factory=list)
    privacy: dict[str, float] | None = None

    @property
    def recognition_rate(self) -> float:
        return float(np.mean(self.recognised)) if self.recognised else 0.0

    def summary(self) -> dict[str, float]:
        finite = [p for p in self.psnr if math.isfinite(p)]
        return {
            "recognition_rate": self.recognition_rate,
            "label_accuracy": float(np.mean(self.labels == self.recovered_labels)),
            "mean_psnr": float(np.mean(finite)) if finite else math.inf,
            "mean_ssim": float(np.mean(self.ssim)),
        }


def _privatise(
    grads: list[torch.Tensor], noise_multiplier: float, clipping_norm: float, delta: float, *, seed: int
) -> list[torch.Tensor]:
    """One client's update through DP-FedAvg (one round, that client alone)."""
    from dlsec.federated._dp import DPFedAvg

    flat = torch.cat([g.reshape(-1) for g in grads])[None]
    mechanism = DPFedAvg(
        noise_multiplier=noise_multiplier, clipping_norm=clipping_norm, delta=delta, seed=seed
    )
    noisy = mechanism(flat).update
    out, start = [], 0
    for g in grads:
        out.append(noisy[start : start + g.numel()].reshape(g.shape).to(g.dtype))
        start += g.numel()
    return out


def study_inversion(
    *,
    method: str = "geiping",
    examples: int = 8,
    dataset: str = "builtin:digits",
    hidden: tuple[int, ...] = (64, 32),
    steps: int = 300,
    seed: int = 0,
    dp_epsilon: float | None = None,
    dp_clipping_norm: float = 1.0,
    dp_delta: float = 1e-5,
    progress: Callable[[int, int], None] | None = None,
) -> InversionStudy:
    """Invert the single-example updates of ``examples`` test rows against a freshly initialised
    dlsec MLP (the model a first round sends), and score the reconstructions.

    The independent classifier is a logistic regression fitted on the training split.

    With ``dp_epsilon``, each update first goes through the DP-FedAvg mechanism as the server
    would apply it to one client in one round (:class:`DPFedAvg`, ``m = 1``, ``q = 1``, one
    release): clipped to ``dp_clipping_norm`` and given Gaussian noise of std ``z * C``, ``z``
    the smallest multiplier for which Opacus's RDP accountant gives ``(dp_epsilon, dp_delta)``.
    """
    from sklearn.linear_model import LogisticRegression

    from dlsec.core.arch import MLP
    from dlsec.core.data import load_dataset

    data = load_dataset(dataset)
    train, test = data.split(test_size=0.25, seed=seed)
    if not 1 <= examples <= len(test):
        raise UsageError(f"examples must lie in 1..{len(test)}, got {examples}")
    judge = LogisticRegression(max_iter=2000).fit(train.x.reshape(len(train), -1), train.y)
    torch.manual_seed(seed)
    model = MLP(in_features=int(np.prod(data.spec.shape)), num_classes=data.spec.num_classes, hidden=hidden)
    pick = np.random.default_rng(seed).choice(len(test), size=examples, replace=False)
    bounds = (float(np.min(data.x)), float(np.max(data.x)))
    privacy: dict[str, float] | None = None
    z = 0.0
    if dp_epsilon is not None:
        from dlsec.federated._dp import noise_for_epsilon

        z = noise_for_epsilon(dp_epsilon, sample_rate=1.0, rounds=1, delta=dp_delta)
        privacy = {
            "epsilon": float(dp_epsilon),
            "delta": dp_delta,
            "noise_multiplier": z,
            "clipping_norm": dp_clipping_norm,
        }
    recs, got = [], []
    for i, row in enumerate(pick):
        x, y = torch.from_numpy(test.x[row].copy()), int(test.y[row])
        grads = single_example_gradients(model, x, y)
        if privacy is not None:
            grads = _privatise(grads, z, dp_clipping_norm, dp_delta, seed=seed + i)
        result = invert_gradients(
            model,
            grads,
            shape=tuple(x.shape),
            num_classes=data.spec.num_classes,
            method=method,
            steps=steps,
            bounds=bounds,
            seed=seed + i,
        )
        recs.append(result.x)
        got.append(result.label)
        if progress is not None:
            progress(i + 1, examples)
    truths = test.x[pick]
    rec = np.stack(recs).astype(np.float32)
    study = InversionStudy(method, truths, rec, test.y[pick], np.asarray(got), privacy=privacy)
    predicted = judge.predict(rec.reshape(len(rec), -1))
    for t, r, p, y in zip(truths, rec, predicted, test.y[pick], strict=True):
        study.psnr.append(psnr(r, t, data_range=bounds[1] - bounds[0]))
        study.ssim.append(ssim(r, t, data_range=bounds[1] - bounds[0]))
        study.recognised.append(bool(p == y))
    return study
