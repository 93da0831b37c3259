"""Flower's secure aggregation (SecAgg+, Bell et al. 2020) with FedAvg.

The server runs Flower's ``SecAggPlusWorkflow`` inside its ``DefaultWorkflow`` over Flower's
``FedAvg``, and each ClientApp carries ``secaggplus_mod``: a client clips its new weights to
``[-clipping_range, clipping_range]``, quantises them (stochastic rounding to
``quantization_range`` levels), masks them with pairwise and private masks whose seeds are
secret-shared among its neighbours, and the server unmasks only their weighted sum. The server
therefore never sees one client's update; the aggregate equals plain FedAvg's up to the
quantisation error.

As Flower documents, the workflow "allows the server to compute the weighted average of model
parameters"; nothing else. A rule that needs the individual updates (median, trimmed mean,
Krum, Bulyan, FLTrust, FoolsGold, FLAME, norm clipping) and DP-FedAvg's server-side clipping of
each update cannot run on that sum: :func:`check_secure_aggregation` refuses them.

Flower's quantisation draws its stochastic rounding from NumPy's global generator; each client
seeds it from ``(seed, round, client)`` just before the mod quantises, so a run reproduces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dlsec.errors import UsageError

if TYPE_CHECKING:
    from dlsec.federated._simulate import FLConfig, _Plan, _Server

__all__ = ["SECAGG_SETTINGS", "check_secure_aggregation"]

#: The SecAgg+ parameters: Flower's quantisation defaults; each client's key shared with half of
#: the sampled clients (at least 3, else all), 70% of the shares needed to rebuild a key. The
#: largest client weight (``max_weight``) is the largest partition's size.
SECAGG_SETTINGS: dict[str, Any] = {
    "num_shares": 0.5,
    "reconstruction_threshold": 0.7,
    "clipping_range": 8.0,
    "quantization_range": 2**22,
    "modulus_range": 2**32,
}


def check_secure_aggregation(config: FLConfig) -> None:
    """Refuse, in one line, what SecAgg+ cannot combine with.

    Raises:
        UsageError: a robust rule or DP-FedAvg (each needs the individual updates), or the local
            engine (SecAgg+ is Flower's protocol, run by Flower's runtimes).
    """
    if config.defense != "fedavg":
        raise UsageError(
            f"secure aggregation cannot combine with {config.defense}: under SecAgg+ the server "
            "only sees the sum of the updates, and this rule needs each client's update "
            "(use --defense fedavg)"
        )
    if config.dp != "none":
        raise UsageError(
            "secure aggregation cannot combine with --dp: DP-FedAvg clips each client's update at "
            "the server, and under SecAgg+ the server only sees the sum"
        )
    if config.engine == "local":
        raise UsageError("secure aggregation runs in Flower: use --engine flower or deployment")


def _vector(arrays: list[Any]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays]))


def _split(vector: torch.Tensor, like: list[Any]) -> list[np.ndarray]:
    flat = vector.detach().cpu().numpy().astype(np.float32)
    out, start = [], 0
    for arr in like:
        a = np.asarray(arr)
        out.append(flat[start : start + a.size].reshape(a.shape).astype(a.dtype))
        start += a.size
    return out


def client_app(plan_of: Any) -> Any:
    """A ClientApp with ``secaggplus_mod`` whose client trains (or attacks) as in the simulation.

    ``plan_of(context)`` gives the client's :class:`_Plan`.
    """
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp

    class _Client(NumPyClient):
        def __init__(self, plan: _Plan, cid: int) -> None:
            self.plan, self.cid = plan, cid

        def fit(
            self, parameters: list[Any], config: dict[str, Any]
        ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
            torch.set_num_threads(1)
            rnd = int(config["server-round"])
            base = _vector(parameters)
            update, loss, count = self.plan.client_update(self.cid, rnd, base)
            # secaggplus_mod quantises right after this returns, with NumPy's global generator
            np.random.seed(self.plan._seed(rnd, self.cid) % 2**32)
            return _split(base + update, parameters), count, {"train-loss": loss, "partition-id": self.cid}

    def client_fn(context: Any) -> Any:
        return _Client(plan_of(context), int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


def serve(server: _Server, grid: Any, context: Any) -> None:
    """The ServerApp's body under SecAgg+: Flower's FedAvg in ``DefaultWorkflow`` with
    ``SecAggPlusWorkflow`` as its fit workflow, the central evaluation after each round."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    plan = server.plan
    n = plan.config.num_clients
    m = n if plan.config.clients_per_round is None else plan.config.clients_per_round
    initial = [t.detach().cpu().numpy() for t in plan.model().state_dict().values()]

    def evaluate(rnd: int, arrays: list[Any], _config: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        record = server.evaluate(rnd, _vector(arrays))
        return 0.0, {"accuracy": record.accuracy, "backdoor-success": record.backdoor_success}

    strategy = FedAvg(
        fraction_fit=m / n,
        fraction_evaluate=0.0,
        min_fit_clients=m,
        min_evaluate_clients=0,
        min_available_clients=n,
        initial_parameters=ndarrays_to_parameters(initial),
        evaluate_fn=evaluate,
        on_fit_config_fn=lambda rnd: {"server-round": rnd},
    )
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=plan.config.rounds), strategy=strategy
    )
    s = SECAGG_SETTINGS
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=s["num_shares"],
            reconstruction_threshold=s["reconstruction_threshold"],
            max_weight=float(max(len(y) for _, y in plan.parts)),
            clipping_range=s["clipping_range"],
            quantization_range=s["quantization_range"],
            modulus_range=s["modulus_range"],
        )
    )
    workflow(grid, legacy)
