"""FAB, the fast adaptive boundary attack (Croce & Hein, ICML 2020), and its targeted FAB-T."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from dlsec.attacks.evasion.base import Aimable, Aims, Oracle, register_attack
from dlsec.attacks.evasion.deepfool import _class_gradients, _dual_norm
from dlsec.attacks.evasion.wrappers import TopTargets
from dlsec.core.model import Access
from dlsec.core.validate import positive_int
from dlsec.errors import UsageError

__all__ = ["FAB", "FABTargeted"]

_TINY = 1e-12
# Radius of the first random restart of an example with no adversarial point yet and no eps,
# as a multiple of the mean box width: AutoAttack's default budgets for [0, 1] images.
_FALLBACK_RADIUS = {"linf": 0.3, "l2": 1.0, "l1": 5.0}


# ---------------------------------------------------------------------------- projections
#
# Each projection returns, per row, the smallest perturbation ``d`` (in its norm) with
# ``<w, d> = c`` and ``lo <= t + d <= hi``: the projection of ``t`` onto the hyperplane
# ``{z : <w, z> = <w, t> + c}`` intersected with the box (Sec. 3.1 and App. A of the paper).
# When the box cannot reach the hyperplane, ``d`` is the box point that gets closest.
# Everything is batched over rows; ``t, w, lo, hi`` are ``(N, D)``, ``c`` is ``(N,)``.


def _oriented(
    t: torch.Tensor, w: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flip signs so that ``c >= 0``; return ``(w, c, cap)`` where ``cap`` is the room each
    coordinate has in the direction that increases ``<w, d>``."""
    s = torch.where(c < 0, -1.0, 1.0).to(w.dtype)
    w, c = w * s[:, None], c * s
    cap = torch.where(w > 0, hi - t, t - lo).clamp_min(0)
    return w, c, cap


