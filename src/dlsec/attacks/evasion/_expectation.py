"""Expectation over a randomised model's forward passes, batched: the engine of EOT.

A randomised model (noise on its input, a random transformation, test-time dropout) answers a
question differently each time, so an attack asks it ``samples`` times and averages
(expectation over transformation, Athalye et al. 2018). The passes are stacked along the batch
dimension: the batch is repeated ``samples`` times, run through the model in one forward (and
one backward) pass, and the result reshaped to ``(samples, N, K)``. When ``samples * N`` rows
would be too many for one pass, the draws go in a few stacked passes of at most ``max_rows``
rows each.

Stacking assumes the model draws its randomness per row (``torch.randn_like(x)``). A model that
draws once per call (one random transformation for the whole batch) would give every stacked
copy the same draw; :class:`ExpectationModel` checks for that on first use and then runs one
pass per draw instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dlsec.core.model import WhiteBoxModel

__all__ = ["ExpectationModel", "expected_scores"]

#: Input values in one stacked pass by default (16 MiB of float32 inputs; the activations are
#: those of an ordinary batch of that many rows).
_STACK_VALUES = 2**22
_MAX_ROWS = 16384
#: Two passes closer than this are the same draw (the masking check's threshold).
_SAME = 1e-5

#: A per-draw loss for :meth:`ExpectationModel.loss_and_grad`: stacked logits ``(m, N, K)`` to ``(m, N)``.
DrawLoss = Callable[[torch.Tensor], torch.Tensor]


class ExpectationModel(WhiteBoxModel):
    """A randomised white-box model seen through ``samples`` forward passes per question.

    Calling it returns the log of the mean softmax over the passes (the expected prediction,
    differentiable); :meth:`draws` returns the passes' logits themselves, and
    :meth:`loss_and_grad` the mean of a per-draw loss and its gradient (the mean of the
    per-draw gradients, as AutoAttack's ``rand`` version computes it), one stacked forward and
    backward pass at a time.

    Args:
        model: the randomised model.
        samples: forward passes per question.
        max_rows: rows in one stacked pass (default: about 4M input values' worth, at most
            16,384 rows, and never fewer than one batch).

    Example:
        >>> eot = ExpectationModel(noisy_model, samples=20)          # doctest: +SKIP
        >>> eot.draws(x).shape                                        # doctest: +SKIP
        torch.Size([20, 64, 10])
    """

    def __init__(self, model: WhiteBoxModel, samples: int, *, max_rows: int | None = None) -> None:
        super().__init__(model.module, model.spec, device=model.device, batch_size=model.batch_size)
        self._norm = model._norm
        self.samples = samples
        self.max_rows = max_rows
        self._inner = model
        self._per_call: bool | None = None  # True: the model draws once per call (no stacking)

    # ------------------------------------------------------------------ stacking
    def plan(self, x: torch.Tensor) -> list[int]:
        """Draws per stacked pass for the batch ``x`` (they add up to ``samples``)."""
        n = max(len(x), 1)
        if self.samples > 1 and self._per_call is None and len(x):
            self._per_call = self._draws_per_call(x)
        if self._per_call:
            return [1] * self.samples
        rows = self.max_rows or min(_MAX_ROWS, max(1, _STACK_VALUES // self.spec.num_features))
        per_pass = max(1, min(self.samples, rows // n))
        full, rest = divmod(self.samples, per_pass)
        return [per_pass] * full + ([rest] if rest else [])

    def _draws_per_call(self, x: torch.Tensor) -> bool:
        """Whether the model draws its randomness once per call rather than once per row."""
        probe = x[:8].detach()
        with torch.no_grad():
            twice = self._inner(probe.repeat(2, *([1] * (probe.ndim - 1)))).reshape(2, len(probe), -1)
            if float((twice[0] - twice[1]).abs().max()) > _SAME:
                return False  # rows of one call differ: per-row draws, stacking works
            again = self._inner(probe)
        # Copies in one call agree; if another call differs, each call draws once.
        return float((again - twice[0]).abs().max()) > _SAME

    def stacked(self, x: torch.Tensor, draws: int) -> torch.Tensor:
        """Logits of ``draws`` passes on ``x`` in one forward pass, shape ``(draws, N, K)``."""
        if draws == 1:
            return self._inner(x).unsqueeze(0)
        logits = self._inner(x.repeat(draws, *([1] * (x.ndim - 1))))
        return logits.reshape(draws, len(x), -1)

    def draws(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``samples`` passes on ``x``, shape ``(samples, N, K)`` (differentiable)."""
        return torch.cat([self.stacked(x, m) for m in self.plan(x)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The log of the mean softmax over the passes: the expected prediction's log-probabilities."""
        probs = torch.softmax(self.draws(x), dim=-1).mean(0)
        return torch.log(probs.clamp_min(1e-30))

    def loss_and_grad(
        self, x: torch.Tensor, loss: DrawLoss, hold: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The mean over the passes of ``loss`` and its gradient at ``x``, with the passes' logits.

        Each stacked pass runs forward and backward before the next (memory holds one pass's
        graph). ``hold`` maps the input before the model (the oracle's frozen features).

        Returns:
            the logits ``(samples, N, K)`` (detached), the mean loss ``(N,)`` and its gradient.
        """
        point = x.detach().requires_grad_(True)
        logits, total, grad = [], torch.zeros(len(x), device=x.device), torch.zeros_like(x)
        for m in self.plan(x):
            with torch.enable_grad():
                inp = hold(point) if hold is not None else point
                draws = self.stacked(inp, m)
                per_draw = loss(draws)
                (g,) = torch.autograd.grad(per_draw.sum(), point)
            logits.append(draws.detach())
            total += per_draw.detach().sum(0)
            grad += g
        return torch.cat(logits), total / self.samples, grad / self.samples


def expected_scores(
    model: WhiteBoxModel, x: torch.Tensor, y: torch.Tensor, passes: int, *, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score ``x`` by ``passes`` forward passes of a randomised model.

    Returns:
        per example: the class most passes predict (ties: the lowest), and the fraction of
        passes that predict ``y`` (float64).
    """
    eot = ExpectationModel(model, passes)
    votes, rates = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            pred = eot.draws(x[i : i + batch_size]).argmax(-1)  # (passes, n)
            counts = torch.nn.functional.one_hot(pred, model.spec.num_classes).sum(0)
            votes.append(counts.argmax(1))
            rates.append((pred == y[i : i + batch_size]).double().mean(0))
    if not votes:
        empty = torch.empty(0, device=x.device)
        return empty.long(), empty.double()
    return torch.cat(votes), torch.cat(rates)
