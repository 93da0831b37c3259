"""Gateway overhead: the dlsec gateway with every layer on against a bare FastAPI endpoint.

A third server is the gateway with monitors too (input drift KS, prediction PSI, feature
squeezing on the served model), fed off the request path.

Both serve ``zoo:digits-cnn`` on loopback (uvicorn, one worker each, in subprocesses). The
dlsec gateway serves it from a signed registry version behind an API key with a rate limit and a
budget, validates inputs against the spec, applies an output policy, logs every query and runs
the extraction detector on a background worker. The bare endpoint parses the same JSON, runs the
same model and returns the probabilities. A client sends single-example requests from one or
more threads, in interleaved rounds (bare, gateway, bare, ...), and reports throughput and p50/p99
latency per server, then the ratios.

    python benchmarks/gateway.py              # 6 rounds of 400 requests each, 1 client thread
    python benchmarks/gateway.py --threads 4  # saturated: p50 includes queueing
    python benchmarks/gateway.py --quick      # 2 rounds of 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

BARE_APP = """
import numpy as np, torch
from fastapi import FastAPI, Request
from dlsec.zoo import load_zoo_model
torch.set_num_threads(1)
model = load_zoo_model("digits-cnn")
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    body = await request.json()
    x = torch.from_numpy(np.asarray(body["inputs"], dtype=np.float32))
    with torch.inference_mode():
        p = model.probs(x).double().numpy()
    return {"predictions": p.argmax(1).tolist(), "probabilities": p.tolist()}
"""

MONITOR = """\
window: 200
ert: 100000
rules:
  - {name: input drift, severity: high, detector: ks, params: {correction: fdr}}
  - {name: prediction drift, severity: medium, detector: psi}
  - {name: adversarial inputs, severity: high, detector: squeezing, window: 50}
"""

GATEWAY_APP = """
import torch
torch.set_num_threads(1)
from dlsec.respond.gateway import app_from_env
app = app_from_env()
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def start(module_dir: Path, module: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"{module}:app", "--port", str(port), "--log-level", "warning",
         "--app-dir", str(module_dir)],
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/openapi.json", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{module} did not start")


