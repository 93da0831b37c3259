"""Client-level differential privacy: DP-FedAvg with fixed or adaptive clipping.

DP-FedAvg (McMahan et al. 2018): the server clips each sampled client's update to L2 norm at
most ``C``, averages the ``m`` clipped updates with the fixed denominator ``m`` (sensitivity
``C / m``) and adds Gaussian noise of standard deviation ``z * C / m``. Adaptive clipping
(Andrew et al. 2021) moves ``C`` each round geometrically toward the ``target_quantile`` of the
update norms, from the clipped-or-not bits released with Gaussian noise of std ``count_std``;
the update noise is then ``z_delta = (z**-2 - (2 * count_std)**-2) ** -1/2`` so that the two
releases together cost what one Gaussian release of multiplier ``z`` costs.

The privacy accounting is Opacus's RDP accountant (``opacus.accountants.RDPAccountant``), one
step per round at sampling rate ``q = m / N``; nothing here computes an RDP curve by hand.
The accountant assumes Poisson sampling of clients: a fixed-size sample of ``m`` is the usual
approximation (as in McMahan et al.).

Why not Flower's ``DifferentialPrivacyServerSideFixedClipping`` / ``...AdaptiveClipping``
(``flwr.serverapp.strategy``, which do wrap a message-API strategy): their accounting refuses
any strategy that overrides ``FedAvg.aggregate_train`` (:class:`RobustFedAvg` does), their noise
comes from NumPy's unseeded global generator (a run cannot be reproduced, and the local engine
could not give the same numbers), and they exist only inside a Flower ServerApp, while the same
mechanism must run in the local engine and on a single update in the inversion study. The
mechanism is therefore an :class:`~dlsec.federated.Aggregator` that both engines call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from dlsec.errors import UsageError
from dlsec.federated._aggregate import Aggregate, Aggregator

__all__ = [
    "DP_MODES",
    "DPFedAvg",
    "RobustDP",
    "clip_updates",
    "default_delta",
    "epsilon_for",
    "noise_for_epsilon",
    "rdp_orders",
]

DP_MODES = ("none", "fixed", "adaptive")


def rdp_orders() -> list[float]:
    """The Renyi orders the accountant minimises over: Opacus's defaults and larger ones, which a
    single release at small noise (the inversion study's) needs for a tight bound."""
    from opacus.accountants.rdp import RDPAccountant

    return [*RDPAccountant.DEFAULT_ALPHAS, 80.0, 96.0, 128.0, 192.0, 256.0, 384.0, 512.0, 1024.0]


def default_delta(num_clients: int) -> float:
    """``1 / N**1.1``: below ``1/N``, as a client-level delta must be."""
    return float(num_clients) ** -1.1


def _check_rate(sample_rate: float, rounds: int, delta: float) -> None:
    if not 0 < sample_rate <= 1:
        raise UsageError(f"the client sampling rate must lie in (0, 1], got {sample_rate}")
    if rounds < 1:
        raise UsageError(f"the number of rounds must be at least 1, got {rounds}")
    if not 0 < delta < 1:
        raise UsageError(f"delta must lie in (0, 1), got {delta}")


def epsilon_for(noise_multiplier: float, *, sample_rate: float, rounds: int, delta: float) -> float:
    """Epsilon after ``rounds`` Gaussian releases of multiplier ``z`` at sampling rate ``q``
    (Opacus's RDP accountant)."""
    from opacus.accountants import RDPAccountant

    _check_rate(sample_rate, rounds, delta)
    if not noise_multiplier > 0:
        return math.inf
    accountant = RDPAccountant()
    accountant.history = [(float(noise_multiplier), float(sample_rate), int(rounds))]
    return float(accountant.get_epsilon(delta=delta, alphas=rdp_orders()))


def noise_for_epsilon(target_epsilon: float, *, sample_rate: float, rounds: int, delta: float) -> float:
    """The smallest noise multiplier whose epsilon after ``rounds`` is at most ``target_epsilon``
    (Opacus's ``get_noise_multiplier`` on its RDP accountant)."""
    from opacus.accountants.utils import get_noise_multiplier

    _check_rate(sample_rate, rounds, delta)
    if not target_epsilon > 0 or not math.isfinite(target_epsilon):
        raise UsageError(f"the target epsilon must be a positive number, got {target_epsilon}")
    try:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=rounds,
                accountant="rdp",
                alphas=rdp_orders(),
            )
        )
    except ValueError as exc:
        raise UsageError(f"no noise multiplier reaches epsilon {target_epsilon}: {exc}") from None


def _seed(*parts: int) -> int:
    return int(np.random.default_rng([int(p) for p in parts]).integers(2**31))


