"""A Flower strategy whose ``aggregate_train`` runs a dlsec :class:`Aggregator`.

:class:`RobustFedAvg` subclasses Flower's message-API ``FedAvg``
(``flwr.serverapp.strategy``; ``aggregate_train`` is what the legacy API called
``aggregate_fit``): sampling, configuration, evaluation and metric aggregation stay Flower's,
and only the model aggregation is replaced. Clients send their new weights, as with every
Flower strategy; the strategy turns them into updates against the global model it sent, so the
same ClientApps work under Flower's own strategies too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from dlsec.federated._aggregate import Aggregate, Aggregator

__all__ = ["RobustFedAvg", "RoundUpdates", "flatten_arrays", "unflatten_arrays"]


@dataclass(frozen=True)
class RoundUpdates:
    """One round as the server saw it: client ids (sorted), their updates, the aggregate."""

    server_round: int
    client_ids: list[int]
    updates: torch.Tensor
    result: Aggregate


def flatten_arrays(record: ArrayRecord) -> torch.Tensor:
    """All arrays of a record, flattened in key order into one float32 vector."""
    parts = [np.asarray(a, dtype=np.float32).ravel() for a in record.to_numpy_ndarrays()]
    return torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0)


def unflatten_arrays(vector: torch.Tensor, like: ArrayRecord) -> ArrayRecord:
    """The inverse of :func:`flatten_arrays`, with the keys and shapes of ``like``."""
    flat = vector.detach().cpu().numpy().astype(np.float32)
    out: dict[str, Array] = {}
    start = 0
    for key, arr in zip(like.keys(), like.to_numpy_ndarrays(), strict=True):
        out[key] = Array(flat[start : start + arr.size].reshape(arr.shape).astype(arr.dtype))
        start += arr.size
    return ArrayRecord(out)


def client_id(msg: Message) -> int:
    """A reply's client id: its ``partition-id`` metric when it sends one, else its node id."""
    for record in msg.content.metric_records.values():
        if "partition-id" in record:
            return int(record["partition-id"])  # type: ignore[arg-type]
    return int(msg.metadata.src_node_id)


def _train_loss(contents: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    total, loss = 0.0, 0.0
    for content in contents:
        for record in content.metric_records.values():
            w = float(record.get(weighted_by_key, 0.0))  # type: ignore[arg-type]
            total += w
            loss += w * float(record.get("train-loss", 0.0))  # type: ignore[arg-type]
    return MetricRecord({"train-loss": loss / total if total else 0.0})


class RobustFedAvg(FedAvg):
    """Flower's FedAvg with a dlsec aggregation rule in ``aggregate_train``.

    Args:
        aggregator: the rule (``build_aggregator("krum", ...)``).
        reference_fn: for rules that need one (FLTrust), the server's own update on its root
            data, given the round and the global arrays.
        on_round: called with each round's :class:`RoundUpdates` (for measurement).
        **kwargs: Flower ``FedAvg`` options (``fraction_train``, ``min_available_nodes``...).

    Example:
        >>> from dlsec.federated import build_aggregator
        >>> strategy = RobustFedAvg(build_aggregator("median", num_clients=10, malicious_fraction=0.2))
    """

    def __init__(
        self,
        aggregator: Aggregator,
        *,
        reference_fn: Callable[[int, ArrayRecord], torch.Tensor] | None = None,
        on_round: Callable[[RoundUpdates], None] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("train_metrics_aggr_fn", _train_loss)
        super().__init__(**kwargs)
        self.aggregator = aggregator
        self.reference_fn = reference_fn
        self.on_round = on_round
        self._global: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._global = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid or self._global is None:
            return None, None
        valid = sorted(valid, key=client_id)
        contents = [m.content for m in valid]
        base = flatten_arrays(self._global)
        rows = []
        for content in contents:
            vec = flatten_arrays(next(iter(content.array_records.values())))
            # a reply of another shape cannot be averaged: it becomes a non-finite row, excluded
            rows.append(vec - base if vec.shape == base.shape else torch.full_like(base, float("nan")))
        updates = torch.stack(rows)
        weights = [
            float(next(iter(c.metric_records.values()))[self.weighted_by_key])  # type: ignore[arg-type]
            for c in contents
        ]
        ids = [client_id(m) for m in valid]
        reference = None
        if self.aggregator.needs_reference and self.reference_fn is not None:
            reference = self.reference_fn(server_round, self._global)
        result = self.aggregator(updates, weights=weights, client_ids=ids, reference=reference)
        if self.on_round is not None:
            self.on_round(RoundUpdates(server_round, ids, updates, result))
        arrays = unflatten_arrays(base + result.update, self._global)
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)
