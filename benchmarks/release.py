"""Release speed: model hashing beside sha256sum and model_signing; audit-log appends and verification.

Hashing: a ~1 GB single-file model and the same bytes as an 8-file directory, hashed by dlsec's
manifest (threads over files, large chunks), by coreutils' ``sha256sum`` and by
``model_signing.hashing`` (the OpenSSF reference, SHA-256 file serialisation) on the same
files, each best of three runs with the page cache warm. Audit log: single appends, each its
own transaction with a signed checkpoint (what a registry operation does); bulk appends of
100,000 events with a checkpoint every 1,000; and a full verification of that 100,000-event log.
SQLite in a temporary home. Prints a Markdown table of times and ratios.

    python benchmarks/release.py            # 1 GiB, 100,000 events
    python benchmarks/release.py --quick    # 256 MiB, 20,000 events
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from dlsec.release import hash_model
from dlsec.store import AuditLog, open_database


def best_of(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_files(root: Path, total: int) -> tuple[Path, Path]:
    single = root / "single"
    multi = root / "multi"
    single.mkdir()
    multi.mkdir()
    chunk = os.urandom(1 << 20)
    with open(single / "model.safetensors", "wb") as f:
        for _ in range(total >> 20):
            f.write(chunk)
    part = total // 8
    for i in range(8):
        with open(multi / f"model-{i:05d}-of-00008.safetensors", "wb") as f:
            for _ in range(part >> 20):
                f.write(chunk[::-1] if i % 2 else chunk)
    return single, multi


def sha256sum(path: Path) -> None:
    files = [str(p) for p in sorted(path.rglob("*")) if p.is_file()]
    subprocess.run(["sha256sum", *files], check=True, stdout=subprocess.DEVNULL)


def model_signing_hash() -> Callable[[Path], None] | str:
    try:
        from model_signing import hashing
    except Exception as exc:  # noqa: BLE001 - report any import failure of a peer
        return f"not installed ({type(exc).__name__})"

    def run(path: Path) -> None:
        hashing.Config().use_file_serialization(hashing_algorithm="sha256").hash(path)

    return run


def audit_bench(root: Path, events: int) -> list[tuple[str, float, str]]:
    rows = []
    log = AuditLog(open_database(home=root / "single-appends"))
    n_single = min(2000, events // 10)
    t0 = time.perf_counter()
    for i in range(n_single):
        log.append("gateway.predict", f"key-{i % 7}", {"i": i})
    dt = time.perf_counter() - t0
    rows.append(
        (
            f"{n_single} single appends (own transaction + signed checkpoint each)",
            dt,
            f"{n_single / dt:,.0f} /s",
        )
    )

    bulk = AuditLog(open_database(home=root / "bulk"))
    t0 = time.perf_counter()
    for start in range(0, events, 1000):
        bulk.append_many(
            [
                ("gateway.predict", f"key-{i % 7}", {"i": i, "model": "digits@3"})
                for i in range(start, start + 1000)
            ]
        )
    dt = time.perf_counter() - t0
    rows.append((f"{events:,} appends, a signed checkpoint every 1,000", dt, f"{events / dt:,.0f} /s"))
    t0 = time.perf_counter()
    result = bulk.verify()
    dt = time.perf_counter() - t0
    assert result.ok, result.reason
    rows.append(
        (f"verify the {events:,}-event log ({result.checkpoints} checkpoints)", dt, f"{events / dt:,.0f} /s")
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    size = (256 if args.quick else 1024) << 20
    events = 20_000 if args.quick else 100_000
    root = Path(tempfile.mkdtemp(prefix="dlsec-bench-release-"))
    try:
        single, multi = make_files(root, size)
        peer = model_signing_hash()
        print(f"## Hashing {size >> 20} MiB ({os.cpu_count()} cores)\n")
        print("| model | tool | time (s) | MB/s | time / sha256sum |")
        print("|---|---|---:|---:|---:|")
        for label, path in (("1 file", single), ("8 files", multi)):
            base = best_of(lambda p=path: sha256sum(p))
            timings = [("sha256sum", base), ("dlsec", best_of(lambda p=path: hash_model(p)))]
            if callable(peer):
                timings.append(("model_signing", best_of(lambda p=path, f=peer: f(p))))
            for tool, t in timings:
                print(f"| {label} | {tool} | {t:.2f} | {size / t / 1e6:,.0f} | {t / base:.2f} |")
            if not callable(peer):
                print(f"| {label} | model_signing | {peer} | | |")
        print(f"\n## Audit log (SQLite, {events:,} events)\n")
        print("| operation | time (s) | rate |")
        print("|---|---:|---:|")
        for label, t, rate in audit_bench(root, events):
            print(f"| {label} | {t:.2f} | {rate} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
