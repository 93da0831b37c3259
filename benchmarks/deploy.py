"""A multi-worker deployment under load: `dlsec serve --workers N` over PostgreSQL and Redis.

One command per component, as a deployment runs them (here all on loopback, in a scratch folder):

    initdb + pg_ctl start                       # the registry, audit log and keys (PostgreSQL)
    redis-server --port P                       # rate limits and budgets shared by the workers
    dlsec --home H serve --models tiny --workers N \\
        --registry-url postgresql+psycopg://... --redis-url redis://...

The served model is a small MLP (4 features, 3 classes), signed and promoted in the PostgreSQL
registry, so the numbers measure the deployment (HTTP, keys, limits, validation, logging), not
a model. Several hundred concurrent clients (asyncio tasks over httpx, one connection each) then:

1. send single-example predictions with an unlimited key: requests/s (total and per worker),
   p50/p99 latency, and the count of 5xx answers (must be 0);
2. spend budgeted keys: each key has a budget of B predictions and is sent B + extra requests,
   interleaved over every client and so over every worker; exactly B must be served per key
   (the rest 429 ``budget``), which holds only if the workers share the budget exactly.

The run is bounded: a fixed number of requests per phase, httpx's 60 s timeout on each connect
and read, and every server is stopped at the end. The extraction detector is off by default
(``--with-detector`` turns it on): it would throttle the benchmark's own clients, which is what
it is for.

    python benchmarks/deploy.py                 # workers 1 and 4, 300 clients, 2000 requests
    python benchmarks/deploy.py --quick         # workers 1 and 2, 100 clients, 1000 requests
    python benchmarks/deploy.py --workers 1 2 4 --clients 400
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

CLI = "import sys; from dlsec.cli import main; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Callable[[], object], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start within {seconds:.0f} s")


# -- components ---------------------------------------------------------------------------------


def start_postgres(scratch: Path) -> tuple[str, list[str]]:
    """initdb and pg_ctl start on a free port; return (SQLAlchemy URL, the stop command)."""
    initdb = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)), None)
    if initdb is None and shutil.which("initdb"):
        initdb = Path(str(shutil.which("initdb")))
    if initdb is None:
        raise SystemExit("PostgreSQL is not installed: `make postgres`")
    data = scratch / "pg"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(scratch, "postgres")
    port = free_port()
    subprocess.run([*as_user, str(initdb), "-D", str(data), "-U", "postgres", "--auth=trust"],
                   check=True, capture_output=True)  # fmt: skip
    pg_ctl = str(initdb.parent / "pg_ctl")
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-w", "-l", str(data / "log"),
         "-o", f"-p {port} -k {data} -h 127.0.0.1 -c max_connections=400", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    stop = [*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"]
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", stop


def start_redis(scratch: Path) -> tuple[str, subprocess.Popen[bytes]]:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed: `make redis`")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(scratch)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    _wait(lambda: redis.Redis.from_url(url).ping(), "redis-server", 20)
    return url, proc


def prepare(home: Path, registry_url: str) -> None:
    """Sign, register and promote the model in the PostgreSQL registry."""
    import torch

    from dlsec.core.arch import build_architecture
    from dlsec.core.io import save_safetensors_model
    from dlsec.core.spec import InputSpec
    from dlsec.release import generate_signing_keys, load_signing_keys, sign_model
    from dlsec.store import Registry

    generate_signing_keys(home / "keys", passphrase="bench", scrypt_log_n=10)
    torch.manual_seed(0)
    kwargs = {"in_features": 4, "num_classes": 3, "hidden": [16]}
    model_dir = home / "src" / "tiny"
    model_dir.mkdir(parents=True)
    save_safetensors_model(
        build_architecture("mlp", kwargs),
        InputSpec(shape=(4,), num_classes=3, kind="tabular"),
        model_dir / "model.safetensors",
        arch="mlp",
        arch_kwargs=kwargs,
    )
    sign_model(model_dir, load_signing_keys(home / "keys", passphrase="bench"))
    reg = Registry.open(registry_url, home=home)
    try:
        reg.promote("tiny", reg.add(model_dir, "tiny").version)
    finally:
        reg.close()


def make_keys(home: Path, registry_url: str, *, budget_keys: int, budget: int) -> tuple[str, list[str]]:
    """A fresh unlimited key and ``budget_keys`` keys of ``budget`` predictions each."""
    from dlsec.store import KeyStore, open_database

    store = KeyStore(open_database(registry_url, home=home))
    try:
        load_key = store.create(role="client", note="load", actor="bench")[0]
        budgeted = [
            store.create(role="client", budget=budget, note=f"budget {i}", actor="bench")[0]
            for i in range(budget_keys)
        ]
    finally:
        store.db.dispose()
    return load_key, budgeted


@dataclass
class Gateway:
    proc: subprocess.Popen[bytes]
    url: str
    workers: int
    log: Path


def start_gateway(home: Path, registry_url: str, redis_url: str, workers: int, *, detector: bool) -> Gateway:
    port = free_port()
    config = home / f"gateway-{workers}.yaml"
    settings: dict[str, object] = {"detector_process": detector}
    if not detector:
        settings["extraction"] = None
    config.write_text(json.dumps(settings))  # JSON is YAML
    log = home / f"gateway-{workers}.log"
    env = {**os.environ, "DLSEC_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "--home", str(home), "serve", "--models", "tiny", "--port", str(port),
         "--workers", str(workers), "--config", str(config), "--registry-url", registry_url,
         "--redis-url", redis_url],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"dlsec serve exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        return bool(httpx.get(url + "/healthz", timeout=2).json()["models"].get("tiny") == "serving")

    _wait(ready, f"dlsec serve --workers {workers}", 120)
    return Gateway(proc, url, workers, log)


def stop_gateway(gw: Gateway) -> None:
    gw.proc.terminate()  # uvicorn's supervisor stops its workers on SIGTERM
    try:
        gw.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        gw.proc.kill()
        gw.proc.wait(timeout=10)


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Result:
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    served: Counter[str] = field(default_factory=Counter)  # per key: 200 answers
    samples: dict[int, str] = field(default_factory=dict)  # one answer per status other than 200
    errors: list[str] = field(default_factory=list)


async def run_load(url: str, jobs: list[tuple[str, bytes]], clients: int) -> Result:
    """Send every (key, body) job from ``clients`` concurrent connections; record each answer."""
    result = Result()
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    path = "/v1/models/tiny/predict"

    async def client() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as http:
            while True:
                try:
                    key, body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                try:
                    answer = await http.post(
                        path, content=body, headers={"X-API-Key": key, "content-type": "application/json"}
                    )
                except httpx.HTTPError as exc:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                result.latencies.append(time.perf_counter() - t0)
                result.statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    result.served[key] += 1
                else:
                    result.samples.setdefault(answer.status_code, answer.text[:200])

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    result.elapsed = time.perf_counter() - t0
    return result


def bodies(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [json.dumps({"inputs": [rng.random(4).round(4).tolist()]}).encode() for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="workers 1 and 2, 100 clients, 1000 requests")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts to run (default 1 4)")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 300)")
    parser.add_argument("--requests", type=int, help="requests in the throughput phase (default 2000)")
    parser.add_argument("--budget-keys", type=int, default=8)
    parser.add_argument("--budget", type=int, default=50, help="predictions each budgeted key may make")
    parser.add_argument("--with-detector", action="store_true", help="run the extraction detector too")
    args = parser.parse_args()
    workers = args.workers or ([1, 2] if args.quick else [1, 4])
    clients = args.clients or (100 if args.quick else 300)
    requests = args.requests or (1000 if args.quick else 2000)
    if min(workers) < 1 or clients < 1 or requests < 1 or args.budget < 1 or args.budget_keys < 1:
        raise SystemExit("--workers, --clients, --requests, --budget and --budget-keys must be at least 1")
    extra = args.budget // 2 + 5  # requests past the budget, per key
    scratch = Path(tempfile.mkdtemp(prefix="dlsec-bench-deploy-"))
    scratch.chmod(0o755)
    home = scratch / "home"
    home.mkdir()
    pg_stop: list[str] | None = None
    redis_proc: subprocess.Popen[bytes] | None = None
    runs: list[Run] = []
    try:
        pg_url, pg_stop = start_postgres(scratch)
        redis_url, redis_proc = start_redis(scratch)
        prepare(home, pg_url)
        for n in workers:
            load_key, budgeted = make_keys(home, pg_url, budget_keys=args.budget_keys, budget=args.budget)
            gw = start_gateway(home, pg_url, redis_url, n, detector=args.with_detector)
            try:
                warm = [(load_key, b) for b in bodies(max(50, 4 * n), seed=1)]
                asyncio.run(run_load(gw.url, warm, min(clients, 4 * n)))  # every worker loads the model
                throughput = asyncio.run(
                    run_load(gw.url, [(load_key, b) for b in bodies(requests, seed=2)], clients)
                )
                # Each key's requests interleaved with every other key's: consecutive requests of
                # one key land on different connections, hence on different workers.
                spend = [
                    (key, body)
                    for i, body in enumerate(bodies(args.budget + extra, seed=3))
                    for key in budgeted[i % len(budgeted) :] + budgeted[: i % len(budgeted)]
                ]
                budgets = asyncio.run(run_load(gw.url, spend, clients))
            finally:
                stop_gateway(gw)
            runs.append(Run(n, throughput, budgets, budgeted))
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
        if pg_stop is not None:
            subprocess.run(pg_stop, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    report(runs, clients=clients, requests=requests, budget=args.budget, extra=extra)


@dataclass
class Run:
    workers: int
    throughput: Result
    budgets: Result
    budgeted: list[str]


def _ms(latencies: list[float], q: float) -> float:
    return float(np.quantile(latencies, q)) * 1000 if latencies else float("nan")


def report(runs: list[Run], *, clients: int, requests: int, budget: int, extra: int) -> None:
    print(
        f"## Multi-worker deployment (PostgreSQL registry, Redis limits; {clients} concurrent clients, "
        f"{requests} single-example requests per deployment, {os.cpu_count()} cores, loopback)\n"
    )
    print("| workers | requests/s | per worker | p50 (ms) | p99 (ms) | 5xx | other non-200 | client errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    failed = False
    for run in runs:
        t = run.throughput
        rps = len(t.latencies) / t.elapsed if t.elapsed else 0.0
        five = sum(c for s, c in t.statuses.items() if s >= 500)
        other = sum(c for s, c in t.statuses.items() if s != 200 and s < 500)
        print(
            f"| {run.workers} | {rps:,.0f} | {rps / run.workers:,.0f} | {_ms(t.latencies, 0.5):.1f} | "
            f"{_ms(t.latencies, 0.99):.1f} | {five} | {other} | {len(t.errors)} |"
        )
        failed = failed or five > 0 or bool(t.errors)
    print(
        f"\nBudget exactness: each key has a budget of {budget} predictions and is sent {budget + extra}.\n"
    )
    print("| workers | keys | served per key (min-max) | exact | 429 | 5xx | client errors |")
    print("|---:|---:|---|---|---:|---:|---:|")
    for run in runs:
        b = run.budgets
        served = [b.served[k] for k in run.budgeted]
        exact = all(s == budget for s in served)
        five = sum(c for s, c in b.statuses.items() if s >= 500)
        print(
            f"| {run.workers} | {len(served)} | {min(served)}-{max(served)} | {'yes' if exact else 'NO'} | "
            f"{b.statuses[429]} | {five} | {len(b.errors)} |"
        )
        failed = failed or not exact or five > 0 or bool(b.errors)
    for run in runs:
        for error in (run.throughput.errors + run.budgets.errors)[:3]:
            print(f"client error ({run.workers} workers): {error}")
        for status, text in {**run.budgets.samples, **run.throughput.samples}.items():
            print(f"HTTP {status} ({run.workers} workers), e.g.: {text}")
    if failed:
        raise SystemExit("FAILED: a 5xx answer, a client error or an inexact budget (see above)")


if __name__ == "__main__":
    main()
