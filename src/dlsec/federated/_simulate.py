"""Federated simulations on Flower: honest and malicious ClientApps, a robust ServerApp, measurement.

:func:`simulate` runs ``rounds`` rounds of ``num_clients`` clients, ``malicious_fraction`` of
them running an attack, under a defence, through ``flwr.simulation.run_simulation`` on its Ray
backend (the default ``engine="flower"``). Each ClientApp trains a dlsec MLP on its partition;
a malicious one poisons its data and crafts its update itself (the omniscient attacks from the
benign updates of its colluders' own data). The ServerApp runs :class:`RobustFedAvg` and a
central evaluation after each round.

``engine="local"`` runs the very same client and aggregation functions in this process without
Flower; the tests check that both engines give the same numbers, and the attack-by-defence
benchmark uses it because a matrix of Ray start-ups does not fit a 2-core machine.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from dlsec.core.cluster import check_ray_address
from dlsec.core.data import Dataset, load_dataset
from dlsec.errors import Error, UsageError
from dlsec.federated._aggregate import Aggregate, Aggregator, build_aggregator
from dlsec.federated._attacks import Attack, RoundContext, build_attack, malicious_clients, stamp_trigger
from dlsec.federated._dp import DP_MODES, DPFedAvg, RobustDP, default_delta, noise_for_epsilon
from dlsec.federated._partition import partition
from dlsec.federated._secagg import check_secure_aggregation

__all__ = ["FLConfig", "RoundRecord", "SimulationResult", "simulate"]

ENGINES = ("flower", "local", "deployment")


@dataclass(frozen=True)
class FLConfig:
    """A federated simulation.

    Attributes:
        dataset: a dlsec dataset reference (``builtin:digits``...).
        num_clients: clients, all of them sampled every round.
        malicious_fraction: the share of malicious clients (``round(f * n)`` of them).
        attack: a registered attack (:data:`ATTACKS`).
        defense: a registered aggregation rule (:data:`AGGREGATORS`).
        rounds: federated rounds.
        partition: ``iid`` or ``dirichlet``.
        alpha: the Dirichlet concentration.
        seed: seeds the split, the partition, the model, local training and the attackers.
        per_round: draw the malicious clients afresh each round (else fixed for the run).
        local_epochs, lr, batch_size: each client's local SGD.
        hidden: the MLP's hidden layer sizes.
        root_size: rows of the training split kept by the server as its root set (FLTrust's
            trusted data); held out for every defence, so runs stay comparable.
        target: the backdoor's target class.
        engine: ``flower`` (Flower's simulation runtime on Ray), ``local`` (same functions,
            in process, no Flower) or ``deployment`` (a SuperLink and one SuperNode per client
            as separate processes on loopback, the run submitted with ``flwr run``:
            :func:`~dlsec.federated.deploy`).
        clients_per_round: clients sampled each round (``None``: all of them); sets the
            sampling rate ``q = m / N`` of the privacy accounting.
        dp: client-level DP: ``none``, ``fixed`` or ``adaptive`` clipping. With ``fedavg`` it is
            DP-FedAvg (:class:`DPFedAvg`, noise ``z * C / m``); with a robust defence each update
            is clipped, aggregated by the rule and noised at the rule's sensitivity
            (:class:`RobustDP`); FLAME, and FoolsGold with client sampling, are refused.
        noise_multiplier, clipping_norm: ``z`` and the (initial) ``C``.
        target_epsilon: when set, ``z`` is the smallest multiplier that keeps epsilon after
            ``rounds`` rounds at most this (Opacus's RDP accountant).
        delta: the delta epsilon is reported at (``None``: ``1 / N**1.1``).
        ray_address: with ``engine="flower"``, run on this existing Ray cluster
            (``host:port``) instead of starting a local one.
        arch, arch_kwargs: a registered dlsec architecture for the clients' model (``None``:
            the MLP of ``hidden``); names from a file are never imported.
        secure_aggregation: Flower's SecAgg+ (``SecAggPlusWorkflow`` and ``secaggplus_mod``):
            the server learns only the weighted sum of the clients' weights. FedAvg only (the
            server sees no individual update to be robust against), in Flower's runtimes.
    """

    dataset: str = "builtin:digits"
    num_clients: int = 10
    malicious_fraction: float = 0.0
    attack: str = "none"
    defense: str = "fedavg"
    rounds: int = 5
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    per_round: bool = False
    local_epochs: int = 2
    lr: float = 0.5
    batch_size: int = 16
    hidden: tuple[int, ...] = (64, 32)
    root_size: int = 100
    target: int = 0
    engine: str = "flower"
    clients_per_round: int | None = None
    dp: str = "none"
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0
    target_epsilon: float | None = None
    delta: float | None = None
    ray_address: str | None = None
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    secure_aggregation: bool = False


@dataclass
class RoundRecord:
    """Measurements after one round (round 0 is the initial model)."""

    round: int
    accuracy: float
    backdoor_success: float
    malicious: list[int] = field(default_factory=list)
    excluded: list[int] = field(default_factory=list)
    precision: float | None = None
    recall: float | None = None
    distances: dict[int, float] = field(default_factory=dict)
    epsilon: float | None = None
    clipping_norm: float | None = None


@dataclass
class SimulationResult:
    """A finished simulation: its configuration and one :class:`RoundRecord` per round."""

    config: FLConfig
    rounds: list[RoundRecord]
    privacy: dict[str, Any] | None = None
    final_model: torch.Tensor | None = field(default=None, repr=False)
    """The final global weights, flattened (in process only: not in :meth:`to_dict`)."""

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].accuracy

    @property
    def final_backdoor_success(self) -> float:
        return self.rounds[-1].backdoor_success

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> SimulationResult:
        """The inverse of :meth:`to_dict` (a deployment's ServerApp sends its result this way)."""
        rounds = [
            RoundRecord(**{**r, "distances": {int(k): float(v) for k, v in r["distances"].items()}})
            for r in payload["rounds"]
        ]
        return cls(config_from_dict(payload["config"]), rounds, payload.get("privacy"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "final_accuracy": self.final_accuracy,
            "final_backdoor_success": self.final_backdoor_success,
            "privacy": self.privacy,
            "rounds": [
                {**asdict(r), "distances": {str(k): v for k, v in r.distances.items()}} for r in self.rounds
            ],
        }


def config_from_dict(payload: dict[str, Any]) -> FLConfig:
    """An :class:`FLConfig` from ``dataclasses.asdict`` of one (JSON-decoded)."""
    return FLConfig(**{**payload, "hidden": tuple(payload["hidden"])})


def _mlp(in_features: int, num_classes: int, hidden: tuple[int, ...], seed: int) -> nn.Module:
    from dlsec.core.arch import MLP

    torch.manual_seed(seed)
    return MLP(in_features=in_features, num_classes=num_classes, hidden=hidden)


def _to_vector(model: nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).float() for t in model.state_dict().values()])


