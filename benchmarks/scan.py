"""Model-file scanning and encryption at rest, beside ModelAudit, picklescan, modelscan and fickling.

Runs in one process on the project's own corpus (``tests/scan/corpus.py``: one file per
published scanner bypass, payloads through every pickle opcode path and container, and benign
files written by real ``torch.save`` calls), then times a scan of a ~1 GB PyTorch checkpoint
generated in a temporary folder, and compares file encryption/decryption throughput with
one-shot AES-256-GCM over the same bytes in memory. Prints Markdown tables.

Peers come from ``make bench-setup`` (modelscan, fickling, picklescan in the project's venv;
ModelAudit, whose pins clash with the project's NumPy, in ``.venv-modelaudit`` and run as its
CLI); a peer that cannot be imported is reported as such, never silently skipped. Besides the
totals, a table per format (as dlsec names it) shows where each tool catches and misses.

    python benchmarks/scan.py              # the full run (~1 GB checkpoint, 512 MiB for crypto)
    python benchmarks/scan.py --quick      # 256 MiB checkpoint, 128 MiB for crypto
    python benchmarks/scan.py --corpus-only --formats tf-metagraph,mxnet-symbol,mxnet-params,cntk
                                           # the corpus rows of some formats only (minutes, not an hour)

Besides the corpus built from the formats' schemas, the files the frameworks wrote themselves
(``tests/scan/fixtures/*/MANIFEST.json``) join it: malicious where their manifest expects a
finding or an unvetted verdict, benign where it expects ``safe``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the corpus lives with the tests

import torch  # noqa: E402
from rich.progress import Progress  # noqa: E402
from tests.scan.corpus import ALL_MALICIOUS, benign_files, write_payload  # noqa: E402
from tests.scan.corpus_formats import format_benign_files  # noqa: E402

from dlsec.release import decrypt_file, encrypt_file  # noqa: E402
from dlsec.scan import scan_file  # noqa: E402

Verdict = Callable[[Path], tuple[bool, bool]]  # -> (flagged, only because the tool errored)


def dlsec_verdict(path: Path) -> tuple[bool, bool]:
    result = scan_file(path)
    return (not result.safe, result.verdict == "unscannable")


def modelscan_tool() -> tuple[str, Verdict] | str:
    try:
        import modelscan
        from modelscan.modelscan import ModelScan
    except Exception as exc:  # noqa: BLE001 - report any import failure of a peer
        return f"not installed ({type(exc).__name__}: {exc})"

    def verdict(path: Path) -> tuple[bool, bool]:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                report = ModelScan().scan(path)
            except Exception:  # noqa: BLE001 - a crash counts as flagged (fail closed), and is marked
                return True, True
        issues = len(report.get("issues", []))
        errors = len(report.get("errors", []))
        return (issues > 0 or errors > 0, issues == 0 and errors > 0)

    return f"modelscan {getattr(modelscan, '__version__', '?')}", verdict


def fickling_tool() -> tuple[str, Verdict] | str:
    try:
        import fickling
        from fickling.loader import scan_file as fickle_file
        from fickling.loader import scan_zip_archive
    except Exception as exc:  # noqa: BLE001
        return f"not installed ({type(exc).__name__}: {exc})"

    def verdict(path: Path) -> tuple[bool, bool]:
        # What `fickling --check-safety` does: zip archives member by member, else one pickle.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                if zipfile.is_zipfile(path):
                    results = list(scan_zip_archive(str(path), graceful=True).values())
                else:
                    results = [fickle_file(str(path), graceful=True)]
            except Exception:  # noqa: BLE001
                return True, True
        unsafe = any(not r.is_safe for r in results)
        errors = any(r.errors for r in results)
        found = any(r.results and not r.is_safe and not r.errors for r in results)
        return (unsafe or errors, (unsafe or errors) and not found)

    return f"fickling {getattr(fickling, '__version__', '?')}", verdict


def picklescan_tool() -> tuple[str, Verdict] | str:
    try:
        import picklescan
        from picklescan.scanner import scan_file_path
    except Exception as exc:  # noqa: BLE001
        return f"not installed ({type(exc).__name__}: {exc})"

    def verdict(path: Path) -> tuple[bool, bool]:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                result = scan_file_path(str(path))
            except Exception:  # noqa: BLE001
                return True, True
        found = result.issues_count > 0 or result.infected_files > 0
        return (found or result.scan_err, result.scan_err and not found)

    return f"picklescan {getattr(picklescan, '__version__', '1.0.x')}", verdict


def modelaudit_tool() -> tuple[str, Verdict] | str:
    exe = Path(os.environ.get("DLSEC_BENCH_MODELAUDIT", ROOT / ".venv-modelaudit" / "bin" / "modelaudit"))
    if not exe.exists():
        return f"not installed ({exe} missing: run `make bench-setup`)"
    import json as _json
    import subprocess

    env = {**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "NO_ANALYTICS": "1"}
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, env=env).stdout.strip()

    def verdict(path: Path) -> tuple[bool, bool]:
        out = subprocess.run(
            [str(exe), "scan", "--format", "json", "--no-cache", str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        try:
            report = _json.loads(out.stdout)
        except ValueError:
            return True, True  # no report: counted as flagged (fail closed), marked as an error
        issues = [
            i for i in report.get("issues", []) if i.get("severity") in ("critical", "warning", "error")
        ]
        errored = bool(report.get("has_errors")) or out.returncode not in (0, 1)
        return (bool(issues) or errored, errored and not issues)

    return f"modelaudit {version.split()[-1] if version else '?'}", verdict


def library_written(folder: Path) -> tuple[list[Path], list[Path]]:
    """The library-written fixtures copied into ``folder``: (malicious, benign)."""
    malicious, benign = [], []
    for manifest in sorted((ROOT / "tests" / "scan" / "fixtures").glob("*/MANIFEST.json")):
        dest = folder / manifest.parent.name
        dest.mkdir(parents=True)
        for name, expect in sorted(json.loads(manifest.read_text())["files"].items()):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            path = Path(shutil.copy(manifest.parent / name, dest / name))
            (benign if expect["verdict"] == "safe" else malicious).append(path)
    return malicious, benign


def corpus_rows(
    tools: list[tuple[str, Verdict]], folder: Path, formats: set[str] | None = None
) -> list[dict[str, Any]]:
    marker = folder / "PWNED"
    bad_dir = folder / "malicious"
    bad_dir.mkdir()
    malicious = [write_payload(p, bad_dir, marker) for p in ALL_MALICIOUS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        benign = benign_files(folder / "benign") + format_benign_files(folder / "formats")
    lib_bad, lib_good = library_written(folder / "library")
    malicious, benign = malicious + lib_bad, benign + lib_good
    if formats is not None:
        malicious = [p for p in malicious if scan_file(p).format in formats]
        benign = [p for p in benign if scan_file(p).format in formats]
    rows = []
    with Progress(transient=True) as progress:
        for name, verdict in tools:
            task = progress.add_task(f"{name}: scanning the corpus", total=len(malicious) + len(benign))
            seen: dict[Path, tuple[bool, bool]] = {}
            for path in malicious + benign:
                seen[path] = verdict(path)
                progress.advance(task)
            progress.remove_task(task)
            rows.append(
                {
                    "by_format": _by_format(malicious, benign, seen),
                    "tool": name,
                    "malicious": len(malicious),
                    "caught": sum(seen[p][0] for p in malicious),
                    "only_error": sum(seen[p][0] and seen[p][1] for p in malicious),
                    "missed": [p.stem for p in malicious if not seen[p][0]],
                    "benign": len(benign),
                    "false_pos": [p.name for p in benign if seen[p][0]],
                }
            )
    if marker.exists():
        raise SystemExit("a payload ran during the benchmark; this must never happen")
    return rows


def _by_format(
    malicious: list[Path], benign: list[Path], seen: dict[Path, tuple[bool, bool]]
) -> dict[str, list[int]]:
    """format -> [malicious caught, malicious, benign flagged, benign, flagged only by erroring].

    The format is the one dlsec names; a tool's verdict that came only from failing to read the
    file (dlsec: ``unscannable``) is counted in the fifth place, so each row says how many files of
    the format the tool read and how many it only refused.
    """
    table: dict[str, list[int]] = {}
    for paths, bad in ((malicious, True), (benign, False)):
        for path in paths:
            row = table.setdefault(scan_file(path).format, [0, 0, 0, 0, 0])
            flagged, only_error = seen[path]
            if bad:
                row[0] += flagged
                row[1] += 1
            else:
                row[2] += flagged
                row[3] += 1
            row[4] += flagged and only_error
    return table


def big_checkpoint(folder: Path, gib: float) -> Path:
    """A training-style checkpoint of about ``gib`` GiB: 64 layers, optimizer state, metadata."""
    n_layers = 64
    per = int(gib * (1 << 30) / 4 / n_layers / 3)
    model = {f"layer{i}.weight": torch.zeros(per) for i in range(n_layers)}
    state = {
        i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(per), "exp_avg_sq": torch.zeros(per)}
        for i in range(n_layers)
    }
    ckpt = {
        "model": model,
        "optimizer": {"state": state, "param_groups": [{"lr": 1e-3, "params": list(range(n_layers))}]},
        "epoch": 3,
    }
    path = folder / "big.pt"
    torch.save(ckpt, path)
    return path


def time_scans(tools: list[tuple[str, Verdict]], path: Path, repeats: int) -> dict[str, float]:
    times: dict[str, float] = {}
    for name, verdict in tools:
        samples = []
        for _ in range(repeats if name.startswith("dlsec") else 1):
            start = time.perf_counter()
            verdict(path)
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples)
    return times


def crypto_rows(folders: dict[str, Path], mib: int, repeats: int) -> list[dict[str, Any]]:
    """File encryption/decryption vs one-shot AESGCM on the same bytes, interleaved, medians."""
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from dlsec.release import Identity

    data = os.urandom(mib << 20)
    identity = Identity(x25519.X25519PrivateKey.generate(), mlkem.MLKEM768PrivateKey.generate())
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, data, None)
    rows = []
    for where, folder in folders.items():
        src, enc_path, out_path = folder / "plain.bin", folder / "sealed.enc", folder / "opened.bin"
        src.write_bytes(data)
        samples: dict[str, list[float]] = {"one_enc": [], "file_enc": [], "one_dec": [], "file_dec": []}
        steps: dict[str, Callable[[], Any]] = {
            "one_enc": lambda: aead.encrypt(nonce, data, None),
            "file_enc": lambda: encrypt_file(src, enc_path, recipient=identity.recipient(), overwrite=True),  # noqa: B023
            "one_dec": lambda: aead.decrypt(nonce, sealed, None),
            "file_dec": lambda: decrypt_file(enc_path, out_path, identity=identity, overwrite=True),  # noqa: B023
        }
        for _ in range(repeats):
            for key, step in steps.items():
                start = time.perf_counter()
                step()
                samples[key].append(time.perf_counter() - start)
        if out_path.read_bytes() != data:
            raise SystemExit("decryption did not round-trip")
        for path in (src, enc_path, out_path):
            path.unlink()
        med = {k: statistics.median(v) for k, v in samples.items()}
        gb = len(data) / 1e9
        for op in ("enc", "dec"):
            rows.append(
                {
                    "op": {"enc": "encrypt", "dec": "decrypt"}[op],
                    "where": where,
                    "oneshot": gb / med[f"one_{op}"],
                    "file": gb / med[f"file_{op}"],
                    "ratio": med[f"one_{op}"] / med[f"file_{op}"],
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller checkpoint and crypto buffers")
    parser.add_argument("--tmp", type=Path, default=None, help="where to write the generated files")
    parser.add_argument("--formats", default=None, help="comma-separated formats: only corpus files of these")
    parser.add_argument("--corpus-only", action="store_true", help="skip the checkpoint timing and crypto")
    args = parser.parse_args()
    formats = set(args.formats.split(",")) if args.formats else None
    gib = 0.25 if args.quick else 1.0
    mib = 128 if args.quick else 512
    torch.set_num_threads(1)

    tools: list[tuple[str, Verdict]] = [("dlsec", dlsec_verdict)]
    notes = []
    peers = (
        (modelaudit_tool, "modelaudit"),
        (picklescan_tool, "picklescan"),
        (modelscan_tool, "modelscan"),
        (fickling_tool, "fickling"),
    )
    for make, label in peers:
        tool = make()
        if isinstance(tool, str):
            notes.append(f"{label}: {tool}")
        else:
            tools.append(tool)

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp)
        (folder / "corpus").mkdir()
        rows = corpus_rows(tools, folder / "corpus", formats)
        if args.corpus_only:
            print_corpus(rows, notes)
            return
        big = big_checkpoint(folder, gib)
        size_gb = big.stat().st_size / 1e9
        times = time_scans(tools, big, repeats=5)
        big.unlink()
        folders = {"disk (temp dir, with fsync)": folder}
        shm = Path("/dev/shm")
        with contextlib.ExitStack() as stack:
            if shm.is_dir() and os.access(shm, os.W_OK):
                folders["tmpfs (/dev/shm)"] = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=shm)))
            crypto = crypto_rows(folders, mib, repeats=5)

    print(
        f"### Scanning: {rows[0]['malicious']} malicious and {rows[0]['benign']} benign files; "
        f"a {size_gb:.2f} GB torch.save checkpoint\n"
    )
    print(
        "| tool | malicious flagged | flagged only by failing / erroring | benign flagged (false positives) "
        f"| scan of {size_gb:.2f} GB (s) | time / dlsec |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    base = times["dlsec"]
    for row in rows:
        name = row["tool"]
        print(
            f"| {name} | {row['caught']}/{row['malicious']} | {row['only_error']} | "
            f"{len(row['false_pos'])}/{row['benign']} | {times[name]:.3f} | {times[name] / base:.1f} |"
        )
    for note in notes:
        print(f"| {note} | | | | | |")
    print()
    print_per_format(rows)
    print(f"\n### Encryption at rest: {mib} MiB, chunked AES-256-GCM file vs one-shot AESGCM in memory\n")
    print("| operation | files on | one-shot in memory (GB/s) | dlsec file (GB/s) | ratio (target >= 0.8) |")
    print("|---|---|---:|---:|---:|")
    for r in crypto:
        print(f"| {r['op']} | {r['where']} | {r['oneshot']:.2f} | {r['file']:.2f} | {r['ratio']:.2f} |")


def print_corpus(rows: list[dict[str, Any]], notes: list[str]) -> None:
    """The corpus table without the timing columns (``--corpus-only``)."""
    print(f"### Scanning: {rows[0]['malicious']} malicious and {rows[0]['benign']} benign files\n")
    print(
        "| tool | malicious flagged | flagged only by failing / erroring | benign flagged (false positives) |"
    )
    print("|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['tool']} | {row['caught']}/{row['malicious']} | {row['only_error']} | "
            f"{len(row['false_pos'])}/{row['benign']} |"
        )
    for note in notes:
        print(f"| {note} | | | |")
    print()
    print_per_format(rows)


def print_per_format(rows: list[dict[str, Any]]) -> None:
    print(
        "Per format (as dlsec detects it): malicious caught / total · false positives / benign total; "
        "(e N): N of the flagged files were flagged only because the tool failed on them "
        "(dlsec: unscannable), so it did not read them\n"
    )
    print("| format | " + " | ".join(row["tool"] for row in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for fmt in sorted(rows[0]["by_format"]):
        cells = []
        for row in rows:
            caught, bad, fp, good, errored = row["by_format"].get(fmt, [0, 0, 0, 0, 0])
            cells.append(f"{caught}/{bad} · {fp}/{good}" + (f" (e {errored})" if errored else ""))
        print(f"| {fmt} | " + " | ".join(cells) + " |")
    print()
    for row in rows:
        if row["missed"]:
            print(f"{row['tool']} misses: {', '.join(sorted(row['missed']))}\n")
    for row in rows:
        if row["missed"]:
            print(f"- {row['tool']} missed: {', '.join(row['missed'])}")
        if row["false_pos"]:
            print(f"- {row['tool']} false positives: {', '.join(row['false_pos'])}")


if __name__ == "__main__":
    main()
