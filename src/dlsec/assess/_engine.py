"""Where an assessment's units run: in this process (the default) or as Ray tasks.

A unit is a top-level function and its arguments. The large arguments (the model, the
evaluation set) are wrapped in :class:`Shared`: a Ray run puts each one in the object store
once and every task reads it from there, instead of shipping a copy per task. Results come back
to the driver, which writes each unit to the resumable cache as it arrives, so a run killed
half-way keeps its finished units and never recomputes them; a task whose worker dies is retried
by Ray (``max_retries``), so the run finishes with the same report.

Results are identical to a local run with the same seed: a unit's computation does not depend on
where it runs (the same function, the same inputs, seeded attacks, one thread per task).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dlsec.core.cluster import check_ray_address
from dlsec.errors import UsageError

__all__ = ["Engine", "LocalEngine", "RayEngine", "Shared", "UnitTask", "ray_engine"]


@dataclass(frozen=True, eq=False)
class Shared:
    """An argument every unit shares (the model, the inputs): put in Ray's object store once."""

    value: Any


@dataclass(frozen=True)
class UnitTask:
    """One unit: ``fn(*args)`` returns its JSON-able result (plus arrays the driver saves)."""

    key: str
    fn: Callable[..., dict[str, Any]]
    args: tuple[Any, ...] = ()


def _unwrap(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.value if isinstance(a, Shared) else a for a in args)


class Engine:
    """Runs units and yields ``(key, result)`` as each finishes (in any order)."""

    name = "local"
    workers = 1

    def run(self, tasks: Sequence[UnitTask]) -> Iterator[tuple[str, dict[str, Any]]]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "workers": self.workers}

    def starmap(
        self, fn: Callable[..., Any], common: tuple[Any, ...], items: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, Any]]:
        """``fn(*common, *item)`` for every item, ``(index, result)`` as each finishes; ``common``
        is shared (shipped once). The reference models' trainer takes this as its runner."""
        shared = tuple(Shared(c) for c in common)
        tasks = [UnitTask(str(i), _call_any, (fn, *shared, *item)) for i, item in enumerate(items)]
        for key, value in self.run(tasks):
            yield int(key), value["value"]


class LocalEngine(Engine):
    """Every unit in this process, one after the other (the default)."""

    def run(self, tasks: Sequence[UnitTask]) -> Iterator[tuple[str, dict[str, Any]]]:
        for task in tasks:
            yield task.key, task.fn(*_unwrap(task.args))


def _call_any(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    return {"value": fn(*args)}


def _run_unit(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """The Ray task: one thread per task (as many tasks as cores run side by side)."""
    import torch

    torch.set_num_threads(1)
    return fn(*args)


@dataclass
class RayEngine(Engine):
    """Units as Ray tasks on a local Ray (started here) or an existing cluster.

    Args:
        address: ``None`` starts a local Ray with ``workers`` CPUs; otherwise a cluster address
            (``host:port``, ``ray://host:port`` or ``auto``).
        workers: CPUs of the local Ray (ignored on a cluster: its resources decide).
        cpus_per_unit: CPUs each task asks for.
        gpus_per_unit: GPUs each task asks for (the cluster must have them).
        max_retries: times a task whose worker died is run again.
    """

    address: str | None = None
    workers: int = 2
    cpus_per_unit: float = 1.0
    gpus_per_unit: float = 0.0
    max_retries: int = 3
    name: str = "ray"
    _remote: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.cpus_per_unit <= 0 or self.gpus_per_unit < 0:
            raise UsageError("each unit needs a positive number of CPUs and a non-negative number of GPUs")
        if self.address is not None:
            check_ray_address(self.address)
        import ray

        if not ray.is_initialized():
            if self.address is None:
                ray.init(
                    address="local",  # a Ray of our own, even beside a cluster started with `ray start`
                    num_cpus=self.workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    object_store_memory=256 * 1024 * 1024,
                )
            else:
                try:
                    ray.init(address=self.address, log_to_driver=False, configure_logging=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise UsageError(
                        f"cannot connect to the Ray cluster at {self.address}: {first}"
                    ) from None
        resources = ray.cluster_resources()
        if self.gpus_per_unit and resources.get("GPU", 0.0) < self.gpus_per_unit:
            raise UsageError(
                f"each unit asks for {self.gpus_per_unit:g} GPU but the Ray cluster has "
                f"{resources.get('GPU', 0.0):g}; pass --gpus-per-unit 0 or add GPU nodes"
            )
        if self.address is not None:
            self.workers = max(1, int(resources.get("CPU", 1) // self.cpus_per_unit))
        self._remote = ray.remote(
            num_cpus=self.cpus_per_unit, num_gpus=self.gpus_per_unit, max_retries=self.max_retries
        )(_run_unit)

    def run(self, tasks: Sequence[UnitTask]) -> Iterator[tuple[str, dict[str, Any]]]:
        import ray

        if not tasks:
            return
        refs: dict[int, Any] = {}  # id(Shared) -> its object ref, put once for every task

        def ref_of(arg: Any) -> Any:
            if isinstance(arg, Shared):
                if id(arg) not in refs:
                    refs[id(arg)] = ray.put(arg.value)
                return refs[id(arg)]
            return arg

        pending = {self._remote.remote(t.fn, *[ref_of(a) for a in t.args]): t.key for t in tasks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                key = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the unit's own error, re-raised here
                    raise exc.as_instanceof_cause() from None
                except ray.exceptions.WorkerCrashedError:
                    raise UsageError(
                        f"unit {key}: its worker died {self.max_retries + 1} times; the finished units "
                        "are kept, run the command again to resume"
                    ) from None
                yield key, value

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def ray_engine(
    address: str | None = None, *, workers: int | None = None, gpus_per_unit: float = 0.0
) -> RayEngine:
    """A :class:`RayEngine` for ``address`` (else ``$DLSEC_RAY_ADDRESS``, else a local Ray)."""
    address = address or os.environ.get("DLSEC_RAY_ADDRESS") or None
    if address == "local":
        address = None
    return RayEngine(address=address, workers=workers or (os.cpu_count() or 1), gpus_per_unit=gpus_per_unit)