def _load_vector(model: nn.Module, vector: torch.Tensor) -> None:
    state = model.state_dict()
    start = 0
    for key, t in state.items():
        state[key] = vector[start : start + t.numel()].reshape(t.shape).to(t.dtype).clone()
        start += t.numel()
    model.load_state_dict(state)


@dataclass
class _Plan:
    """Everything a client needs (pickled once into each Ray actor): data, model, attack."""

    config: FLConfig
    parts: list[tuple[np.ndarray, np.ndarray]]
    in_features: int
    num_classes: int
    attack: Attack
    _cache: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    def model(self) -> nn.Module:
        c = self.config
        if c.arch is None:
            return _mlp(self.in_features, self.num_classes, c.hidden, c.seed)
        from dlsec.core.arch import build_architecture

        torch.manual_seed(c.seed)
        return build_architecture(c.arch, c.arch_kwargs, allow_import=False)

    def malicious(self, server_round: int) -> list[int]:
        c = self.config
        return malicious_clients(
            c.num_clients,
            c.malicious_fraction,
            seed=c.seed,
            server_round=server_round if c.per_round else None,
        )

    def train(
        self, x: np.ndarray, y: np.ndarray, base: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, float]:
        """Local SGD from ``base``; returns the update and the mean training loss."""
        c = self.config
        model = self.model()
        _load_vector(model, base)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=c.lr)
        g = torch.Generator().manual_seed(seed)
        xt, yt = torch.tensor(x), torch.tensor(y)
        losses = []
        for _ in range(c.local_epochs):
            order = torch.randperm(len(yt), generator=g)
            for start in range(0, len(yt), c.batch_size):
                idx = order[start : start + c.batch_size]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
        return _to_vector(model) - base, float(np.mean(losses)) if losses else 0.0

    def _seed(self, server_round: int, client: int) -> int:
        # client -2 is the server's own training on its root set (FLTrust)
        return int(np.random.default_rng([self.config.seed, server_round, client + 3]).integers(2**31))

    def benign(self, client: int, server_round: int, base: torch.Tensor) -> torch.Tensor:
        """Client ``client``'s honest update this round (cached: colluders reuse it)."""
        key = (server_round, client)
        if key not in self._cache:
            if self._cache and next(iter(self._cache))[0] != server_round:
                self._cache.clear()
            x, y = self.parts[client]
            self._cache[key] = self.train(x, y, base, self._seed(server_round, client))[0]
        return self._cache[key]

    def client_update(
        self, client: int, server_round: int, base: torch.Tensor
    ) -> tuple[torch.Tensor, float, int]:
        """The update client ``client`` sends this round, its training loss and example count."""
        x, y = self.parts[client]
        bad = self.malicious(server_round)
        if client not in bad:
            update, loss = self.train(x, y, base, self._seed(server_round, client))
            return update, loss, len(y)
        ctx = RoundContext(
            num_clients=self.config.num_clients,
            num_malicious=len(bad),
            rank=bad.index(client),
            seed=self._seed(server_round, client),
            shared_seed=self._seed(server_round, -3),
        )
        px, py = self.attack.poison(x, y, num_classes=self.num_classes, ctx=ctx)
        own, loss = self.train(px, py, base, ctx.seed)
        colluders = (
            torch.stack([self.benign(c, server_round, base) for c in bad])
            if self.attack.omniscient
            else own[None]
        )
        return self.attack.craft(own, colluders, ctx), loss, len(y)


