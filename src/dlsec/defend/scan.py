"""Model backdoor scan: Neural Cleanse trigger reverse engineering (Wang et al. 2019).

For every class ``t``, the smallest mask ``m`` and pattern ``p`` that send clean inputs to
``t`` are found by gradient descent on ``CE(f((1 - m) x + m p), t) + lambda * |m|_1``. A
backdoor's target needs a far smaller trigger than any other class; the anomaly index of a
class is how many robust standard deviations (1.4826 MAD) its mask's L1 norm lies below the
median. A class whose index exceeds ``threshold`` (2 in the paper) is a backdoor target,
provided its trigger is also clearly smaller than the next smallest class's (at most
``margin`` times its L1 norm): label noise makes several classes cheap to reach at once
(random flipping at 10% gave two classes anomaly indices of 4.6 and 3.2, with mask norms 7.4
and 8.4), whereas an all-to-one backdoor leaves one class far below every other (ratios of
0.27-0.64 on digits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlsec.core.data import Dataset
from dlsec.core.model import WhiteBoxModel, inference_mode
from dlsec.core.seeding import torch_generator
from dlsec.errors import SecurityFinding, UsageError

__all__ = ["BackdoorFound", "NeuralCleanse", "ScanReport"]

_PERIOD = 10  # steps between updates of the L1 weight
_SUCCESS = 0.95  # the trigger must send this fraction of clean inputs to the class


class BackdoorFound(SecurityFinding):
    """A backdoor scan found a class reachable by an abnormally small trigger."""


@dataclass(frozen=True)
class ScanReport:
    """The verdict of a backdoor scan.

    Attributes:
        backdoor: whether a backdoor was found.
        target: the suspected target class (the most anomalous one), or ``None``.
        anomaly_index: per class, the robust z-score of how small its trigger is.
        mask_l1: per class, the L1 norm of the reconstructed mask.
        success: per class, the fraction of clean inputs of other classes the reconstructed
            trigger sends to it.
        masks: ``(classes, H, W)`` reconstructed masks (1 where the trigger is stamped).
        patterns: ``(classes, *input shape)`` reconstructed patterns.
        threshold: the anomaly-index threshold used.
    """

    backdoor: bool
    target: int | None
    anomaly_index: np.ndarray
    mask_l1: np.ndarray
    success: np.ndarray
    masks: np.ndarray
    patterns: np.ndarray
    threshold: float

    def to_dict(self, *, with_trigger: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backdoor": self.backdoor,
            "target": self.target,
            "threshold": self.threshold,
            "anomaly_index": [round(float(v), 4) for v in self.anomaly_index],
            "mask_l1": [round(float(v), 4) for v in self.mask_l1],
            "trigger_success": [round(float(v), 4) for v in self.success],
        }
        if with_trigger and self.target is not None:
            out["trigger"] = {
                "mask": np.round(self.masks[self.target], 4).tolist(),
                "pattern": np.round(self.patterns[self.target], 4).tolist(),
            }
        return out


class NeuralCleanse:
    """Neural Cleanse: reverse-engineer a minimal trigger per class; flag abnormally small ones.

    Args:
        steps: optimisation steps per class.
        lr: Adam learning rate on the mask and pattern parameters.
        l1_weight: initial weight of the mask's L1 norm; adjusted every few steps as in the
            paper (up while the trigger reaches 95% success, down when it does not).
        threshold: anomaly index above which a class is a backdoor target.
        margin: the target's mask L1 norm must also be at most this fraction of the next
            smallest class's; 1 turns the check off (scan for several targets at once that way,
            at the cost of flagging models trained on noisy labels).
        max_examples: clean examples the trigger is optimised on.
        seed: seeds the initial mask and pattern.

    Example:
        >>> report = NeuralCleanse().scan(model, clean_sample)      # doctest: +SKIP
        >>> report.backdoor, report.target                           # doctest: +SKIP
        (True, 0)
    """

    def __init__(
        self,
        *,
        steps: int = 300,
        lr: float = 0.1,
        l1_weight: float = 0.001,
        threshold: float = 2.0,
        margin: float = 0.75,
        max_examples: int = 128,
        seed: int = 0,
    ) -> None:
        self.steps = steps
        self.lr = lr
        self.l1_weight = l1_weight
        self.threshold = threshold
        self.margin = margin
        self.max_examples = max_examples
        self.seed = seed

    def _check(self, model: WhiteBoxModel, data: Dataset) -> None:
        if not isinstance(model, WhiteBoxModel):
            raise UsageError("the backdoor scan needs a white-box model (gradients)")
        if model.spec.kind != "image" or len(model.spec.shape) != 3:
            raise UsageError("the Neural Cleanse scan works on image models (C, H, W inputs)")
        for name in ("steps", "max_examples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0 or not self.l1_weight >= 0 or not self.threshold > 0:
            raise UsageError("lr and threshold must be positive and l1_weight non-negative")
        if not 0 < self.margin <= 1:
            raise UsageError(f"margin must be in (0, 1], got {self.margin}")
        if model.spec.num_classes < 3:
            raise UsageError("the anomaly index needs at least 3 classes")
        if len(data) < 2:
            raise UsageError("the scan needs at least two clean examples")

    def scan(self, model: WhiteBoxModel, data: Dataset) -> ScanReport:
        """Scan ``model`` with clean examples ``data``; never raises on a finding (see :meth:`check`)."""
        self._check(model, data)
        k = model.spec.num_classes
        x_all = torch.from_numpy(data.x[: self.max_examples]).to(model.device)
        y_all = torch.from_numpy(data.y[: self.max_examples]).to(model.device)
        masks, patterns, norms, success = [], [], [], []
        with inference_mode(model.module):
            for t in range(k):
                keep = y_all != t
                x = x_all[keep] if keep.any() else x_all
                mask, pattern, rate = self._reverse(model, x, t)
                masks.append(mask)
                patterns.append(pattern)
                norms.append(float(np.abs(mask).sum()))
                success.append(rate)
        l1 = np.array(norms)
        med = np.median(l1)
        mad = 1.4826 * np.median(np.abs(l1 - med))
        anomaly = (med - l1) / (mad if mad > 1e-12 else 1e-12)
        target = int(np.argmax(anomaly))
        runner_up = float(np.min(np.delete(l1, target)))
        unique = l1[target] <= self.margin * runner_up or self.margin >= 1
        found = bool(anomaly[target] > self.threshold and success[target] >= 0.5 and unique)
        return ScanReport(
            backdoor=found,
            target=target if found else None,
            anomaly_index=anomaly,
            mask_l1=l1,
            success=np.array(success),
            masks=np.stack(masks),
            patterns=np.stack(patterns),
            threshold=self.threshold,
        )

    def check(self, model: WhiteBoxModel, data: Dataset) -> ScanReport:
        """Like :meth:`scan`, but raise :class:`BackdoorFound` when the model carries a backdoor."""
        report = self.scan(model, data)
        if report.backdoor:
            raise BackdoorFound(
                f"backdoor suspected: class {report.target} is reached by a trigger of mask L1 "
                f"{report.mask_l1[report.target]:.2f} "
                f"(anomaly index {report.anomaly_index[report.target]:.1f})"
            )
        return report

    def _reverse(
        self, model: WhiteBoxModel, x: torch.Tensor, target: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        spec = model.spec
        c, h, w = spec.shape
        lo = spec.lower_tensor(device=model.device)
        hi = spec.upper_tensor(device=model.device)
        gen = torch_generator(self.seed + target)
        mask_param = (
            (torch.randn(1, 1, h, w, generator=gen) * 0.1 - 2.0).to(model.device).requires_grad_(True)
        )
        pattern_param = (torch.randn(1, c, h, w, generator=gen) * 0.1).to(model.device).requires_grad_(True)
        opt = torch.optim.Adam([mask_param, pattern_param], lr=self.lr)
        labels = torch.full((x.shape[0],), target, device=model.device, dtype=torch.long)
        weight = self.l1_weight
        best: tuple[float, torch.Tensor, torch.Tensor, float] | None = None
        hits = 0.0
        for step in range(self.steps):
            mask = torch.sigmoid(mask_param)
            pattern = lo + (hi - lo) * torch.sigmoid(pattern_param)
            logits = model((1 - mask) * x + mask * pattern)
            loss = torch.nn.functional.cross_entropy(logits, labels) + weight * mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hits += float((logits.argmax(1) == labels).float().mean())
            if (step + 1) % _PERIOD == 0:
                # Neural Cleanse's schedule: raise the L1 weight while the trigger works, lower it
                # when it stops working; keep the smallest mask that reached the success goal.
                rate = hits / _PERIOD
                hits = 0.0
                l1 = float(mask.detach().sum())
                if rate >= _SUCCESS and (best is None or l1 < best[0]):
                    best = (l1, mask.detach().clone(), pattern.detach().clone(), rate)
                weight = weight * 1.5 if rate >= _SUCCESS else weight / 1.5**1.5
        with torch.no_grad():
            if best is None:
                mask = torch.sigmoid(mask_param)
                pattern = lo + (hi - lo) * torch.sigmoid(pattern_param)
            else:
                mask, pattern = best[1], best[2]
            rate = float((model((1 - mask) * x + mask * pattern).argmax(1) == target).float().mean())
        return mask[0, 0].detach().cpu().numpy(), pattern[0].expand(c, h, w).detach().cpu().numpy(), rate
