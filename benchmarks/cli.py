"""Start-up cost of the commands that run on every commit, and a folder scan's throughput.

Each command is timed as a fresh process (wall time, median of N runs, the commands interleaved
so that machine noise hits them alike), as a ratio to ``python -c "import typer, rich"``: the
floor any Typer + Rich CLI pays. The last row is what every command paid before commands loaded
lazily: importing all of the CLI's modules. Then ``dlsec scan`` of a folder of small model files
(safetensors, ``torch.save`` state dicts, NumPy arrays, plain pickles) runs pinned to one core,
beside picklescan's CLI on the same folder when it is installed (``make bench-setup``).

    python benchmarks/cli.py            # 10 runs per command, 1,000 files
    python benchmarks/cli.py --quick    # 3 runs, 200 files
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from dlsec.release import generate_signing_keys, load_signing_keys, sign_model
from dlsec.store import Registry

BIN = Path(sys.executable).parent
PASS = "bench-cli-passphrase"


def status(text: str) -> None:
    print(f"… {text}", file=sys.stderr, flush=True)


def setup(root: Path, n_files: int) -> tuple[Path, Path, Path]:
    """A dlsec home with keys and a registry, one signed model folder, a folder of model files."""
    home = root / "home"
    generate_signing_keys(home / "keys", passphrase=PASS, scrypt_log_n=10, overwrite=True)
    model = root / "model"
    model.mkdir()
    save_file({"w": np.ones((16, 16), dtype=np.float32)}, str(model / "model.safetensors"))
    sign_model(model, load_signing_keys(home / "keys", passphrase=PASS))
    registry = Registry.open(home=home)
    try:
        registry.add(model, "bench", keys=home / "keys")
    finally:
        registry.close()
    folder = root / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n_files):
        kind = i % 4
        weights = rng.standard_normal((8, 8)).astype(np.float32)
        if kind == 0:
            save_file({"w": weights}, str(folder / f"m{i}.safetensors"))
        elif kind == 1:
            torch.save({"w": torch.from_numpy(weights), "step": i}, folder / f"m{i}.pt")
        elif kind == 2:
            np.save(folder / f"m{i}.npy", weights)
        else:
            import pickle

            (folder / f"m{i}.pkl").write_bytes(pickle.dumps({"w": weights.tolist(), "step": i}))
    return home, model, folder


def wall(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
    dt = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-400:]}")
    return dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 3 if args.quick else 10
    n_files = 200 if args.quick else 1000
    root = Path(tempfile.mkdtemp(prefix="dlsec-bench-cli-"))
    try:
        status(f"writing keys, a signed model, a registry and {n_files} model files")
        home, model, folder = setup(root, n_files)
        # As installed: bytecode cached (a wheel install compiles it; some shells turn that off).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["DLSEC_HOME"] = str(home)
        dlsec = str(BIN / "dlsec")
        py = sys.executable
        commands = {
            'python -c "import typer, rich"': [py, "-c", "import typer, rich"],
            "dlsec --help": [dlsec, "--help"],
            "dlsec scan one.safetensors": [dlsec, "scan", str(model / "model.safetensors")],
            "dlsec verify MODEL": [dlsec, "verify", str(model)],
            "dlsec audit verify": [dlsec, "audit", "verify"],
            "dlsec keys list": [dlsec, "keys", "list"],
            "dlsec registry list": [dlsec, "registry", "list"],
            "importing every command module (the cost before lazy loading)": [
                py,
                "-c",
                "from dlsec.cli._lazy import load_all; load_all()",
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        status("warming up (bytecode caches, page cache)")
        for argv in commands.values():
            wall(argv, env)
        for i in range(runs):
            status(f"timing start-up, round {i + 1}/{runs}")
            for name, argv in commands.items():
                times[name].append(wall(argv, env))
        base = statistics.median(times['python -c "import typer, rich"'])
        print(f"## Start-up (median of {runs}, {os.cpu_count()} cores)\n")
        print("| command | median (s) | ratio to `import typer, rich` |")
        print("|---|---:|---:|")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"| {name} | {med:.3f} | {med / base:.2f}x |")

        one_core = ["taskset", "-c", "0"] if shutil.which("taskset") else []
        scans: list[tuple[str, list[str]]] = [("dlsec scan", [*one_core, dlsec, "scan", str(folder)])]
        if (BIN / "picklescan").exists():
            scans.append(("picklescan", [*one_core, str(BIN / "picklescan"), "--path", str(folder)]))
        print(f"\n## Scanning a folder of {n_files:,} small model files (one core, median of 3)\n")
        print("| tool | time (s) | files/s | time / dlsec |")
        print("|---|---:|---:|---:|")
        medians = {}
        for tool, argv in scans:
            status(f"{tool}: {n_files} files, 3 runs")
            medians[tool] = statistics.median(wall(argv, env) for _ in range(3))
        for tool, t in medians.items():
            print(f"| {tool} | {t:.2f} | {n_files / t:,.0f} | {t / medians['dlsec scan']:.2f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