def clip_updates(updates: torch.Tensor, clipping_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row scaled to L2 norm at most ``clipping_norm``; returns the rows and their norms
    before clipping."""
    norms = updates.norm(dim=1)
    scale = torch.clamp(clipping_norm / torch.clamp(norms, min=1e-12), max=1.0)
    return updates * scale[:, None], norms


@dataclass
class DPFedAvg(Aggregator):
    """DP-FedAvg as an aggregation rule: clip, average over the ``m`` sampled clients, add noise.

    One call is one round: the accountant takes one step, the noise generator is seeded by
    ``(seed, round)``, and adaptive clipping moves ``clipping_norm`` for the next call.

    Attributes:
        noise_multiplier: ``z``; the update noise std is ``z * C / m`` (fixed clipping).
        clipping_norm: ``C`` (the initial one under adaptive clipping).
        sample_rate: ``q = m / N``, for the accountant.
        delta: the delta epsilon is reported at.
        adaptive: Andrew et al.'s adaptive clipping.
        target_quantile, clip_lr: ``gamma`` and ``eta_C`` of adaptive clipping.
        count_std: the std of the noise on the clipped-count (default ``m / 20``, the paper's).
        epsilons: epsilon after each call so far.
        clipping_norms, noise_stds, sensitivities: ``C``, the update noise std and the L2
            sensitivity it was calibrated to, in each call.
    """

    noise_multiplier: float
    clipping_norm: float
    sample_rate: float = 1.0
    delta: float = 1e-5
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_std: float | None = None
    seed: int = 0
    epsilons: list[float] = field(default_factory=list)
    clipping_norms: list[float] = field(default_factory=list)
    noise_stds: list[float] = field(default_factory=list)
    sensitivities: list[float] = field(default_factory=list)

    name = "dp-fedavg"

    def __post_init__(self) -> None:
        from opacus.accountants import RDPAccountant

        if not self.noise_multiplier >= 0 or not math.isfinite(self.noise_multiplier):
            raise UsageError(f"the noise multiplier must be non-negative, got {self.noise_multiplier}")
        if not self.clipping_norm > 0 or not math.isfinite(self.clipping_norm):
            raise UsageError(f"the clipping norm must be positive, got {self.clipping_norm}")
        _check_rate(self.sample_rate, 1, self.delta)
        if not 0 < self.target_quantile < 1 or not self.clip_lr > 0:
            raise UsageError("adaptive clipping needs a target quantile in (0, 1) and a positive rate")
        self._accountant = RDPAccountant()
        self._round = 0

    def update_noise_multiplier(self, m: int) -> float:
        """``z`` under fixed clipping; ``z_delta`` under adaptive clipping (Andrew et al., sec. 3)."""
        if not self.adaptive or self.noise_multiplier == 0:
            return self.noise_multiplier
        sigma_b = self.count_std if self.count_std is not None else m / 20.0
        if not 2 * sigma_b > self.noise_multiplier:
            raise UsageError(
                f"adaptive clipping needs the noise multiplier ({self.noise_multiplier}) below twice "
                f"the count noise ({2 * sigma_b:g}); sample more clients per round"
            )
        return (self.noise_multiplier**-2 - (2 * sigma_b) ** -2) ** -0.5

    def noise_seed(self, server_round: int) -> int:
        """The seed of round ``server_round``'s noise generator."""
        return _seed(self.seed, server_round, 1)

    def noise(self, server_round: int, dim: int, std: float) -> torch.Tensor:
        """The Gaussian noise of round ``server_round``: ``std`` times a standard normal draw of a
        generator seeded by :meth:`noise_seed`."""
        g = torch.Generator().manual_seed(self.noise_seed(server_round))
        return torch.randn(dim, generator=g, dtype=torch.float32) * std

    def combine(
        self, clipped: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        """The aggregate of the clipped updates before noise: their sum over the fixed ``m``."""
        m = clipped.shape[0]
        return Aggregate(clipped.sum(dim=0) / m, frozenset(), torch.full((m,), 1.0 / m))

    def sensitivity(self, m: int, clipping_norm: float, reference: torch.Tensor | None) -> float:
        """The L2 sensitivity of :meth:`combine` to one client: ``C / m``."""
        return clipping_norm / m

    def aggregate(
        self, updates: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        self._round += 1
        m = updates.shape[0]
        c = self.clipping_norm
        clipped, norms = clip_updates(updates, c)
        inner = self.combine(clipped, weights, ids, reference)
        sensitivity = self.sensitivity(m, c, reference)
        std = self.update_noise_multiplier(m) * sensitivity
        update = inner.update + self.noise(self._round, updates.shape[1], std)
        self.clipping_norms.append(c)
        self.sensitivities.append(sensitivity)
        self.noise_stds.append(std)
        if self.adaptive:
            sigma_b = self.count_std if self.count_std is not None else m / 20.0
            g = torch.Generator().manual_seed(_seed(self.seed, self._round, 2))
            unclipped = float((norms <= c).sum()) + float(torch.randn(1, generator=g)) * sigma_b
            self.clipping_norm = c * math.exp(-self.clip_lr * (unclipped / m - self.target_quantile))
        if self.noise_multiplier > 0:
            self._accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
            self.epsilons.append(float(self._accountant.get_epsilon(delta=self.delta, alphas=rdp_orders())))
        else:
            self.epsilons.append(math.inf)
        return Aggregate(update, inner.excluded, inner.weights)


@dataclass
class RobustDP(DPFedAvg):
    """Client-level DP on a robust rule: clip each update to ``C``, aggregate the clipped updates
    with ``rule``, add Gaussian noise of standard deviation ``z * Delta``.

    ``Delta`` is the rule's L2 sensitivity to adding or removing one client, bounded by the
    diameter of its output set: ``2 * max_k rule.output_bound(k, C)`` over the neighbouring
    client counts ``k`` in ``m - 1, m, m + 1`` that the rule accepts (``sqrt 2 * C`` for the
    median, ``C * sqrt(n / (n - 2k))`` for the trimmed mean, ``C`` for Krum and the other convex
    combinations, ``|g_0|`` for FLTrust). No robust rule has the mean's ``C / m``: one client can
    move a median or a Krum choice by a constant, whatever ``m``, so the noise is about
    ``2 m`` times DP-FedAvg's for the same ``z``.

    The accounting is unchanged (Opacus's RDP accountant at ``z`` and ``q``): conditioned on the
    other sampled clients, the round's release is a Gaussian of std ``z * Delta`` centred on the
    rule's output without the client, mixed (with probability ``q``) with one centred at most
    ``Delta`` away. That is the Sampled Gaussian Mechanism at multiplier ``z``, and mixing over
    the other clients cannot raise the Renyi divergence (it is jointly quasi-convex: van Erven
    and Harremoes 2014, Theorem 13). Two rules break that argument and are refused in one line:
    FLAME, whose own noise scales with the clients' median norm, and FoolsGold when clients are
    sampled (``q < 1``), whose weights depend on clients' past updates, so a client left out of
    a round still moves it.

    Example:
        >>> from dlsec.federated import build_aggregator
        >>> dp = RobustDP(noise_multiplier=1.0, clipping_norm=1.0,
        ...               rule=build_aggregator("median", num_clients=10, malicious_fraction=0.2))
        >>> round(dp.sensitivity(10, 1.0, None), 4)
        2.8284
    """

    rule: Aggregator | None = None

    name = "dp-robust"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rule is None:
            raise UsageError("RobustDP needs the robust rule it privatises")
        if self.rule.dp_refusal is not None:
            raise UsageError(f"client-level DP cannot combine with {self.rule.name}: {self.rule.dp_refusal}")
        if self.rule.keeps_history and self.sample_rate < 1:
            raise UsageError(
                f"client-level DP with client sampling cannot combine with {self.rule.name}: its weights "
                "depend on each client's past updates, so a client left out of a round still moves "
                "the release and the accountant's subsampling bound does not hold (sample every client)"
            )

    @property
    def _rule(self) -> Aggregator:
        assert self.rule is not None  # checked in __post_init__
        return self.rule

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        return self._rule.needs_reference

    def min_clients(self) -> int:
        return self._rule.min_clients()

    def combine(
        self, clipped: torch.Tensor, weights: torch.Tensor, ids: list[int], reference: torch.Tensor | None
    ) -> Aggregate:
        return self._rule(clipped, weights=weights, client_ids=ids, reference=reference)

    def sensitivity(self, m: int, clipping_norm: float, reference: torch.Tensor | None) -> float:
        """``2 * max_k rule.output_bound(k, C)`` over the neighbouring counts the rule accepts.

        Raises:
            UsageError: the rule has no known bound on its output.
        """
        counts = [k for k in (m - 1, m, m + 1) if k >= max(1, self._rule.min_clients())]
        bounds = [self._rule.output_bound(k, clipping_norm, reference) for k in counts]
        known = [b for b in bounds if b is not None]
        if not known or len(known) != len(bounds):
            raise UsageError(
                f"client-level DP cannot combine with {self._rule.name}: no bound on its output's norm is "
                "known, so its sensitivity (and epsilon) cannot be stated"
            )
        return 2.0 * max(known)