@dataclass
class _Server:
    """The server's side: the rule, its root set, the test set, and the records it keeps."""

    plan: _Plan
    aggregator: Aggregator
    root: Dataset
    test: Dataset
    progress: Callable[[RoundRecord], None] | None
    records: list[RoundRecord] = field(default_factory=list)
    pending: dict[int, tuple[list[int], torch.Tensor, Aggregate]] = field(default_factory=dict)
    last: torch.Tensor | None = None

    def reference(self, server_round: int, base: torch.Tensor) -> torch.Tensor:
        return self.plan.train(self.root.x, self.root.y, base, self.plan._seed(server_round, -2))[0]

    def observe(self, server_round: int, ids: list[int], updates: torch.Tensor, result: Aggregate) -> None:
        self.pending[server_round] = (ids, updates, result)

    def evaluate(self, server_round: int, vector: torch.Tensor) -> RoundRecord:
        self.last = vector.detach().clone()
        model = self.plan.model()
        _load_vector(model, vector)
        model.eval()
        with torch.no_grad():
            pred = model(torch.from_numpy(self.test.x)).argmax(1).numpy()
            accuracy = float((pred == self.test.y).mean())
            keep = self.test.y != self.plan.config.target
            stamped = stamp_trigger(self.test.x[keep])
            hit = model(torch.from_numpy(stamped)).argmax(1).numpy() == self.plan.config.target
            backdoor = float(hit.mean()) if len(hit) else 0.0
        record = RoundRecord(server_round, accuracy, backdoor)
        if isinstance(self.aggregator, DPFedAvg) and 0 < server_round <= len(self.aggregator.epsilons):
            record.epsilon = self.aggregator.epsilons[server_round - 1]
            record.clipping_norm = self.aggregator.clipping_norms[server_round - 1]
        if server_round in self.pending:
            ids, updates, result = self.pending.pop(server_round)
            bad = set(self.plan.malicious(server_round)) & set(ids)
            excluded = set(result.excluded)
            dist = (updates - result.update).norm(dim=1)
            record.malicious = sorted(bad)
            record.excluded = sorted(excluded)
            record.precision = len(excluded & bad) / len(excluded) if excluded else None
            record.recall = len(excluded & bad) / len(bad) if bad else None
            record.distances = {cid: float(d) for cid, d in zip(ids, dist.tolist(), strict=True)}
        elif server_round > 0 and self.plan.config.clients_per_round is None:
            record.malicious = self.plan.malicious(server_round)  # SecAgg+: no update is seen
        self.records.append(record)
        if self.progress is not None:
            self.progress(record)
        return record