def _solve_capped(a: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The smallest ``lam >= 0`` with ``sum_i a_i * min(lam, r_i) = c`` per row (``inf`` if the
    sum never reaches ``c``). ``a >= 0``, ``r >= 0`` (``inf`` allowed where ``a = 0``), ``c >= 0``.

    The left side is piecewise linear and non-decreasing in ``lam`` with breakpoints at the
    ``r_i``: sort them, evaluate the sum at each, and solve on the segment where it crosses ``c``.
    """
    rs, order = r.sort(dim=1)
    a_s = a.gather(1, order)
    sat = torch.where(a_s > 0, a_s * rs, torch.zeros_like(rs))  # a_j r_j, saturated terms
    cum_sat = sat.cumsum(dim=1)  # sum_{j <= k} a_j r_j
    tail = a_s.flip(1).cumsum(dim=1).flip(1)  # sum_{j >= k} a_j
    tail_after = torch.cat([tail[:, 1:], torch.zeros_like(tail[:, :1])], dim=1)
    at_break = cum_sat + torch.where(tail_after > 0, rs * tail_after, torch.zeros_like(rs))
    k = (at_break < c[:, None]).sum(dim=1, keepdim=True)  # first breakpoint reaching c
    feasible = k.squeeze(1) < r.shape[1]
    kk = k.clamp(max=r.shape[1] - 1)
    before = (cum_sat - sat).gather(1, kk).squeeze(1)
    slope = tail.gather(1, kk).squeeze(1)
    lam = ((c - before) / slope.clamp_min(_TINY)).clamp_min(0)
    return torch.where(feasible, lam, torch.full_like(lam, math.inf))


def _project_linf(
    t: torch.Tensor, w: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> torch.Tensor:
    """L-inf: ``d_i = sign(w_i) * min(delta, cap_i)`` with the smallest ``delta`` that works."""
    w, c, cap = _oriented(t, w, c, lo, hi)
    delta = _solve_capped(w.abs(), cap, c)
    return torch.where(w != 0, w.sign() * torch.minimum(delta[:, None], cap), torch.zeros_like(w))


def _project_l2(
    t: torch.Tensor, w: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> torch.Tensor:
    """L2: ``d_i = clip(lam * w_i)`` to the box (KKT), with ``lam`` solving ``<w, d> = c``."""
    w, c, cap = _oriented(t, w, c, lo, hi)
    nz = w != 0
    ratio = torch.where(nz, cap / w.abs().clamp_min(_TINY), torch.full_like(w, math.inf))
    lam = _solve_capped(w * w, ratio, c)
    return torch.where(nz, w * torch.minimum(lam[:, None], ratio), torch.zeros_like(w))


def _project_l1(
    t: torch.Tensor, w: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
) -> torch.Tensor:
    """L1: move the coordinates with the largest ``|w_i|`` first, each up to its bound."""
    w, c, cap = _oriented(t, w, c, lo, hi)
    absw, order = w.abs().sort(dim=1, descending=True)
    cap_s = cap.gather(1, order)
    gain = absw * cap_s
    cum = gain.cumsum(dim=1)
    k = (cum < c[:, None]).sum(dim=1, keepdim=True)  # the partially used one
    kk = k.clamp(max=w.shape[1] - 1)
    partial = (c - (cum - gain).gather(1, kk).squeeze(1)) / absw.gather(1, kk).squeeze(1).clamp_min(_TINY)
    pos = torch.arange(w.shape[1], device=w.device)[None, :]
    amount = torch.where(pos < k, cap_s, torch.zeros_like(cap_s))
    partial_col = torch.minimum(partial[:, None], cap_s.gather(1, kk))
    amount = torch.where(pos == k, partial_col.expand_as(amount), amount)
    d = torch.zeros_like(w).scatter(1, order, amount)
    return torch.where(w != 0, w.sign() * d, torch.zeros_like(w))


_PROJECTIONS = {"linf": _project_linf, "l2": _project_l2, "l1": _project_l1}


# ---------------------------------------------------------------------------- the attack


@register_attack("fab")
class FAB(Aimable):
    """FAB (Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive
    boundary attack", ICML 2020): a minimal-norm attack in L-inf, L2 or L1.

    Each step linearises the classifier at the current point ``x_i`` and picks the closest
    linearised decision hyperplane (untargeted: over all classes, by ``|f_k| / ||w_k||_q``;
    targeted: the one between the target and the strongest other class). It projects both ``x_i`` and the
    original ``x`` onto that hyperplane intersected with the box (exact, batched projections
    for each norm), then takes the biased step (Eq. 7 of the paper)

        ``x_{i+1} = clip((1 - a) (x_i + eta d_i) + a (x + eta d_x))``,
        ``a = min(||d_i|| / (||d_i|| + ||d_x||), alpha_max)``,

    which keeps the iterate close to ``x``. When ``x_{i+1}`` is adversarial it is recorded
    (the smallest per example is kept) and the backward step
    ``x_{i+1} = x + beta (x_{i+1} - x)`` pulls it back towards ``x`` for the next search.
    Restarts after the first begin at a random point on the sphere of radius half the best
    norm found so far (capped by ``eps`` when given, as in the paper's Sec. 3.3).

    Args:
        norm: ``linf`` (default), ``l2`` or ``l1``.
        eps: optional budget; ``None`` (default) is unbounded. When given, the result is
            projected onto the eps-ball and scored there, and restarts only revisit examples
            not yet fooled within ``eps``; without it every restart tries to shrink the norm.
        steps: iterations per restart (100 as in AutoAttack).
        restarts: runs per example; the first starts at ``x``.
        alpha_max: cap on the bias towards ``x`` (0.1).
        eta: overshoot factor of the projection step (1.05).
        beta: backward-step factor (0.9).
        targeted: aim at ``target`` (the hyperplane between ``y`` and ``target``).
        seed: seeds the random restarts.
        batch_size: examples attacked at once.

    Example:
        >>> from dlsec.attacks.evasion.fab import FAB
        >>> attack = FAB(norm="linf", steps=100, restarts=1)
        >>> result = attack(model, x, y)                      # doctest: +SKIP
        >>> result.summary()["perturbation_norms"]["median"]  # doctest: +SKIP
    """

    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")
    minimal: ClassVar[bool] = True

    def __init__(
        self,
        *,
        norm: str = "linf",
        eps: float | None = None,
        steps: int = 100,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        targeted: bool = False,
        seed: int = 0,
        batch_size: int = 512,
    ) -> None:
        super().__init__(norm=norm, eps=eps, targeted=targeted, seed=seed, batch_size=batch_size)
        for name, value in (("steps", steps), ("restarts", restarts)):
            positive_int(name, value)
        if not _is_number(alpha_max) or not 0 <= alpha_max <= 1:
            raise UsageError(f"alpha_max must lie in [0, 1], got {alpha_max!r}")
        if not _is_number(eta) or eta < 1:
            raise UsageError(f"eta must be a number >= 1, got {eta!r}")
        if not _is_number(beta) or not 0 < beta < 1:
            raise UsageError(f"beta must lie strictly between 0 and 1, got {beta!r}")
        self.steps = steps
        self.restarts = restarts
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta

    # ------------------------------------------------------------------ run
    def search(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        aims: Aims | None,
        gen: torch.Generator,
    ) -> torch.Tensor:
        """``restarts`` runs for each class aimed at: ``target``, or in turn each class ``aims``
        picks from the clean probabilities (none: the closest boundary).

        An example is attacked until an adversarial point is found (within ``eps`` when
        given); each keeps its smallest adversarial perturbation.
        """
        best, best_norm, todo = self._start(model, x, y, target)
        if not bool(todo.any()):
            return best
        limit = math.inf if self.eps is None else float(self.eps)
        for aim in [target] if aims is None else aims(model.probs(x)):
            found = torch.isfinite(best_norm) & (best_norm <= limit)
            idx = (~found).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            lin = None if aim is None else aim[idx]
            goal = None if target is None else target[idx]
            adv, nrm = self._restarts(model, x[idx], y[idx], lin, goal, best[idx], best_norm[idx], gen)
            best[idx], best_norm[idx] = adv, nrm
        return best

    def _start(
        self, model: Oracle, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Examples already meeting the goal keep ``x`` (norm 0); the others are to attack."""
        n = x.shape[0]
        best_norm = torch.full((n,), math.inf, device=x.device)
        if n == 0:
            return x.clone(), best_norm, torch.zeros(0, dtype=torch.bool, device=x.device)
        pred = model.predict(x)
        done = (pred == target) if target is not None else (pred != y)
        best_norm[done] = 0.0
        return x.clone(), best_norm, ~done

    def _restarts(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        lin: torch.Tensor | None,
        goal: torch.Tensor | None,
        best: torch.Tensor,
        best_norm: torch.Tensor,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``restarts`` runs, keeping per example the smallest adversarial perturbation.

        Args:
            lin: class whose boundary with ``y`` is linearised (targeted), or ``None`` for the
                closest boundary over all classes.
            goal: the target the result must reach, or ``None`` for any misclassification.
            best, best_norm: results found before (norm ``inf`` where none); smaller ones
                replace them.
        """
        lower = model.spec.lower_tensor(device=x.device).expand_as(x)
        upper = model.spec.upper_tensor(device=x.device).expand_as(x)
        best, best_norm = best.clone(), best_norm.clone()
        limit = math.inf if self.eps is None else float(self.eps)
        fallback = _FALLBACK_RADIUS[self._norm.name] * float((upper - lower).mean())
        for r in range(self.restarts):
            sel = torch.arange(len(x), device=x.device)
            if self.eps is not None:
                sel = (best_norm > limit).nonzero().squeeze(1)
            if sel.numel() == 0:
                break
            start = x[sel]
            if r > 0:
                radius = torch.clamp(best_norm[sel], max=limit)
                radius = torch.where(torch.isfinite(radius), radius, torch.full_like(radius, fallback))
                start = torch.clamp(start + 0.5 * self._sphere(start, radius, gen), lower[sel], upper[sel])
            adv, nrm = self._single_run(
                model,
                x[sel],
                y[sel],
                None if lin is None else lin[sel],
                None if goal is None else goal[sel],
                start,
                lower[sel],
                upper[sel],
            )
            better = nrm < best_norm[sel]
            best[sel[better]] = adv[better]
            best_norm[sel[better]] = nrm[better]
        return best, best_norm

    def _sphere(self, like: torch.Tensor, radius: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A random point per example on the sphere of ``radius`` in the attack's norm."""
        shape = (len(like), *like.shape[1:])
        if self._norm.name == "linf":
            t = 2 * torch.rand(shape, generator=gen, device=gen.device) - 1
        else:
            t = torch.randn(shape, generator=gen, device=gen.device)
        t = t.to(device=like.device, dtype=like.dtype)
        size = self._norm.distance(t).clamp_min(_TINY)
        return t * (radius / size).reshape(-1, *([1] * (like.ndim - 1)))

    def _linearise(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        lin: torch.Tensor | None,
        goal: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The linearised boundary to aim at: ``f + <w, z - x> = 0``; returns ``(f, w)``.

        Untargeted (``lin`` is ``None``): over all classes ``k != y`` with ``f_k = z_k - z_y``,
        the one with the smallest ``|f_k| / ||w_k||_q``. With a class ``t = lin``:
        ``f = z_t - z_o`` where ``o`` is ``y`` when any misclassification will do (FAB-T as in
        AutoAttack), and the strongest class other than ``t`` when ``t`` must be reached.
        """
        xg = x.clone().requires_grad_(True)
        logits = model(xg)
        rows = torch.arange(len(x), device=x.device)
        if lin is not None:
            # Reaching t means beating every other class: aim at the strongest one.
            others = logits.detach().scatter(1, lin[:, None], -torch.inf)
            origin = y if goal is None else others.argmax(dim=1)
            diff = logits[rows, lin] - logits[rows, origin]
            (grad,) = torch.autograd.grad(diff.sum(), xg)
            return diff.detach(), grad.flatten(1)
        classes = torch.arange(logits.shape[1], device=x.device).expand(len(x), -1)
        grads = _class_gradients(logits, xg, classes).detach().flatten(2)
        z = logits.detach()
        f = z - z[rows, y][:, None]
        w = grads - grads[rows, y][:, None]
        dist = f.abs() / (_dual_norm(w, self._norm.name) + _TINY)
        dist[rows, y] = math.inf
        k = dist.argmin(dim=1)
        return f[rows, k], w[rows, k]

    def _single_run(
        self,
        model: Oracle,
        x: torch.Tensor,
        y: torch.Tensor,
        lin: torch.Tensor | None,
        goal: torch.Tensor | None,
        start: torch.Tensor,
        lower: torch.Tensor,
        upper: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One FAB run from ``start``: the smallest adversarial iterate and its norm per example."""
        n = x.shape[0]
        project = _PROJECTIONS[self._norm.name]
        x0, lo, hi = x.flatten(1), lower.flatten(1), upper.flatten(1)
        cur = start.flatten(1).clone()
        best = x0.clone()
        best_norm = torch.full((n,), math.inf, device=x.device)
        shape = (-1, *x.shape[1:])
        for _ in range(self.steps):
            f, w = self._linearise(model, cur.reshape(shape), y, lin, goal)
            with torch.no_grad():
                # Hyperplane f + <w, z - cur> = 0, reached from cur and from x0 (both boxed).
                both = project(
                    torch.cat([cur, x0]),
                    torch.cat([w, w]),
                    torch.cat([-f, -(f + (w * (x0 - cur)).sum(1))]),
                    torch.cat([lo, lo]),
                    torch.cat([hi, hi]),
                )
                d_cur, d_orig = both[:n], both[n:]
                a_cur = self._norm.distance(d_cur).clamp_min(1e-8)
                a_orig = self._norm.distance(d_orig).clamp_min(1e-8)
                alpha = (a_cur / (a_cur + a_orig)).clamp(0, self.alpha_max)[:, None]
                cur = (1 - alpha) * (cur + self.eta * d_cur) + alpha * (x0 + self.eta * d_orig)
                cur = torch.maximum(torch.minimum(cur, hi), lo)
                pred = model.predict(cur.reshape(shape))
                hit = (pred == goal) if goal is not None else (pred != y)
                nrm = self._norm.distance(cur - x0)
                better = hit & (nrm < best_norm)
                best[better] = cur[better]
                best_norm = torch.where(better, nrm, best_norm)
                # Backward step: pull adversarial iterates back towards x.
                cur = torch.where(hit[:, None], x0 + self.beta * (cur - x0), cur)
        return best.reshape(x.shape), best_norm


@register_attack("fab-t")
class FABTargeted(TopTargets):
    """FAB-T, the targeted FAB of AutoAttack (Croce & Hein, ICML 2020 and 2020b).

    With ``targeted=False`` (the AutoAttack setting) it runs FAB aimed at the boundary with each
    of ``n_target_classes`` classes in turn, taken from the 2nd, 3rd, ... largest clean logits;
    each round attacks only the examples not yet misclassified (within ``eps`` when given), and
    success means any misclassification: :class:`~dlsec.attacks.evasion.wrappers.TopTargets`
    around FAB. With ``targeted=True`` it aims at the given ``target`` (the same as
    ``FAB(targeted=True)``). A single linearised boundary per step needs one backward pass
    instead of one per class, which is what makes it cheap on many classes.

    Args:
        n_target_classes: target classes tried, from the runner-up down (9; capped at the
            number of classes minus one).
        params: :class:`FAB`'s (``norm``, ``eps``, ``steps``, ``restarts``, ``alpha_max``,
            ``eta``, ``beta``, ``targeted``, ``seed``, ``batch_size``).

    Example:
        >>> from dlsec.attacks.evasion.fab import FABTargeted
        >>> attack = FABTargeted(norm="linf", n_target_classes=9)
        >>> result = attack(model, x, y)                      # doctest: +SKIP
    """

    # What the registry lists (a wrapper's own answers are its attack's, known once built).
    access: ClassVar[Access] = FAB.access
    norms: ClassVar[tuple[str, ...]] = FAB.norms
    minimal: ClassVar[bool] = FAB.minimal

    def __init__(self, *, n_target_classes: int = 9, **params: Any) -> None:
        super().__init__(FAB(**params), n_target_classes=n_target_classes)

    def get_params(self) -> dict[str, Any]:
        return {**self.attack.get_params(), "n_target_classes": self.n_target_classes}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
