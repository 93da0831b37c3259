"""Malicious federated clients: data poisoning, crafted updates, backdoors and free-riding.

An :class:`Attack` acts at two points of a malicious client's round: ``poison`` rewrites its
local data before training (label flipping, the backdoors) and ``craft`` turns its benign
update into the one it sends. The omniscient attacks (ALIE, IPM, min-max, min-sum) need the
statistics of benign updates: as in the papers, the colluding clients compute them from the
benign updates of their own data (the ``colluders`` argument), so every attack runs inside a
client (a Flower ``ClientApp``), never in the server.

The defence-tailored variants of min-max/min-sum (against Krum, median, trimmed mean) are not
implemented; both run in the paper's AGR-agnostic form.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

import numpy as np
import torch

from dlsec.errors import UsageError

if TYPE_CHECKING:
    from dlsec.federated._aggregate import Aggregate, Aggregator

__all__ = [
    "ATTACKS",
    "ALIE",
    "Attack",
    "Backdoor",
    "DBA",
    "FreeRider",
    "GaussianUpdate",
    "IPM",
    "LabelFlip",
    "MinMax",
    "MinSum",
    "NoAttack",
    "SignFlip",
    "alie_z",
    "build_attack",
    "malicious_clients",
    "register_attack",
    "stamp_trigger",
]

ATTACKS: dict[str, type[Attack]] = {}
_T = TypeVar("_T", bound="type[Attack]")

TRIGGER_PARTS = 4


def register_attack(name: str) -> Callable[[_T], _T]:
    """Register an :class:`Attack` class under ``name``; a name registered twice raises."""

    def decorator(cls: _T) -> _T:
        if name in ATTACKS:
            raise UsageError(f"attack {name!r} is already registered")
        cls.name = name
        ATTACKS[name] = cls
        return cls

    return decorator


@dataclass(frozen=True)
class RoundContext:
    """What a malicious client knows in a round.

    Attributes:
        num_clients: clients taking part in the round (``n``).
        num_malicious: colluding malicious clients in the round (``m``).
        rank: this client's position among the colluders (0..m-1).
        seed: a seed for this client and round.
        shared_seed: a seed all colluders share this round (for what they must agree on).
    """

    num_clients: int
    num_malicious: int
    rank: int
    seed: int
    shared_seed: int = 0


class Attack:
    """Base class. ``omniscient`` attacks read the colluders' benign updates in :meth:`craft`."""

    name: ClassVar[str] = "base"
    omniscient: ClassVar[bool] = False
    backdoor: ClassVar[bool] = False
    #: the attack is built knowing the server's rule (its ``rule`` option)
    tailored: ClassVar[bool] = False

    def poison(
        self, x: np.ndarray, y: np.ndarray, *, num_classes: int, ctx: RoundContext
    ) -> tuple[np.ndarray, np.ndarray]:
        """The local data the malicious client trains on (default: its own, unchanged)."""
        return x, y

    def craft(self, own: torch.Tensor, colluders: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        """The update sent, from this client's update on its (poisoned) data and, for
        omniscient attacks, the ``(m, d)`` benign updates of all colluders (default: ``own``)."""
        return own


@register_attack("none")
@dataclass
class NoAttack(Attack):
    """Malicious clients behave honestly (the baseline)."""


@register_attack("label-flip")
@dataclass
class LabelFlip(Attack):
    """Train on flipped labels ``y -> C - 1 - y`` (Biggio et al. 2012; Tolpegin et al. 2020)."""

    def poison(
        self, x: np.ndarray, y: np.ndarray, *, num_classes: int, ctx: RoundContext
    ) -> tuple[np.ndarray, np.ndarray]:
        return x, (num_classes - 1 - y).astype(np.int64)


@register_attack("sign-flip")
@dataclass
class SignFlip(Attack):
    """Send ``-scale`` times the benign update."""

    scale: float = 1.0

    def craft(self, own: torch.Tensor, colluders: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        return -self.scale * own


@register_attack("gaussian")
@dataclass
class GaussianUpdate(Attack):
    """Send ``N(0, sigma^2)`` noise instead of an update (Fang et al. 2020's Gaussian attack)."""

    sigma: float = 1.0

    def craft(self, own: torch.Tensor, colluders: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        g = torch.Generator().manual_seed(ctx.seed)
        return torch.randn(own.shape, generator=g) * self.sigma


@register_attack("free-rider")
@dataclass
class FreeRider(Attack):
    """Train on nothing; send a zero update plus noise of standard deviation ``sigma`` (Lin et al. 2019)."""

    sigma: float = 1e-4

    def craft(self, own: torch.Tensor, colluders: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        g = torch.Generator().manual_seed(ctx.seed)
        return torch.randn(own.shape, generator=g) * self.sigma


def alie_z(num_clients: int, num_malicious: int) -> float:
    """Baruch et al. (2019), A Little Is Enough: ``s = floor(n/2 + 1) - m``, ``z = Phi^-1((n - s) / n)``.

    Example:
        >>> round(alie_z(50, 12), 4)
        0.5828
    """
    from statistics import NormalDist

    s = math.floor(num_clients / 2 + 1) - num_malicious
    return NormalDist().inv_cdf((num_clients - s) / num_clients) if s > 0 else 0.0


def _stats(colluders: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu = colluders.mean(dim=0)
    std = colluders.std(dim=0, unbiased=True) if colluders.shape[0] > 1 else torch.zeros_like(mu)
    return mu, std


@register_attack("alie")
@dataclass
class ALIE(Attack):
    """A Little Is Enough (Baruch et al. 2019): every colluder sends ``mu - z * sigma`` of their
    benign updates, ``z`` from :func:`alie_z` unless given."""

    z: float | None = None
    omniscient: ClassVar[bool] = True

    def craft(self, own: torch.Tensor, colluders: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        mu, std = _stats(colluders)
        z = alie_z(ctx.num_clients, ctx.num_malicious) if self.z is None else self.z
        return mu - z * std


@register_attack("ipm")
@dataclass
class IPM(Attack):
    """Inner-product manipulation (Xie et al. 2020): send ``-epsilon`` times the benign mean."""

    epsilon: float = 0.5
    omniscient: ClassVar[bool] = True

    def craft(self, own: torch.Tensor, colluders: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        return -self.epsilon * colluders.mean(dim=0)


def _gamma_search(ok: Callable[[float], bool], gamma: float = 10.0, tol: float = 1e-5) -> float:
    """Shejwalkar and Houmansadr's (2021) Algorithm 1: the largest gamma the oracle accepts."""
    step, good = gamma, 0.0
    while abs(good - gamma) > tol:
        if ok(gamma):
            good = gamma
            gamma += step / 2
        else:
            gamma -= step / 2
        step /= 2
    return good


@dataclass
class _Shejwalkar(Attack):
    """``mu + gamma * p`` with ``p = -std`` (the paper's default perturbation), gamma searched."""

    gamma_init: float = 10.0
    omniscient: ClassVar[bool] = True

    def accept(self, candidate: torch.Tensor, benign: torch.Tensor, pair: torch.Tensor) -> bool:
        raise NotImplementedError

    def craft(self, own: torch.Tensor, colluders: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        benign = colluders.double()
        mu, std = _stats(benign)
        pair = torch.cdist(benign, benign)
        gamma = _gamma_search(lambda g: self.accept(mu - g * std, benign, pair), gamma=self.gamma_init)
        return (mu - gamma * std).float()


@register_attack("min-max")
@dataclass
class MinMax(_Shejwalkar):
    """Min-max (Shejwalkar and Houmansadr, NDSS 2021): the farthest benign update is no farther
    from the malicious one than any two benign updates are from each other."""

    def accept(self, candidate: torch.Tensor, benign: torch.Tensor, pair: torch.Tensor) -> bool:
        return bool((benign - candidate).norm(dim=1).max() <= pair.max())


@register_attack("min-sum")
@dataclass
class MinSum(_Shejwalkar):
    """Min-sum (Shejwalkar and Houmansadr, NDSS 2021): the malicious update's summed squared
    distance to the benign ones is no more than any benign update's."""

    def accept(self, candidate: torch.Tensor, benign: torch.Tensor, pair: torch.Tensor) -> bool:
        return bool((benign - candidate).pow(2).sum() <= pair.pow(2).sum(dim=1).max())


@register_attack("agr-tailored")
@dataclass
class AGRTailored(Attack):
    """The AGR-tailored attack (Shejwalkar and Houmansadr, NDSS 2021, section IV-B): every
    colluder sends ``mu - gamma * std`` of the colluders' benign updates, with ``gamma`` optimised
    against the server's own rule, which the attacker runs on a simulated round of ``n``
    updates: the ``m`` malicious copies, the ``m`` benign updates it knows, and ``n - 2m``
    draws from ``N(mu, std^2)`` standing for the honest clients it does not see (the paper's
    partial-knowledge setting; seeded so all colluders agree).

    For rules that select updates ``gamma`` is the largest that keeps the malicious copies
    selected (Krum's one choice is malicious; Multi-Krum keeps all of them); for the others it
    climbs while the distance between the rule's output and ``mu`` grows (the paper's
    Algorithm 1 with its objective). A stateful rule (FoolsGold) is simulated without its
    history.

    Args:
        rule: the server's aggregation rule (set by the simulation from the defence).
        gamma_init: the search's first ``gamma``.
    """

    rule: Aggregator | None = None
    gamma_init: float = 10.0
    omniscient: ClassVar[bool] = True
    tailored: ClassVar[bool] = True

    def craft(self, own: torch.Tensor, colluders: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        if self.rule is None:
            raise UsageError("agr-tailored needs the server's rule; run it through simulate()")
        benign = colluders.float()
        mu, std = _stats(benign)
        m, n = benign.shape[0], ctx.num_clients
        g = torch.Generator().manual_seed(ctx.shared_seed)
        unseen = mu + std * torch.randn((max(0, n - 2 * m), mu.shape[0]), generator=g)
        others = torch.cat([benign, unseen])[: max(0, n - m)]
        ids = list(range(m + others.shape[0]))
        reference = mu if self.rule.needs_reference else None  # FLTrust: the benign mean stands in

        rule = self.rule

        def run(gamma: float) -> Aggregate:
            rows = torch.cat([(mu - gamma * std).expand(m, -1), others])
            return rule(rows, client_ids=ids, reference=reference)

        if rule.selects:

            def ok(gamma: float) -> bool:  # as many malicious copies selected as can be
                kept = set(ids) - run(gamma).excluded
                return len(kept & set(range(m))) == min(m, len(kept))

        else:
            previous = [-1.0]

            def ok(gamma: float) -> bool:
                loss = float((run(gamma).update - mu).norm())
                better, previous[0] = loss > previous[0], loss
                return better

        return (mu - _gamma_search(ok, gamma=self.gamma_init) * std).float()


def stamp_trigger(x: np.ndarray, *, part: int | None = None, value: float = 1.0) -> np.ndarray:
    """Stamp the backdoor trigger (a 2x4 patch in the top-left corner of images; the first 8
    features otherwise); ``part`` 0..3 stamps only that quarter (DBA's local triggers)."""
    out = x.copy()
    if out.ndim >= 3 and out.shape[-1] >= 4 and out.shape[-2] >= 2:
        cells = [(r, c) for r in range(2) for c in range(4)]
        pick = cells if part is None else cells[2 * part : 2 * part + 2]
        for r, c in pick:
            out[..., r, c] = value
    else:
        flat = out.reshape(out.shape[0], -1)
        cols = range(8) if part is None else range(2 * part, 2 * part + 2)
        for c in cols:
            flat[:, c] = value
        out = flat.reshape(out.shape)
    return out


@register_attack("backdoor")
@dataclass
class Backdoor(Attack):
    """Model replacement (Bagdasaryan et al. 2020): train on clean plus triggered copies
    relabelled ``target``, then boost the update by ``n / m`` so the colluders' share of the
    average replaces the global model (``boost`` overrides the factor)."""

    target: int = 0
    boost: float | None = None
    backdoor: ClassVar[bool] = True

    def trigger_part(self, ctx: RoundContext) -> int | None:
        return None

    def poison(
        self, x: np.ndarray, y: np.ndarray, *, num_classes: int, ctx: RoundContext
    ) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= self.target < num_classes:
            raise UsageError(f"backdoor target {self.target} is not a class (0..{num_classes - 1})")
        stamped = stamp_trigger(x, part=self.trigger_part(ctx))
        return np.concatenate([x, stamped]), np.concatenate([y, np.full(len(y), self.target, dtype=np.int64)])

    def factor(self, ctx: RoundContext) -> float:
        return ctx.num_clients / max(1, ctx.num_malicious) if self.boost is None else self.boost

    def craft(self, own: torch.Tensor, colluders: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        return self.factor(ctx) * own


@register_attack("dba")
@dataclass
class DBA(Backdoor):
    """Distributed backdoor (Xie et al. 2020): colluder ``k`` trains with quarter ``k mod 4`` of
    the trigger; the global trigger is tested. Boost ``1`` unless given (the paper's scale)."""

    def trigger_part(self, ctx: RoundContext) -> int | None:
        return ctx.rank % TRIGGER_PARTS

    def factor(self, ctx: RoundContext) -> float:
        return 1.0 if self.boost is None else self.boost


def build_attack(name: str, **options: object) -> Attack:
    """Build a registered attack by name.

    Raises:
        UsageError: unknown name or options.
    """
    if name not in ATTACKS:
        raise UsageError(f"unknown attack {name!r}; choose one of: {', '.join(ATTACKS)}")
    try:
        return ATTACKS[name](**options)
    except TypeError as exc:
        raise UsageError(f"attack {name} rejected its options: {exc}") from None


def malicious_clients(
    num_clients: int, fraction: float, *, seed: int, server_round: int | None = None
) -> list[int]:
    """The malicious client ids: ``round(fraction * n)`` of them, fixed for the run when
    ``server_round`` is ``None``, else drawn afresh each round; a function of the seed.

    Raises:
        UsageError: the fraction is outside [0, 1).
    """
    if not 0.0 <= fraction < 1.0:
        raise UsageError(f"the malicious fraction must lie in [0, 1), got {fraction}")
    m = round(fraction * num_clients)
    entropy = [seed, 7919] if server_round is None else [seed, 7919, server_round]
    rng = np.random.default_rng(entropy)
    return sorted(int(i) for i in rng.choice(num_clients, size=m, replace=False))