def _prepare(config: FLConfig, dataset: Dataset | None = None) -> tuple[_Plan, Aggregator, Dataset, Dataset]:
    c = config
    if c.engine not in ENGINES:
        raise UsageError(f"unknown engine {c.engine!r}; use flower, local or deployment")
    if c.ray_address is not None:
        if c.engine != "flower":
            raise UsageError("a Ray address needs the flower engine (--engine flower)")
        check_ray_address(c.ray_address)
    if c.num_clients < 2:
        raise UsageError(f"a federation needs at least 2 clients, got {c.num_clients}")
    if c.rounds < 1:
        raise UsageError(f"the number of rounds must be at least 1, got {c.rounds}")
    if c.local_epochs < 1 or c.batch_size < 1 or not c.lr > 0:
        raise UsageError("local_epochs, batch_size and lr must be positive")
    if c.secure_aggregation:
        check_secure_aggregation(c)
    aggregator: Aggregator = build_aggregator(
        c.defense, num_clients=c.num_clients, malicious_fraction=c.malicious_fraction, seed=c.seed
    )
    attack = build_attack(c.attack)
    if attack.tailored:  # the attacker's own copy of the server's rule (no shared state)
        rule = build_aggregator(
            c.defense, num_clients=c.num_clients, malicious_fraction=c.malicious_fraction, seed=c.seed
        )
        attack = build_attack(c.attack, rule=rule)
    m = c.num_clients if c.clients_per_round is None else c.clients_per_round
    if not 1 <= m <= c.num_clients:
        raise UsageError(f"clients_per_round must lie in 1..{c.num_clients}, got {m}")
    if m < aggregator.min_clients():
        raise UsageError(f"{c.defense} needs at least {aggregator.min_clients()} clients per round, got {m}")
    if c.dp not in DP_MODES:
        raise UsageError(f"unknown dp mode {c.dp!r}; use none, fixed or adaptive")
    if c.dp != "none":
        delta = default_delta(c.num_clients) if c.delta is None else c.delta
        q = m / c.num_clients
        z = c.noise_multiplier
        if c.target_epsilon is not None:
            z = noise_for_epsilon(c.target_epsilon, sample_rate=q, rounds=c.rounds, delta=delta)
        dp_options: dict[str, Any] = {
            "noise_multiplier": z,
            "clipping_norm": c.clipping_norm,
            "sample_rate": q,
            "delta": delta,
            "adaptive": c.dp == "adaptive",
            "seed": c.seed,
        }
        # the mean keeps DP-FedAvg's C/m; a robust rule gets noise calibrated to its own sensitivity
        robust = aggregator
        aggregator = DPFedAvg(**dp_options) if c.defense == "fedavg" else RobustDP(**dp_options, rule=robust)
        aggregator.update_noise_multiplier(m)  # adaptive: refuse a z the count noise cannot carry
    data = load_dataset(c.dataset) if dataset is None else dataset
    if not 0 <= c.target < data.spec.num_classes:
        raise UsageError(f"the backdoor target {c.target} is not a class of {c.dataset}")
    train, test = data.split(test_size=0.25, seed=c.seed)
    if not 0 < c.root_size < len(train) // 2:
        raise UsageError(f"root_size must lie in 1..{len(train) // 2 - 1}, got {c.root_size}")
    order = np.random.default_rng(c.seed).permutation(len(train))
    root = train.subset(np.sort(order[: c.root_size]), name=f"{train.name}[root]")
    pool = train.subset(np.sort(order[c.root_size :]), name=f"{train.name}[clients]")
    parts = partition(pool, c.num_clients, scheme=c.partition, alpha=c.alpha, seed=c.seed)
    in_features = int(np.prod(data.spec.shape))
    plan = _Plan(c, [(p.x, p.y) for p in parts], in_features, data.spec.num_classes, attack)
    plan.model()  # an unknown architecture or arguments that do not fit fail here, in one line
    return plan, aggregator, root, test