def load(
    url: str, path: str, headers: dict[str, str], bodies: list[bytes], threads: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()
    chunks = [bodies[i::threads] for i in range(threads)]

    def worker(chunk: list[bytes]) -> None:
        local = []
        with httpx.Client(base_url=url, headers={**headers, "content-type": "application/json"}) as c:
            for body in chunk:
                t0 = time.perf_counter()
                r = c.post(path, content=body)
                local.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise SystemExit(f"{url}{path}: HTTP {r.status_code} {r.text[:200]}")
        with lock:
            latencies.extend(local)

    t0 = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - t0, latencies


def prepare_home(home: Path) -> str:
    """Sign zoo:digits-cnn, register and promote it; return a client API key."""
    from dlsec.release import generate_signing_keys, load_signing_keys, sign_model
    from dlsec.store import Registry
    from dlsec.store._apikeys import KeyStore
    from dlsec.zoo import zoo_path

    generate_signing_keys(home / "keys", passphrase="bench", scrypt_log_n=10)
    model_dir = home / "src" / "digits"
    model_dir.mkdir(parents=True)
    shutil.copyfile(zoo_path("digits-cnn", home=home) / "model.safetensors", model_dir / "model.safetensors")
    sign_model(model_dir, load_signing_keys(home / "keys", passphrase="bench"))
    reg = Registry.open(home=home)
    record = reg.add(model_dir, "digits")
    reg.promote("digits", record.version)
    key = KeyStore(reg.db).create(role="client", rate="100000/second", budget=10**9, output="rounded-4")[0]
    reg.close()
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="client threads (1: latency, no queueing)")
    parser.add_argument(
        "--without-detector", action="store_true", help="measure the gateway without detection"
    )
    args = parser.parse_args()
    rounds, per_round = (2, 200) if args.quick else (6, 400)
    home = Path(tempfile.mkdtemp(prefix="dlsec-bench-gateway-"))
    env = {**os.environ, "DLSEC_HOME": str(home), "OMP_NUM_THREADS": "1"}
    os.environ["DLSEC_HOME"] = str(home)
    from dlsec.core.data import load_dataset
    from dlsec.zoo import zoo_card

    zoo_card("digits-cnn", home=home)  # trains once into this home
    key = prepare_home(home)
    data = load_dataset("builtin:digits")
    settings: dict[str, object] = {"models": ["digits"], "extraction_reference": "builtin:digits"}
    if args.without_detector:
        settings = {"models": ["digits"], "extraction": None}
    env["DLSEC_GATEWAY_CONFIG"] = json.dumps(settings)
    (home / "monitor.yaml").write_text(MONITOR)
    monitored = {**settings, "monitor": str(home / "monitor.yaml"), "monitor_reference": "builtin:digits"}
    env_monitored = {**env, "DLSEC_GATEWAY_CONFIG": json.dumps(monitored)}
    (home / "bare_app.py").write_text(BARE_APP)
    (home / "gateway_app.py").write_text(GATEWAY_APP)
    rng = np.random.default_rng(0)
    bodies = [
        json.dumps({"inputs": data.x[i : i + 1].tolist()}).encode()
        for i in rng.integers(0, len(data), per_round)
    ]
    procs = []
    try:
        bare, bare_url = start(home, "bare_app", env)
        procs.append(bare)
        gw, gw_url = start(home, "gateway_app", env)
        procs.append(gw)
        mon, mon_url = start(home, "gateway_app", env_monitored)
        procs.append(mon)
        bearer = {"Authorization": f"Bearer {key}"}
        servers = (
            ("bare FastAPI", bare_url, "/predict", {}),
            ("dlsec gateway", gw_url, "/v1/models/digits/predict", bearer),
            ("dlsec gateway + monitors", mon_url, "/v1/models/digits/predict", bearer),
        )
        for _name, url, path, headers in servers:  # warm up, then interleave rounds
            load(url, path, headers, bodies[:50], args.threads)
        results: dict[str, tuple[float, list[float]]] = {name: (0.0, []) for name, *_ in servers}
        for _ in range(rounds):
            for name, url, path, headers in servers:
                elapsed, lat = load(url, path, headers, bodies, args.threads)
                total, all_lat = results[name]
                results[name] = (total + elapsed, all_lat + lat)
        alerts = httpx.get(gw_url + "/metrics").text + httpx.get(mon_url + "/metrics").text
        flagged = [line for line in alerts.splitlines() if line.startswith("dlsec_alerts_total")]
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)
    n = rounds * per_round
    print(f"## Gateway overhead ({n} single-example requests per server, {args.threads} client threads, "
          f"{os.cpu_count()} cores, loopback)\n")  # fmt: skip
    print("| server | requests/s | p50 (ms) | p99 (ms) |")
    print("|---|---:|---:|---:|")
    stats = {}
    for name, (total, lat) in results.items():
        p50 = statistics.median(lat) * 1000
        p99 = float(np.quantile(lat, 0.99)) * 1000
        stats[name] = (n / total, p50, p99)
        print(f"| {name} | {n / total:,.0f} | {p50:.2f} | {p99:.2f} |")
    b, g, m = stats["bare FastAPI"], stats["dlsec gateway"], stats["dlsec gateway + monitors"]
    print(f"\nmonitors on vs off: p50 {m[1] / g[1] - 1:+.1%}, throughput ratio {m[0] / g[0]:.2f}")
    print(
        f"\nthroughput ratio {g[0] / b[0]:.2f}, p50 overhead {g[1] / b[1] - 1:+.1%}, "
        f"p99 overhead {g[2] / b[2] - 1:+.1%}"
    )
    print(f"alerts raised on the benchmark client (natural test-set queries): {flagged or 'none'}")


if __name__ == "__main__":
    main()
