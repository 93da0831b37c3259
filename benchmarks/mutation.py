"""Mutation testing of the modules where a silent bug is a security hole (``make mutation``).

For each module below, mutmut 3 mutates that module only and runs only its own tests, in a
scratch copy of the repository at ``HEAD`` (``git archive``), so the checkout is never touched
and nothing needs a ``[tool.mutmut]`` section in pyproject.toml: the script writes the copy's
``setup.cfg``. It prints one table row per module:

    module | mutants | killed | equivalent | survived | score

``killed`` counts mutants a test failed on (and timeouts); ``equivalent`` counts survivors
listed in docs/testing.md with the reason they cannot be told apart from the original;
``survived`` is every other mutant (including those no selected test reaches). The score is
killed over non-equivalent mutants. Exit status 1 when a module lies under its target (``--check``).

Usage:
    python benchmarks/mutation.py                     # every module, smallest first
    python benchmarks/mutation.py --only merkle --only allowlist
    python benchmarks/mutation.py --max-children 2 --timeout 1800 --json out.json
    python benchmarks/mutation.py --only merkle --survivors   # the diff of each survivor
    python benchmarks/mutation.py --only pickle-scanner --mutants '*_pickle.x_scan_pickle__*'
    python benchmarks/mutation.py --only dp --tests tests/train/test_dp_known.py --mutants '*_dp.xǁ_DPStepǁ*'

``--mutants GLOB`` (repeatable, fnmatch on mutmut's names) mutates only the functions it names:
the way to measure the code that decides a verdict in a module too large to finish in one run.

``--tests PATH`` (repeatable; a test file or a pytest node id) runs those tests instead of the
module's own: a fast subset for a module whose full tests are too slow per mutant. The score it
gives is a lower bound: a mutant a subset kills, the whole suite (a superset) kills too.

Each module's run is bounded by ``--timeout`` seconds (mutmut is killed; the mutants it had not
checked count as not run, and the row says so).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "testing.md"


@dataclass(frozen=True)
class Target:
    """Source files mutated together, the tests that must kill them, and the score to reach."""

    sources: tuple[str, ...]
    tests: tuple[str, ...]
    target: float = 0.9
    note: str = ""


# Smallest and most critical first: the order `make mutation` runs them in.
TARGETS: dict[str, Target] = {
    "merkle": Target(
        ("src/dlsec/store/_merkle.py",), ("tests/release/test_audit.py", "tests/release/test_merkle.py"), 1.0
    ),
    "allowlist": Target(
        ("src/dlsec/scan/_allowlist.py",),
        (
            "tests/scan/test_allowlist.py",
            "tests/scan/test_scanner.py",
            "tests/scan/test_verdicts.py",
            "tests/scan/test_convert.py",
        ),
        1.0,
    ),
    "signing": Target(
        ("src/dlsec/release/_signing.py",),
        ("tests/release/test_signing.py",),
        1.0,
    ),
    "limits": Target(
        ("src/dlsec/serve/limits.py",),
        ("tests/serve/test_limits.py", "tests/serve/test_gateway.py"),
        1.0,
        "budget and rate checks",
    ),
    "auth": Target(
        ("src/dlsec/serve/auth.py", "src/dlsec/store/_apikeys.py"),
        (
            "tests/serve/test_auth.py",
            "tests/serve/test_key_acceptance.py",
            "tests/serve/test_key_store.py",
            "tests/serve/test_auth_known.py",
            "tests/serve/test_gateway.py",
            "tests/serve/test_limits.py",
        ),
    ),
    "membership-metrics": Target(
        ("src/dlsec/attacks/privacy/_metrics.py",),
        (
            "tests/privacy/test_membership.py",
            "tests/privacy/test_bounds.py",
            "tests/privacy/test_metrics_known.py",
        ),
    ),
    "audit-log": Target(("src/dlsec/store/_audit.py",), ("tests/release/test_audit.py",)),
    "crypto": Target(("src/dlsec/release/_crypto.py",), ("tests/release/test_crypto.py",)),
    "dp": Target(("src/dlsec/train/_dp.py",), ("tests/train/test_dp.py",)),
    "pickle-scanner": Target(
        ("src/dlsec/scan/_pickle.py", "src/dlsec/scan/_opcodes.py"),
        (
            "tests/scan/test_scanner.py",
            "tests/scan/test_verdicts.py",
            "tests/scan/test_frames.py",
            "tests/scan/test_verdict_mutants.py",
            "tests/scan/test_scanner_mutants.py",
        ),
        1.0,
    ),
}

KILLED = {"killed", "timeout", "caught by type check", "segfault"}
NOT_RUN = {"not checked", "check was interrupted by user", "skipped"}


@dataclass
class Row:
    module: str
    mutants: int = 0
    killed: int = 0
    equivalent: int = 0
    survived: list[str] = field(default_factory=list)
    not_run: int = 0
    seconds: float = 0.0
    note: str = ""

    @property
    def score(self) -> float | None:
        scored = self.mutants - self.equivalent - self.not_run
        return None if scored <= 0 else self.killed / scored


def equivalent_mutants(doc: Path = DOC) -> dict[str, str]:
    """Mutants docs/testing.md lists as equivalent: ``| `NAME` | reason |`` table rows."""
    if not doc.exists():
        return {}
    found = {}
    for line in doc.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`([\w.\u01c1]+__mutmut_\d+)`\s*\|\s*(.+?)\s*\|\s*$", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def scratch_copy(dest: Path) -> None:
    """The repository at HEAD (src, tests, pyproject.toml) in ``dest``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", "HEAD", "src", "tests", "pyproject.toml"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def write_config(dest: Path, target: Target) -> None:
    lines = ["[mutmut]", "source_paths = src", "only_mutate ="]
    lines += [f"    {s}" for s in target.sources]
    lines += ["pytest_add_cli_args_test_selection ="]
    lines += [f"    {t}" for t in target.tests]
    lines += ["pytest_add_cli_args =", "    -q", "    -p", "    no:cacheprovider", "    -m", "    not slow"]
    # torch is not fork-safe once imported: fork workers from a clean fork server.
    lines += ["process_isolation = forkserver", "use_git_change_detection = false"]
    (dest / "setup.cfg").write_text("\n".join(lines) + "\n", encoding="utf-8")