def simulate(
    config: FLConfig,
    *,
    data: Dataset | None = None,
    progress: Callable[[RoundRecord], None] | None = None,
) -> SimulationResult:
    """Run a federated simulation and measure every round.

    Args:
        config: what to run.
        data: the dataset itself (else ``config.dataset`` is loaded); split, partitioned and
            held out as usual.
        progress: called with each round's :class:`RoundRecord` as it is measured.

    Raises:
        UsageError: bad configuration (unknown attack or defence, a fraction the defence cannot
            tolerate, too few clients for Krum or Bulyan...).

    Example:
        >>> result = simulate(FLConfig(num_clients=5, rounds=2, engine="local"))
        >>> result.final_accuracy > 0.5
        True
    """
    if config.engine == "deployment":
        if data is not None:
            raise UsageError(
                "a deployment loads config.dataset in every process; it cannot take a dataset object"
            )
        from dlsec.federated._deploy import deploy

        return deploy(config, progress=progress)
    plan, aggregator, root, test = _prepare(config, data)
    server = _Server(plan, aggregator, root, test, progress)
    if config.engine == "local":
        _run_local(server)
    else:
        _run_flower(server)
    return _result(server)


def _result(server: _Server) -> SimulationResult:
    """The finished run's result, with the privacy accounting of DP-FedAvg."""
    config, aggregator = server.plan.config, server.aggregator
    privacy = None
    if isinstance(aggregator, DPFedAvg):
        m = config.num_clients if config.clients_per_round is None else config.clients_per_round
        privacy = {
            "mechanism": (
                f"DP-FedAvg, {config.dp} clipping"
                if config.defense == "fedavg"
                else f"clipped {config.defense} with Gaussian noise at its sensitivity, {config.dp} clipping"
            ),
            "accountant": "opacus.accountants.RDPAccountant",
            "noise_multiplier": aggregator.noise_multiplier,
            "sample_rate": aggregator.sample_rate,
            "clients_per_round": m,
            "delta": aggregator.delta,
            "epsilon": aggregator.epsilons[-1] if aggregator.epsilons else None,
            "epsilons": list(aggregator.epsilons),
            "clipping_norms": list(aggregator.clipping_norms),
            "noise_stds": list(aggregator.noise_stds),
            "sensitivities": list(aggregator.sensitivities),
        }
    if len(server.records) != config.rounds + 1:
        raise UsageError(
            f"the simulation stopped after {len(server.records) - 1} of {config.rounds} rounds; "
            "see Flower's log above"
        )
    return SimulationResult(config, server.records, privacy, final_model=server.last)


def _run_local(server: _Server) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Flower client actor does; tiny models only lose from more
    try:
        _local_rounds(server)
    finally:
        torch.set_num_threads(threads)


def _local_rounds(server: _Server) -> None:
    plan = server.plan
    base = _to_vector(plan.model())
    server.evaluate(0, base)
    c = plan.config
    n = c.num_clients
    m = n if c.clients_per_round is None else c.clients_per_round
    for rnd in range(1, c.rounds + 1):
        ids = list(range(n))
        if m < n:
            ids = sorted(np.random.default_rng([c.seed, rnd, 7]).choice(n, size=m, replace=False).tolist())
        sent = [plan.client_update(cid, rnd, base) for cid in ids]
        updates = torch.stack([s[0] for s in sent])
        reference = server.reference(rnd, base) if server.aggregator.needs_reference else None
        result = server.aggregator(
            updates, weights=[float(s[2]) for s in sent], client_ids=ids, reference=reference
        )
        server.observe(rnd, ids, updates, result)
        base = base + result.update
        server.evaluate(rnd, base)


def _backend_config(ray_address: str | None) -> dict[str, Any]:
    """Flower's Ray backend config: a local Ray of 2 CPUs of its own, or an existing cluster
    (``ray.init`` refuses resource counts when it connects to one, so only the address is passed)."""
    init_args: dict[str, Any] = {"logging_level": logging.ERROR}
    if ray_address is None:
        # "local": a Ray of our own, even beside a cluster started with `ray start` on this machine
        init_args.update(address="local", num_cpus=2, include_dashboard=False)
    else:
        init_args["address"] = ray_address
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": init_args}


def _client_reply(plan: _Plan, msg: Any, context: Any) -> Any:
    """The ClientApp's train step (every Flower runtime): this client's update as new weights.

    The client is the SuperNode's ``partition-id`` (node config), the round the server's
    ``server-round`` (train config); the reply carries the id back as a metric.
    """
    from flwr.app import Message, MetricRecord, RecordDict

    from dlsec.federated._strategy import flatten_arrays, unflatten_arrays

    torch.set_num_threads(1)
    cid = int(context.node_config["partition-id"])
    rnd = int(msg.content["config"]["server-round"])
    arrays = msg.content["arrays"]
    base = flatten_arrays(arrays)
    update, loss, count = plan.client_update(cid, rnd, base)
    reply = RecordDict(
        {
            "arrays": unflatten_arrays(base + update, arrays),
            "metrics": MetricRecord({"num-examples": count, "train-loss": loss, "partition-id": cid}),
        }
    )
    return Message(content=reply, reply_to=msg)


