"""Square Attack: a score-based random search (Andriushchenko et al., ECCV 2020).

Reference: M. Andriushchenko, F. Croce, N. Flammarion, M. Hein, "Square Attack: a
query-efficient black-box adversarial attack via random search", ECCV 2020,
https://arxiv.org/abs/1912.00049. The defaults are those AutoAttack runs (``n_queries=5000``,
``p_init=0.8``, margin loss, one restart).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from dlsec.attacks.evasion.base import Attack, Oracle, register_attack
from dlsec.core.model import Access
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["Square"]

# The paper's piecewise-constant schedule: p = p_init / 2**k once the iteration count, rescaled
# to a budget of 10,000 queries, passes each of these thresholds.
_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def _p_at(p_init: float, i: int, n_queries: int) -> float:
    """Fraction of the input changed at iteration ``i`` (the schedule, rescaled to the budget)."""
    it = int(i / n_queries * 10000)
    halvings = sum(1 for t in _SCHEDULE if it > t)
    return p_init / 2**halvings


def _layout(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(channels, height, width)`` the attack sees for one example of ``shape``.

    ``(c, h, w)`` images are used as they are and ``(h, w)`` as one channel. Anything else
    (tabular rows, sequences, higher ranks) is flattened to one row of ``(1, 1, d)``: its
    "squares" are windows of contiguous features.
    """
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    return 1, 1, math.prod(shape)


def _nested(a: int, b: int) -> torch.Tensor:
    """An ``a x b`` block of nested rectangles around its centre, weights ``1/(k+1)^2``; unit L2."""
    out = torch.zeros(a, b)
    if a == 0 or b == 0:
        return out
    ca, cb = a // 2, b // 2
    for k in range(max(ca, cb) + 1):
        out[max(ca - k, 0) : min(ca + k + 1, a), max(cb - k, 0) : min(cb + k + 1, b)] += 1.0 / (k + 1) ** 2
    return out / out.norm()


def _eta(rows: int, cols: int) -> torch.Tensor:
    """The paper's L2 update pattern: two halves of opposite sign, each peaked at its centre.

    A square (``rows == cols``) is split into a top and a bottom half; a 1-D window
    (``rows == 1``) into a left and a right half. Unit L2 norm.
    """
    if rows == 1:
        half = cols // 2
        out = torch.cat([_nested(1, half), -_nested(1, cols - half)], dim=1)
    else:
        half = rows // 2
        out = torch.cat([_nested(half, cols), -_nested(rows - half, cols)], dim=0)
    return out / out.norm()