def mutmut(dest: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("CI", None)  # server-backed tests skip here: they are not in any module's selection
    proc = subprocess.Popen(
        [str(exe), *args],
        cwd=dest,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return subprocess.CompletedProcess(proc.args, -signal.SIGTERM, out, "")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def results(dest: Path) -> dict[str, str]:
    """``mutant name -> status`` from mutmut's own record of the run."""
    out = mutmut(dest, "results", "--all", "true").stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s+(\S+__mutmut_\d+): (.+)$", line)
        if m:
            found[m.group(1)] = m.group(2).strip()
    return found


def run_module(name: str, target: Target, *, max_children: int, timeout: float, keep: Path | None,
               survivors: bool, equivalent: dict[str, str], only: tuple[str, ...] = ()) -> Row:  # fmt: skip
    row = Row(name)
    work = Path(tempfile.mkdtemp(prefix=f"dlsec-mutation-{name}-")) if keep is None else keep / name
    work.mkdir(parents=True, exist_ok=True)
    try:
        scratch_copy(work)
        write_config(work, target)
        t0 = time.monotonic()
        done = mutmut(work, "run", "--max-children", str(max_children), *only, timeout=timeout)
        row.seconds = time.monotonic() - t0
        if done.returncode == -signal.SIGTERM:
            row.note = f"stopped after {timeout:.0f} s"
        status = results(work)
        if only:
            status = {m: v for m, v in status.items() if any(fnmatch.fnmatchcase(m, g) for g in only)}
            row.note = (row.note + "; " if row.note else "") + "only " + ", ".join(only)
        if not status:
            row.note = "mutmut ran no mutant: " + " ".join(done.stdout.strip().splitlines()[-3:])[-300:]
            return row
        row.mutants = len(status)
        for mutant, verdict in sorted(status.items()):
            if verdict in KILLED:
                row.killed += 1
            elif verdict in NOT_RUN:
                row.not_run += 1
            elif mutant in equivalent:
                row.equivalent += 1
            else:
                row.survived.append(f"{mutant}: {verdict}")
        if row.not_run and not row.note:
            row.note = f"{row.not_run} not run"
        if survivors:
            for line in row.survived:
                mutant = line.split(":", 1)[0]
                print(mutmut(work, "show", mutant).stdout, flush=True)
        return row
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def table(rows: list[Row]) -> str:
    head = "| module | mutants | killed | equivalent | survived | score | note |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        score = "n/a" if r.score is None else f"{r.score:.1%}"
        cells = [r.module, r.mutants, r.killed, r.equivalent, len(r.survived), score, r.note]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", action="append", choices=sorted(TARGETS), help="module (repeatable)")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per module (default 3600)")
    parser.add_argument("--keep", type=Path, help="keep each module's scratch copy under this folder")
    parser.add_argument("--survivors", action="store_true", help="print the diff of each survivor")
    parser.add_argument("--json", type=Path, help="write the rows and survivors as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a module is under its target")
    parser.add_argument("--mutants", action="append", default=[], help="only mutants matching this glob")
    parser.add_argument("--tests", action="append", default=[], help="tests to run instead (lower bound)")
    args = parser.parse_args(argv)
    equivalent = equivalent_mutants()
    rows = []
    for name in args.only or list(TARGETS):
        target = TARGETS[name]
        if args.tests:
            target = replace(target, tests=tuple(args.tests))
        print(f"== {name}: {', '.join(target.sources)} against {', '.join(target.tests)}", flush=True)
        row = run_module(name, target, max_children=args.max_children, timeout=args.timeout,
                         keep=args.keep, survivors=args.survivors, equivalent=equivalent,
                         only=tuple(args.mutants))  # fmt: skip
        rows.append(row)
        for line in row.survived:
            print(f"   survived {line}", flush=True)
        print(table([row]).splitlines()[-1], f"({row.seconds:.0f} s)", flush=True)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        **{k: v for k, v in r.__dict__.items()},
                        "score": r.score,
                        "target": TARGETS[r.module].target,
                    }
                    for r in rows
                ],
                indent=2,
            )
            + "\n"
        )
    under = [r.module for r in rows if r.score is None or r.score < TARGETS[r.module].target]
    if args.check and under:
        print(f"under target: {', '.join(under)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