def _serve(server: _Server, grid: Any) -> None:
    """The ServerApp's body (every Flower runtime): :class:`RobustFedAvg` for ``rounds`` rounds,
    with the central evaluation after each."""
    from flwr.app import ArrayRecord, MetricRecord

    from dlsec.federated._strategy import RobustFedAvg, RoundUpdates, flatten_arrays

    plan = server.plan
    n = plan.config.num_clients
    m = n if plan.config.clients_per_round is None else plan.config.clients_per_round
    template = ArrayRecord(plan.model().state_dict())

    def observe(r: RoundUpdates) -> None:
        server.observe(r.server_round, r.client_ids, r.updates, r.result)

    def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        rec = server.evaluate(rnd, flatten_arrays(arrays))
        return MetricRecord({"accuracy": rec.accuracy, "backdoor-success": rec.backdoor_success})

    strategy = RobustFedAvg(
        server.aggregator,
        reference_fn=lambda rnd, arrays: server.reference(rnd, flatten_arrays(arrays)),
        on_round=observe,
        fraction_evaluate=0.0,
        fraction_train=m / n,
        min_train_nodes=m,
        min_available_nodes=n,
    )
    strategy.start(grid=grid, initial_arrays=template, num_rounds=plan.config.rounds, evaluate_fn=evaluate)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _stop_with(grid: Any, stopped: threading.Event) -> None:
    """Make ``grid`` raise once ``stopped`` is set: when Flower's runtime fails to start (Ray
    timing out on a loaded machine), ``run_simulation`` raises in the caller while the ServerApp
    thread, which is not a daemon, waits for replies that never come (the in-memory grid polls
    ``pull_messages`` with no timeout), and the process would never exit; its next poll raises
    instead and the thread ends."""

    def stoppable(call: Callable[..., Any]) -> Callable[..., Any]:
        def checked(*args: Any, **kwargs: Any) -> Any:
            if stopped.is_set():
                raise UsageError("the Flower simulation runtime stopped")
            return call(*args, **kwargs)

        return checked

    for name in ("get_node_ids", "push_messages", "pull_messages"):
        setattr(grid, name, stoppable(getattr(grid, name)))


def _run_flower(server: _Server) -> None:
    from flwr.app import Context, Message
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from dlsec.federated import _secagg

    plan = server.plan
    n = plan.config.num_clients
    secure = plan.config.secure_aggregation
    client: ClientApp = _secagg.client_app(lambda context: plan) if secure else ClientApp()

    if not secure:

        @client.train()
        def train(msg: Message, context: Context) -> Message:
            reply: Message = _client_reply(plan, msg, context)
            return reply

    failure: list[BaseException] = []
    stopped = threading.Event()
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        _stop_with(grid, stopped)
        try:
            if secure:
                _secagg.serve(server, grid, context)
            else:
                _serve(server, grid)
        except BaseException as exc:  # re-raised in the caller's thread after Flower returns
            failure.append(exc)

    quiet = [logging.getLogger(name) for name in ("flwr", "ray")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)  # Flower logs every round at INFO and run_simulation's deprecation
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="ray")
            run_simulation(
                server_app=app,
                client_app=client,
                num_supernodes=n,
                backend_config=_backend_config(plan.config.ray_address),
            )
    except RuntimeError as exc:  # the runtime (Ray, the actors) failed: end the waiting ServerApp
        stopped.set()
        cause: BaseException = exc
        while cause.__cause__ is not None:  # Flower wraps the backend's error twice
            cause = cause.__cause__
        raise UsageError(
            f"the Flower simulation runtime failed: {type(cause).__name__}: {_first_line(cause)}"
        ) from exc
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
    if failure:
        if isinstance(failure[0], Error):
            raise failure[0]
        raise UsageError(
            f"the Flower simulation failed: {type(failure[0]).__name__}: {failure[0]}"
        ) from failure[0]
