"""Knockoff Nets (Orekondy et al. 2019): a transfer set labelled by the target's probabilities."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from dlsec.attacks.extraction.base import ExtractionAttack, RunContext, register_extraction_attack
from dlsec.attacks.extraction.copycat import draw_without_replacement
from dlsec.core.model import WhiteBoxModel
from dlsec.errors import UsageError

__all__ = ["KnockoffNets"]

Strategy = Literal["random", "adaptive"]
Reward = Literal["cert", "div", "loss", "all"]


@register_extraction_attack("knockoff")
class KnockoffNets(ExtractionAttack):
    """Knockoff Nets: query a transfer set, train a clone on the target's output distribution.

    ``strategy="random"`` sends pool rows in a seeded random order. ``strategy="adaptive"``
    treats the pool's groups (its sources, or ``n_actions`` k-means clusters when the pool has
    one group) as the arms of a gradient bandit (Sutton and Barto, section 2.8, as in the
    paper): each query's arm is drawn from ``softmax(H)``; the reward is the target's top-2
    margin (``cert``), the rise of its output over the mean of the last 25 outputs (``div``),
    the clone's cross-entropy against it (``loss``, over its running maximum), or their sum
    (``all``); ``H`` moves by ``bandit_lr * (reward - mean reward)``. The clone is fine-tuned
    on the transfer set after each round of ``round_size`` queries and retrained from scratch
    on the whole set at the end. At decision access the target's one-hot labels stand in for
    its probabilities.

    dlsec differs from the paper in one respect: the policy is updated once per round of
    ``round_size`` queries (sequentially over the round's rewards) rather than after each
    single query, so the target sees requests of ``round_size`` rows.

    Args:
        strategy: ``random`` or ``adaptive``.
        reward: ``cert``, ``div``, ``loss`` or ``all`` (adaptive only).
        round_size: queries per bandit round (adaptive only).
        bandit_lr: step size of the preferences ``H``.
        n_actions: clusters used as arms when the pool has a single group.
        online_epochs: fine-tuning passes per round.

    Example:
        >>> pool = mixed_pool(train.x, out_of_domain_pool(spec, 4000))          # doctest: +SKIP
        >>> KnockoffNets(budget=2000, strategy="adaptive")(model, pool, test=test)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        strategy: Strategy = "random",
        reward: Reward = "all",
        round_size: int = 50,
        bandit_lr: float = 0.1,
        n_actions: int = 10,
        online_epochs: int = 3,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        if strategy not in ("random", "adaptive"):
            raise UsageError(f"strategy must be random or adaptive, got {strategy!r}")
        if reward not in ("cert", "div", "loss", "all"):
            raise UsageError(f"reward must be cert, div, loss or all, got {reward!r}")
        for pname, value in (
            ("round_size", round_size),
            ("n_actions", n_actions),
            ("online_epochs", online_epochs),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{pname} must be a positive integer, got {value!r}")
        if not bandit_lr > 0:
            raise UsageError(f"bandit_lr must be positive, got {bandit_lr!r}")
        self.strategy = strategy
        self.reward = reward
        self.round_size = round_size
        self.bandit_lr = float(bandit_lr)
        self.n_actions = n_actions
        self.online_epochs = online_epochs

    def run(self, ctx: RunContext) -> WhiteBoxModel:
        if self.strategy == "random":
            x, _, targets = draw_without_replacement(ctx)
        else:
            x, targets = self._adaptive(ctx)
        ctx.extras["_history"] = (x, targets)
        ctx.extras["strategy"] = self.strategy
        clone = ctx.new_clone()
        ctx.fit(clone, x, targets)
        return clone

    def _actions(self, ctx: RunContext) -> tuple[np.ndarray, list[str]]:
        groups, names = ctx.pool.groups, list(ctx.pool.names)
        if len(np.unique(groups)) > 1:
            uniq, inverse = np.unique(groups, return_inverse=True)
            return inverse.astype(np.int64), [names[g] if g < len(names) else str(g) for g in uniq]
        from sklearn.cluster import KMeans

        k = min(self.n_actions, len(ctx.pool))
        flat = ctx.pool.x.reshape(len(ctx.pool), -1)
        labels = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit_predict(flat)
        return labels.astype(np.int64), [f"cluster-{i}" for i in range(k)]

    def _adaptive(self, ctx: RunContext) -> tuple[np.ndarray, np.ndarray]:
        actions, names = self._actions(ctx)
        n_arms = len(names)
        queues = [list(ctx.rng.permutation(np.flatnonzero(actions == a))) for a in range(n_arms)]
        prefs = np.zeros(n_arms)
        mean_reward, steps, loss_scale = 0.0, 0, 1e-12
        recent: list[np.ndarray] = []
        xs: list[np.ndarray] = []
        ts: list[np.ndarray] = []
        pulls = np.zeros(n_arms, dtype=np.int64)
        clone = ctx.new_clone()
        k = ctx.spec.num_classes
        while ctx.remaining > 0:
            rows, arms = [], []
            for _ in range(min(self.round_size, ctx.remaining)):
                open_arms = np.array([len(q) > 0 for q in queues])
                if not open_arms.any():
                    break
                logits = np.where(open_arms, prefs, -np.inf)
                pi = np.exp(logits - logits.max())
                pi /= pi.sum()
                arm = int(ctx.rng.choice(n_arms, p=pi))
                rows.append(queues[arm].pop())
                arms.append(arm)
            if not rows:
                break
            x = ctx.pool.x[np.asarray(rows)]
            answer = ctx.query(x, stats={"arms": float(n_arms)})
            y = answer.targets(k).astype(np.float64)
            with torch.no_grad():
                clone_p = clone.probs(torch.from_numpy(x)).cpu().numpy().astype(np.float64)
            ce = -(y * np.log(np.clip(clone_p, 1e-12, 1.0))).sum(1)
            top2 = np.sort(y, axis=1)[:, -2:]
            for i, arm in enumerate(arms):
                recent = (recent + [y[i]])[-25:]
                cert = float(top2[i, 1] - top2[i, 0])
                div = float(np.maximum(0.0, y[i] - np.mean(recent, axis=0)).sum())
                loss_scale = max(loss_scale, float(ce[i]))
                loss = float(ce[i]) / loss_scale
                reward = {"cert": cert, "div": div, "loss": loss, "all": cert + div + loss}[self.reward]
                steps += 1
                mean_reward += (reward - mean_reward) / steps
                pi = np.exp(prefs - prefs.max())
                pi /= pi.sum()
                grad = -pi
                grad[arm] += 1.0
                prefs += self.bandit_lr * (reward - mean_reward) * grad
                pulls[arm] += 1
            xs.append(x)
            ts.append(y.astype(np.float32))
            ctx.fit(clone, np.concatenate(xs), np.concatenate(ts), epochs=self.online_epochs)
        ctx.extras["arms"] = {name: int(c) for name, c in zip(names, pulls, strict=True)}
        if not xs:
            return np.empty((0, *ctx.spec.shape), dtype=np.float32), np.empty((0, k), dtype=np.float32)
        return np.concatenate(xs), np.concatenate(ts)
