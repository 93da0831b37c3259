"""HopSkipJump: a decision-based minimal-norm attack (Chen, Jordan & Wainwright, 2020).

Reference: J. Chen, M. I. Jordan, M. J. Wainwright, "HopSkipJumpAttack: a query-efficient
decision-based attack", IEEE Symposium on Security and Privacy 2020,
https://arxiv.org/abs/1904.02144.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch

from dlsec.attacks.evasion.base import Attack, Oracle, register_attack
from dlsec.core.model import Access
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["HopSkipJump"]

# Binary searches stop at this relative precision at the latest: the paper's threshold
# (gamma / d^1.5 for L2) alone is coarse for low-dimensional inputs (0.35 of the distance
# for d = 2); for images it is already finer and is used as it is.
_SEARCH_TOL = 1e-3
# Values per chunk of the gradient-estimation batch (examples x evaluations x features).
_CHUNK = 1 << 23
# Halvings of the geometric step search before an iteration gives up.
_MAX_HALVINGS = 30


@register_attack("hsj")
class HopSkipJump(Attack):
    """HopSkipJump (Chen, Jordan & Wainwright, S&P 2020): decision-based, minimal L2 or L-inf.

    From an adversarial starting point, each iteration (``t = 1, 2, ...``)

    1. estimates the direction of the boundary's normal at the current boundary point by Monte
       Carlo: ``init_evals * sqrt(t)`` (at most ``max_evals``) labels at random probes of
       radius ``delta`` (``0.1`` of the input range first, then ``sqrt(d) * theta * dist``
       for L2, ``d * theta * dist`` for L-inf), with the paper's baseline subtraction;
    2. steps along it (its sign for L-inf) from ``dist / sqrt(t)``, halving the step until
       the point is adversarial (geometric step search);
    3. binary-searches back to the boundary between ``x`` and that point (along the segment
       for L2, by shrinking an L-inf box around ``x`` for L-inf).

    ``theta`` is ``gamma / d^1.5`` (L2) or ``gamma / d^2`` (L-inf); binary searches also stop
    no later than a relative precision of 1e-3, which matters only for low-dimensional inputs.
    The closest adversarial point found is returned.

    Starting point: the nearest (in the attack's norm) other example of the batch whose clean
    label already satisfies the goal (for a targeted attack, one classified as the target; this
    costs no query), otherwise seeded uniform noise within the bounds, up to ``init_tries``
    draws. Examples with no starting point, or already fooled, are returned unchanged.

    Budget: every example uses at most ``max_queries`` queries in all (the clean check, the
    search for a starting point and every iteration); iterations stop when the next one would
    not fit, or, when ``eps`` is given, as soon as the example is within ``eps``.

    Args:
        norm: ``l2`` or ``linf``.
        eps: optional budget; when given, an example stops once within it (and the result is
            projected onto it).
        max_queries: query budget per example.
        init_evals: evaluations of the first gradient estimate (100 in the paper).
        max_evals: most evaluations of one gradient estimate (10,000 in the paper), capped by
            the budget left.
        gamma: sets the binary-search threshold ``theta`` (1.0 in the paper).
        init_tries: uniform-noise draws to find a starting point.
        targeted: reach ``target`` instead of leaving ``y``.
        seed: seeds every random draw.
        batch_size: examples attacked at once.

    Example:
        >>> from dlsec.attacks.evasion.hsj import HopSkipJump
        >>> attack = HopSkipJump(norm="l2", max_queries=5000, seed=0)
        >>> result = attack(model.as_decision(), x, y)        # doctest: +SKIP
        >>> result.norms.median()                             # doctest: +SKIP
    """

    access: ClassVar[Access] = Access.DECISION
    norms: ClassVar[tuple[str, ...]] = ("l2", "linf")
    minimal: ClassVar[bool] = True

    def __init__(
        self,
        *,
        norm: str = "l2",
        eps: float | None = None,
        max_queries: int = 5000,
        init_evals: int = 100,
        max_evals: int = 10000,
        gamma: float = 1.0,
        init_tries: int = 100,
        targeted: bool = False,
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, seed=seed, batch_size=batch_size)
        for name, value in (
            ("max_queries", max_queries),
            ("init_evals", init_evals),
            ("max_evals", max_evals),
            ("init_tries", init_tries),
        ):
            positive_int(name, value)
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 < gamma < math.inf:
            raise UsageError(f"gamma must be a positive number, got {gamma!r}")
        self.max_queries = max_queries
        self.init_evals = init_evals
        self.max_evals = max_evals
        self.gamma = gamma
        self.init_tries = init_tries

    # ------------------------------------------------------------------ geometry
    def _dist(self, delta: torch.Tensor) -> torch.Tensor:
        return self._norm.distance(delta)

    @staticmethod
    def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.reshape(-1, *([1] * (like.ndim - 1)))

    def _toward(self, x: torch.Tensor, adv: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The point at ``alpha`` between ``x`` and ``adv``: a blend for L2, a box for L-inf."""
        a = self._col(alpha, x)
        if self._norm.name == "l2":
            return (1 - a) * x + a * adv
        return torch.minimum(torch.maximum(adv, x - a), x + a)

    # ------------------------------------------------------------------ the attack
    def run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        n, d = x.shape[0], x[0].numel()
        lower = model.spec.lower_tensor(device=x.device)
        upper = model.spec.upper_tensor(device=x.device)
        span = float((upper - lower).max())
        l2 = self._norm.name == "l2"
        theta = self.gamma / (d * math.sqrt(d)) if l2 else self.gamma / d**2
        tol = min(theta, _SEARCH_TOL)
        # Worst case of one binary search, reserved before anything that must end with one.
        search_cost = math.ceil(math.log2(max(1.0, span) / tol)) + 1
        budget = self.max_queries
        used = torch.zeros(n, dtype=torch.long)

        def goal(points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            pred = model.predict(points)
            used.index_add_(0, rows.cpu(), torch.ones(len(rows), dtype=torch.long))
            return pred == target[rows] if target is not None else pred != y[rows]

        clean_pred = model.predict(x)
        used += 1
        fooled = clean_pred == target if target is not None else clean_pred != y
        start, found = self._start(
            x, y, target, clean_pred, ~fooled, lower, upper, goal, used, budget - search_cost, gen
        )

        found &= used.to(x.device) + search_cost <= budget
        out = x.clone()
        idx = (found & ~fooled).nonzero().squeeze(1)
        if idx.numel() == 0:
            return out
        cur, dist = self._search(x[idx], start[idx], idx, goal, tol)
        best, best_dist = cur.clone(), dist.clone()
        active = torch.ones(len(idx), dtype=torch.bool, device=x.device)
        t = 0
        while True:
            if self.eps is not None:
                active &= best_dist > self.eps
            left = budget - used[idx.cpu()].to(x.device)
            wanted = min(int(self.init_evals * math.sqrt(t + 1)), self.max_evals)
            evals = torch.clamp(left - search_cost - 1, max=wanted)
            active &= evals >= 1
            sel = active.nonzero().squeeze(1)
            if sel.numel() == 0:
                break
            t += 1
            rows = idx[sel]
            if t == 1:
                delta = torch.full((len(sel),), 0.1 * span, device=x.device)
            else:
                delta = (math.sqrt(d) if l2 else d) * theta * dist[sel]
            grad = self._gradient(cur[sel], rows, evals[sel], delta, lower, upper, goal, gen)
            update = grad if l2 else grad.sign()
            stepped, ok = self._step(
                cur[sel],
                update,
                dist[sel] / math.sqrt(t),
                rows,
                lower,
                upper,
                goal,
                budget - search_cost,
                used,
            )
            active[sel[~ok]] = False
            sel, rows, stepped = sel[ok], rows[ok], stepped[ok]
            if sel.numel() == 0:
                continue
            new, new_dist = self._search(x[rows], stepped, rows, goal, tol)
            cur[sel], dist[sel] = new, new_dist
            better = new_dist < best_dist[sel]
            best[sel[better]], best_dist[sel[better]] = new[better], new_dist[better]
        out[idx] = best
        return out

    def _start(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        clean_pred: torch.Tensor,
        todo: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        goal: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        used: torch.Tensor,
        limit: int,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """An adversarial starting point per example: the nearest batch example, else noise."""
        n = x.shape[0]
        start = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        wanted = target if target is not None else y
        if n > 1:
            same = clean_pred[None, :] == wanted[:, None]
            ok = same if target is not None else ~same
            ok &= ~torch.eye(n, dtype=torch.bool, device=x.device)
            flat = x.reshape(n, -1)
            p = 2.0 if self._norm.name == "l2" else math.inf
            dists = torch.cdist(flat[None], flat[None], p=p)[0].masked_fill(~ok, math.inf)
            nearest = dists.argmin(dim=1)
            has = ok.any(dim=1) & todo
            start[has] = x[nearest[has]]
            found |= has
        for _ in range(self.init_tries):
            rows = (todo & ~found & (used.to(x.device) < limit)).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            u = torch.rand((len(rows), *x.shape[1:]), generator=gen).to(x.device)
            noise = lower + u * (upper - lower)
            hit = goal(noise, rows)
            start[rows[hit]] = noise[hit]
            found[rows[hit]] = True
        return start, found

    def _search(
        self,
        x: torch.Tensor,
        adv: torch.Tensor,
        rows: torch.Tensor,
        goal: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        tol: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Binary search from the adversarial ``adv`` towards ``x``: the last adversarial point."""
        if self._norm.name == "l2":
            high = torch.ones(len(x), device=x.device)
            thresholds = torch.full_like(high, tol)
        else:
            high = self._dist(adv - x)
            thresholds = torch.clamp(high * tol, max=tol)
        low = torch.zeros_like(high)
        while True:
            pending = ((high - low) > thresholds).nonzero().squeeze(1)
            if pending.numel() == 0:
                break
            mid = (high[pending] + low[pending]) / 2
            hit = goal(self._toward(x[pending], adv[pending], mid), rows[pending])
            high[pending] = torch.where(hit, mid, high[pending])
            low[pending] = torch.where(hit, low[pending], mid)
        out = self._toward(x, adv, high)
        return out, self._dist(out - x)

    def _gradient(
        self,
        cur: torch.Tensor,
        rows: torch.Tensor,
        evals: torch.Tensor,
        delta: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        goal: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        gen: torch.Generator,
    ) -> torch.Tensor:
        """Monte-Carlo estimate of the boundary normal at ``cur`` (unit L2), per example.

        ``evals[i]`` probes for example ``i``, drawn and queried in blocks of bounded size. With
        the labels ``f = +-1`` of the probes ``u``, the estimate is ``mean((f - mean f) u)``
        (the paper's baseline), or ``mean(f u)`` when all labels agree.
        """
        k, shape = cur.shape[0], cur.shape[1:]
        d = cur[0].numel()
        ones = [1] * len(shape)
        grads = torch.empty_like(cur)
        block = max(1, min(int(evals.max()), _CHUNK // d))  # probes per example and pass
        per = max(1, _CHUNK // (block * d))  # examples per pass
        for lo in range(0, k, per):
            sl = slice(lo, lo + per)
            b, m, count = len(cur[sl]), int(evals[sl].max()), evals[sl].float()
            dl = delta[sl].reshape(b, 1, *ones)
            sum_fu = torch.zeros_like(cur[sl])
            sum_u = torch.zeros_like(cur[sl])
            sum_f = torch.zeros(b, device=cur.device)
            for first in range(0, m, block):
                mb = min(block, m - first)
                if self._norm.name == "l2":
                    u = torch.randn((b, mb, *shape), generator=gen)
                else:
                    u = torch.rand((b, mb, *shape), generator=gen) * 2 - 1
                u = u.to(cur.device)
                u = u / u.reshape(b, mb, -1).norm(dim=2).reshape(b, mb, *ones)
                probes = torch.clamp(cur[sl, None] + dl * u, lower, upper)
                u = (probes - cur[sl, None]) / dl
                valid = first + torch.arange(mb, device=cur.device)[None, :] < evals[sl, None]
                hit = goal(probes[valid], rows[sl, None].expand(b, mb)[valid])
                f = torch.zeros(b, mb, device=cur.device)
                f[valid] = hit.float() * 2 - 1
                sum_fu += (f.reshape(b, mb, *ones) * u).sum(1)
                sum_u += (valid.reshape(b, mb, *ones) * u).sum(1)
                sum_f += f.sum(1)
            mean = (sum_f / count).reshape(b, *ones)
            g = torch.where(mean.abs() == 1, sum_fu, sum_fu - mean * sum_u) / count.reshape(b, *ones)
            grads[sl] = g / (g.reshape(b, -1).norm(dim=1).reshape(b, *ones) + 1e-12)
        return grads

    def _step(
        self,
        cur: torch.Tensor,
        update: torch.Tensor,
        size: torch.Tensor,
        rows: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
        goal: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        limit: int,
        used: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Geometric step search: halve the step from ``size`` until the point is adversarial.

        Returns the stepped points and which examples found one within their budget.
        """
        size = size.clone()
        out = cur.clone()
        ok = torch.zeros(len(cur), dtype=torch.bool, device=cur.device)
        pending = torch.ones_like(ok)
        for _ in range(_MAX_HALVINGS):
            pending &= used[rows.cpu()].to(cur.device) < limit
            sel = pending.nonzero().squeeze(1)
            if sel.numel() == 0:
                break
            cand = torch.clamp(cur[sel] + self._col(size[sel], cur) * update[sel], lower, upper)
            hit = goal(cand, rows[sel])
            out[sel[hit]] = cand[hit]
            ok[sel[hit]] = True
            pending[sel[hit]] = False
            size[sel[~hit]] /= 2
        return out, ok