def _eta_batch(k: int, rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` copies of :func:`_eta`, each transposed (squares) or mirrored (windows) at random."""
    eta = _eta(rows, cols)
    alt = eta.flip(1) if rows == 1 else eta.t()
    flip = torch.rand(k, generator=gen) < 0.5
    return torch.where(flip[:, None, None], alt, eta)


def _signs(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen).float() * 2 - 1


@register_attack("square")
class Square(Attack):
    """Square Attack (Andriushchenko et al., ECCV 2020): score-based random search, L-inf or L2.

    Each iteration changes one randomly placed square of side ``sqrt(p * h * w)`` of the current
    perturbation and keeps the change when the margin loss ``log p_y - max_{k != y} log p_k``
    (of the probabilities the model returns, i.e. the logit margin) decreases; the fraction
    ``p`` of changed pixels follows the paper's piecewise schedule from ``p_init``, rescaled to
    the query budget. Only examples not yet fooled are queried.

    * L-inf starts from vertical stripes (``x + eps * s``, one random sign per column and
      channel) and sets a square, per channel, to ``x +- eps``.
    * L2 starts from a grid of the paper's two-halves patterns scaled to ``eps`` and moves mass
      from a second random square into the updated one, keeping the norm at ``eps``.

    Inputs that are not images (tabular rows, anything other than ``(c, h, w)`` or ``(h, w)``)
    are treated as one row of features: a "square" is a window of ``p * d`` contiguous features.

    Targeted, it minimises the cross-entropy of the target and stops once the target wins.

    Budget: one query per example on the clean input (examples already fooled are returned
    unchanged), then at most ``n_queries`` per example and restart (the initialisation
    included).

    Args:
        eps: budget in the chosen norm.
        norm: ``linf`` or ``l2``.
        n_queries: queries per example and restart.
        p_init: initial fraction of the input changed per step (0.8 in AutoAttack).
        restarts: independent runs; later ones attack only examples not yet fooled.
        targeted: reach ``target`` instead of leaving ``y``.
        seed: seeds every random draw.
        batch_size: examples attacked at once.

    Example:
        >>> from dlsec.attacks.evasion.square import Square
        >>> attack = Square(eps=8 / 255, norm="linf", n_queries=5000, p_init=0.8, seed=0)
        >>> result = attack(model.as_score(), x, y)           # doctest: +SKIP
        >>> result.robust_accuracy, result.queries            # doctest: +SKIP
    """

    access: ClassVar[Access] = Access.SCORE
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    def __init__(
        self,
        *,
        eps: float,
        norm: str = "linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        targeted: bool = False,
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, seed=seed, batch_size=batch_size)
        positive_int("n_queries", n_queries)
        if isinstance(p_init, bool) or not isinstance(p_init, int | float) or not 0 < p_init <= 1:
            raise UsageError(f"p_init must lie in (0, 1], got {p_init!r}")
        positive_int("restarts", restarts)
        self.n_queries = n_queries
        self.p_init = p_init
        self.restarts = restarts

    # ------------------------------------------------------------------ the search
    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        n = x.shape[0]
        c, h, w = _layout(tuple(x.shape[1:]))
        xs = x.reshape(n, c, h, w)
        lower = self._bound(model.spec.lower_tensor(device=x.device), c, h, w)
        upper = self._bound(model.spec.upper_tensor(device=x.device), c, h, w)
        labels = target if target is not None else y
        best = xs.clone()
        _, reached = self._loss(model, xs, labels, target is not None)
        todo = ~reached
        for _ in range(self.restarts):
            idx = todo.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            search = self._linf if self._norm.name == "linf" else self._l2
            adv, fooled = search(model, xs[idx], labels[idx], target is not None, lower, upper, gen)
            best[idx] = adv
            todo[idx[fooled]] = False
        return best.reshape(x.shape)

    @staticmethod
    def _bound(bound: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
        return bound if bound.ndim == 0 else bound.reshape(1, c, h, w)

    def _loss(
        self, model: Oracle, x: torch.Tensor, labels: torch.Tensor, targeted: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per example ``(loss, reached)``: the loss to decrease and whether the goal holds.

        Untargeted the loss is the margin ``log p_y - max_{k != y} log p_k``; targeted it is the
        cross-entropy ``-log p_t``. The goal is read from the predicted label (the arg-max, as
        the model's own ``predict`` breaks ties), not from the sign of the margin.
        """
        probs = model.probs(x.reshape(x.shape[0], *model.spec.shape))
        logp = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
        own = logp.gather(1, labels[:, None]).squeeze(1)
        pred = probs.argmax(dim=1)
        if targeted:
            return -own, pred == labels
        others = logp.scatter(1, labels[:, None], -torch.inf).max(dim=1).values
        return own - others, pred != labels

    def _side(self, p: float, h: int, w: int, *, smallest: int) -> int:
        """Side of the square (length of the window for 1-D inputs) covering a fraction ``p``."""
        area = h * w
        s = round(math.sqrt(p * area)) if h > 1 else round(p * area)
        s = max(s, smallest)
        if self._norm.name == "l2" and s % 2 == 0:
            s += 1
        return min(s, h, w) if h > 1 else min(s, w)

    @staticmethod
    def _windows(
        k: int, s: int, h: int, w: int, gen: torch.Generator, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per example a random ``s x s`` square (``1 x s`` window when ``h == 1``).

        Returns the mask ``(k, 1, h, w)`` and the top-left corners ``(k,)``, ``(k,)``.
        """
        sh = s if h > 1 else 1
        top = torch.randint(0, h - sh + 1, (k,), generator=gen)
        left = torch.randint(0, w - s + 1, (k,), generator=gen)
        rows = torch.arange(h)[None, :]
        cols = torch.arange(w)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + sh)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + s)
        mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
        return mask.to(device), top, left

    @staticmethod
    def _accept(
        loss: torch.Tensor, new_loss: torch.Tensor, new_reached: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep a candidate whose loss decreased or that reaches the goal (the paper's rule)."""
        better = new_loss < loss
        return better | new_reached, torch.where(better, new_loss, loss)

    def _linf(
        self,
        model: Oracle,
        x: torch.Tensor,
        labels: torch.Tensor,
        targeted: bool,
        lower: torch.Tensor,
        upper: torch.Tensor,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.eps is not None
        eps = float(self.eps)
        n, c, h, w = x.shape
        # Vertical stripes: one random sign per column and channel.
        stripes = _signs((n, c, 1, w), gen).to(x.device)
        best = torch.clamp(x + eps * stripes, lower, upper)
        loss, reached = self._loss(model, best, labels, targeted)
        for i in range(self.n_queries - 1):
            idx = (~reached).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            k = idx.numel()
            s = self._side(_p_at(self.p_init, i, self.n_queries), h, w, smallest=1)
            mask, _, _ = self._windows(k, s, h, w, gen, x.device)
            step = 2 * eps * _signs((k, c, 1, 1), gen).to(x.device)
            cand = best[idx] + mask * step
            cand = torch.minimum(torch.maximum(cand, x[idx] - eps), x[idx] + eps)
            cand = torch.clamp(cand, lower, upper)
            new_loss, new_reached = self._loss(model, cand, labels[idx], targeted)
            keep, loss[idx] = self._accept(loss[idx], new_loss, new_reached)
            reached[idx] = new_reached & keep
            best[idx] = torch.where(keep[:, None, None, None], cand, best[idx])
        return best, reached

    def _l2_init(self, n: int, c: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
        """A grid of ``eta`` patterns with random signs per example and channel (unnormalised)."""
        delta = torch.zeros(n, c, h, w)
        if h > 1:
            s = max(h // 5, 1)
            rows, cols = h // s, w // s
            sh = s
        else:
            s = max(w // 5, 1)
            rows, cols = 1, w // s
            sh = 1
        top0, left0 = (h - rows * sh) // 2, (w - cols * s) // 2
        for r in range(rows):
            for q in range(cols):
                t, left = top0 + r * sh, left0 + q * s
                pattern = _eta_batch(n, sh, s, gen)[:, None]
                delta[:, :, t : t + sh, left : left + s] += pattern * _signs((n, c, 1, 1), gen)
        return delta

    @staticmethod
    def _l2_norm(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return (t**2).sum(dim=dims, keepdim=True).sqrt()

    def _l2(
        self,
        model: Oracle,
        x: torch.Tensor,
        labels: torch.Tensor,
        targeted: bool,
        lower: torch.Tensor,
        upper: torch.Tensor,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.eps is not None
        eps = float(self.eps)
        n, c, h, w = x.shape
        tiny = 1e-12
        init = self._l2_init(n, c, h, w, gen).to(x.device)
        best = torch.clamp(x + eps * init / (self._l2_norm(init, (1, 2, 3)) + tiny), lower, upper)
        loss, reached = self._loss(model, best, labels, targeted)
        for i in range(self.n_queries - 1):
            idx = (~reached).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            k = idx.numel()
            x_cur = x[idx]
            delta = best[idx] - x_cur
            s = self._side(_p_at(self.p_init, i, self.n_queries), h, w, smallest=3)
            sh = s if h > 1 else 1
            mask1, top, left = self._windows(k, s, h, w, gen, x.device)
            mask2, _, _ = self._windows(k, s, h, w, gen, x.device)
            union = mask1 | mask2
            norm_image = self._l2_norm(delta, (1, 2, 3))
            norm_union = self._l2_norm(delta * union, (2, 3))
            norm_w1 = self._l2_norm(delta * mask1, (2, 3))
            # The eta pattern placed in window 1 of each example.
            eta = _eta_batch(k, sh, s, gen)
            r_idx = (torch.arange(h)[None, :] - top[:, None]).clamp(0, sh - 1)
            c_idx = (torch.arange(w)[None, :] - left[:, None]).clamp(0, s - 1)
            placed = eta[torch.arange(k)[:, None, None], r_idx[:, :, None], c_idx[:, None, :]]
            placed = placed[:, None].to(x.device) * mask1
            # New window content: the pattern plus the old content (normalised), per channel,
            # rescaled so that the budget left over and the mass of both windows go into it.
            new = placed * _signs((k, c, 1, 1), gen).to(x.device) + delta * mask1 / (norm_w1 + tiny)
            scale = torch.sqrt(torch.clamp(eps**2 - norm_image**2, min=0) / c + norm_union**2)
            new = new / (self._l2_norm(new, (2, 3)) + tiny) * scale
            delta = delta * ~mask2
            delta = torch.where(mask1, new, delta)
            delta = eps * delta / (self._l2_norm(delta, (1, 2, 3)) + tiny)
            cand = torch.clamp(x_cur + delta, lower, upper)
            new_loss, new_reached = self._loss(model, cand, labels[idx], targeted)
            keep, loss[idx] = self._accept(loss[idx], new_loss, new_reached)
            reached[idx] = new_reached & keep
            best[idx] = torch.where(keep[:, None, None, None], cand, best[idx])
        return best, reached
