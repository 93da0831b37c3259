"""The PII scan on a labelled synthetic table: precision and recall per entity, and throughput.

Generates a CSV whose every cell is labelled (the entity it holds, or none), with look-alikes
that must not match: card numbers failing Luhn, IBANs failing mod 97, SSNs in never-issued
ranges, NHS-like numbers with a wrong check digit, invalid e-mail domains and IP octets, dates
without birth context, ordinary numbers (amounts, counts, ten-digit references). Names come from
Faker's en_US lists when Faker is installed (a source other than the scanner's Census lexicon,
so recall is not measured on the lexicon itself), else from the Census lists (said so).

Then it times ``dlsec.comply.pii.scan_file`` on the CSV (one process, one core) and, on a
sample of the same rows, Presidio used the plain way: ``AnalyzerEngine.analyze`` per cell
with the same recognisers and Presidio's stock phone recogniser (eight regions). Prints tables:
precision and recall per entity; MB/min of CSV from CPU time (the process's own seconds, so a
busy machine does not lower it) and from wall time, and the ratio to plain Presidio.

    python benchmarks/comply_pii.py                          # 20,000 rows
    python benchmarks/comply_pii.py --rows 3000              # quick
    python benchmarks/comply_pii.py --phone-regions US       # one phone region: faster, see README
"""

from __future__ import annotations

import argparse
import csv
import random
import string
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dlsec.comply.pii import PiiScanner  # noqa: E402

console = Console()
ENTITIES = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "US_SSN",
    "UK_NHS",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "DATE_OF_BIRTH",
)


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return str((10 - total % 10) % 10)


def iban(rng: random.Random, valid: bool) -> str:
    country, length = rng.choice([("GB", 18), ("DE", 18), ("FR", 23), ("NL", 14), ("ES", 20)])
    if country == "GB":
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + _digits(rng, 14)
    elif country == "NL":
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + _digits(rng, 10)
    else:
        bban = _digits(rng, length)
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:
        check = (check + rng.randint(1, 96)) % 97 + 2
        check = min(check, 98)
    code = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return " ".join(code[i : i + 4] for i in range(0, len(code), 4))
    return code


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def card(rng: random.Random, valid: bool) -> str:
    prefix, n = rng.choice([("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16)])
    body = prefix + _digits(rng, n - len(prefix) - 1)
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    number = body + check
    if rng.random() < 0.5 and n == 16:
        return " ".join(number[i : i + 4] for i in range(0, 16, 4))
    return number


def ssn(rng: random.Random, valid: bool) -> str:
    if valid:
        area = rng.choice([a for a in range(1, 900) if a != 666])
        group, serial = rng.randint(1, 99), rng.randint(1, 9999)
    else:
        area = rng.choice([0, 666, rng.randint(900, 999)])
        group, serial = rng.randint(1, 99), rng.randint(1, 9999)
    return f"{area:03d}-{group:02d}-{serial:04d}"


def nhs(rng: random.Random, valid: bool) -> str:
    while True:
        body = _digits(rng, 9)
        total = sum(int(c) * w for c, w in zip(body, range(10, 1, -1), strict=True))
        check = 11 - total % 11
        check = 0 if check == 11 else check
        if check == 10:
            continue
        if not valid:
            check = (check + rng.randint(1, 9)) % 10
            if (total + check) % 11 == 0:
                continue
        n = body + str(check)
        return f"{n[:3]} {n[3:6]} {n[6:]}"


def phone(rng: random.Random, valid: bool) -> str:
    import phonenumbers
    from phonenumbers import PhoneNumberFormat as F

    if not valid:
        return rng.choice([str(rng.randint(10, 99999)), f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}"])
    while True:
        region = rng.choice(["US", "GB", "DE", "FR", "IN"])
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        national = str(example.national_number)
        digits = national[:3] + _digits(rng, len(national) - 3)
        number = phonenumbers.parse(f"+{example.country_code}{digits}")
        if phonenumbers.is_valid_number(number):
            fmt = rng.choice([F.INTERNATIONAL, F.E164, F.NATIONAL if region == "US" else F.INTERNATIONAL])
            return phonenumbers.format_number(number, fmt)


def ip(rng: random.Random, valid: bool) -> str:
    if valid:
        if rng.random() < 0.8:
            return ".".join(str(rng.randint(1, 254)) for _ in range(4))
        return "2001:db8:" + ":".join(f"{rng.randint(0, 65535):x}" for _ in range(4)) + "::1"
    return rng.choice(
        [f"{rng.randint(256, 999)}.{rng.randint(0, 255)}.1.1", f"{rng.randint(1, 9)}.{rng.randint(0, 9)}.1"]
    )


def date(rng: random.Random) -> str:
    y, m, d = rng.randint(1930, 2005), rng.randint(1, 12), rng.randint(1, 28)
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    return rng.choice([f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}", f"{d} {months[m - 1]} {y}"])


def email(rng: random.Random, valid: bool, first: str, last: str) -> str:
    user = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{last}{rng.randint(1, 99)}"]).lower()
    if valid:
        return f"{user}@{rng.choice(['example.com', 'mail.co.uk', 'uni.edu', 'corp.de', 'web.fr'])}"
    return f"{user}@{rng.choice(['localhost', 'intranet', 'host.invalidtld'])}"


def name_source(rng: random.Random) -> tuple[str, list[str], list[str]]:
    try:
        from faker import Faker
    except ImportError:
        from dlsec.comply._pii_engine import name_lexicon

        lex = name_lexicon()
        assert not isinstance(lex, str), lex
        return (
            "Census lists (Faker not installed: recall is on the lexicon itself)",
            [n.title() for n in sorted(lex[0])],
            [n.title() for n in sorted(lex[1])[:5000]],
        )
    fake = Faker("en_US")
    fake.seed_instance(rng.randint(0, 2**31))
    firsts = sorted({fake.first_name() for _ in range(3000)})
    lasts = sorted({fake.last_name() for _ in range(3000)})
    return "Faker en_US (not the scanner's lexicon)", firsts, lasts


HEADER = [
    "id",
    "name",
    "email",
    "phone",
    "ssn",
    "nhs",
    "card",
    "iban",
    "ip",
    "dob",
    "visit",
    "notes",
    "zip",
    "sex",
    "amount",
    "ref",
]


def generate(rows: int, seed: int) -> tuple[list[list[str]], dict[tuple[int, str], set[str]], str]:
    rng = random.Random(seed)
    source, firsts, lasts = name_source(rng)
    data: list[list[str]] = []
    truth: dict[tuple[int, str], set[str]] = {}
    for r in range(rows):
        first, last = rng.choice(firsts), rng.choice(lasts)
        v = {e: rng.random() < 0.7 for e in ENTITIES}
        cells = {
            "id": str(r + 1),
            "name": f"{first} {last}" if v["PERSON"] else rng.choice(["n/a", "unknown", "-", "Customer"]),
            "email": email(rng, v["EMAIL_ADDRESS"], first, last),
            "phone": phone(rng, v["PHONE_NUMBER"]),
            "ssn": ssn(rng, v["US_SSN"]),
            "nhs": nhs(rng, v["UK_NHS"]),
            "card": card(rng, v["CREDIT_CARD"]),
            "iban": iban(rng, v["IBAN_CODE"]),
            "ip": ip(rng, v["IP_ADDRESS"]),
            "dob": date(rng) if v["DATE_OF_BIRTH"] else "",
            "visit": date(rng),  # a date, but not a birth date
            "zip": f"{rng.randint(1000, 1100):05d}",
            "sex": rng.choice("MF"),
            "amount": f"{rng.uniform(0, 10000):.2f}",
            "ref": str(rng.randint(10**9, 10**10 - 1)),  # ten-digit ordinary numbers
        }
        for col, ent in (
            ("name", "PERSON"),
            ("email", "EMAIL_ADDRESS"),
            ("phone", "PHONE_NUMBER"),
            ("ssn", "US_SSN"),
            ("nhs", "UK_NHS"),
            ("card", "CREDIT_CARD"),
            ("iban", "IBAN_CODE"),
            ("ip", "IP_ADDRESS"),
            ("dob", "DATE_OF_BIRTH"),
        ):
            if v[ent]:
                truth[(r, col)] = {ent}
        kind = rng.random()
        if kind < 0.25:
            cells["notes"] = f"Patient was born on {date(rng)}; follow-up in two weeks."
            truth[(r, "notes")] = {"DATE_OF_BIRTH"}
        elif kind < 0.5:
            cells["notes"] = f"Refund of {rng.randint(2, 900)} units to card {card(rng, False)} declined."
        elif kind < 0.7:
            cells["notes"] = f"Spoke with {first} {last} about order {rng.randint(10000, 99999)}."
            truth[(r, "notes")] = {"PERSON"}
        else:
            cells["notes"] = rng.choice(
                ["No issues.", "Meeting moved to 2021-03-04.", "Version 2.4.1 installed."]
            )
        data.append([cells[h] for h in HEADER])
    return data, truth, source


def score(
    report_findings: list[tuple[int, str, str]], truth: dict[tuple[int, str], set[str]]
) -> dict[str, Counter[str]]:
    predicted: dict[tuple[int, str], set[str]] = {}
    for row, col, entity in report_findings:
        predicted.setdefault((row, col), set()).add(entity)
    stats: dict[str, Counter[str]] = {e: Counter() for e in ENTITIES}
    for key in set(predicted) | set(truth):
        p, t = predicted.get(key, set()), truth.get(key, set())
        for e in ENTITIES:
            if e in p and e in t:
                stats[e]["tp"] += 1
            elif e in p:
                stats[e]["fp"] += 1
            elif e in t:
                stats[e]["fn"] += 1
    return stats


def presidio_plain_rate(rows: list[list[str]], seconds: float) -> tuple[float, float, int]:
    """MB/min (CPU time, wall time) of Presidio's analyze() per cell, same recognisers, stock
    phone recogniser."""
    from dlsec.comply import _pii_engine, _pii_recognizers

    presidio = _pii_engine.import_presidio()
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    engine = _pii_engine.build_engine(frozenset(ENTITIES), ("US",))
    recs = [r for r in engine.analyzer.registry.recognizers if r.supported_entities != ["PHONE_NUMBER"]]
    registry = presidio.RecognizerRegistry(recognizers=[*recs, PhoneRecognizer()], supported_languages=["en"])
    analyzer = presidio.AnalyzerEngine(
        registry=registry, nlp_engine=_pii_recognizers.TokenizerNlpEngine(), supported_languages=["en"]
    )
    size = 0
    done = 0
    cpu, start = time.process_time(), time.perf_counter()
    for row in rows:
        for name, value in zip(HEADER, row, strict=True):
            analyzer.analyze(value, language="en", context=[name])
            size += len(value) + 1
        done += 1
        if time.process_time() - cpu > seconds:
            break
    cpu, wall = time.process_time() - cpu, time.perf_counter() - start
    return size / 1e6 / (cpu / 60), size / 1e6 / (wall / 60), done


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain-seconds", type=float, default=30.0, help="CPU time spent on plain Presidio")
    parser.add_argument(
        "--phone-regions",
        default="US,GB,DE,FR,IL,IN,CA,BR",
        help="phone regions of the scan (default: Presidio's eight)",
    )
    args = parser.parse_args()
    data, truth, source = generate(args.rows, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "people.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(HEADER)
            writer.writerows(data)
        mb = path.stat().st_size / 1e6
        distinct = sum(len({row[c] for row in data}) for c in range(len(HEADER)))
        console.print(
            f"{args.rows} rows, {mb:.2f} MB of CSV; names from {source}; "
            f"{distinct / (len(HEADER) * args.rows):.0%} of cells are distinct in their column"
        )
        regions = tuple(r.strip().upper() for r in args.phone_regions.split(",") if r.strip())
        scanner = PiiScanner(entities=list(ENTITIES), phone_regions=regions)
        scanner.scan_texts(["warm up: a@example.com"])  # engine built and Presidio imported
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("dlsec data pii", total=None)
            cpu, start = time.process_time(), time.perf_counter()
            report = scanner.scan_file(
                path, progress=lambda done, total, _: progress.update(task, completed=done, total=total)
            )
            cpu, elapsed = time.process_time() - cpu, time.perf_counter() - start
    # the CSV's row r is data row r (header excluded)
    stats = score([(f.row, f.column, f.entity) for f in report.findings], truth)
    table = Table("entity", "positives", "TP", "FP", "FN", "precision", "recall", "target 0.95")
    for e in ENTITIES:
        s = stats[e]
        precision = s["tp"] / (s["tp"] + s["fp"]) if s["tp"] + s["fp"] else float("nan")
        recall = s["tp"] / (s["tp"] + s["fn"]) if s["tp"] + s["fn"] else float("nan")
        ok = "met" if precision >= 0.95 and recall >= 0.95 else "MISSED"
        table.add_row(
            e,
            str(s["tp"] + s["fn"]),
            str(s["tp"]),
            str(s["fp"]),
            str(s["fn"]),
            f"{precision:.3f}",
            f"{recall:.3f}",
            ok,
        )
    console.print(table)
    rate, rate_wall = mb / (cpu / 60), mb / (elapsed / 60)
    plain, plain_wall, plain_rows = presidio_plain_rate(data, args.plain_seconds)
    speed = Table("scan", "rows", "MB/min CPU", "MB/min wall", "x Presidio", "target 50")
    speed.add_row(
        f"dlsec data pii, {len(regions)} regions",
        str(args.rows),
        f"{rate:.2f}",
        f"{rate_wall:.2f}",
        f"{rate / plain:.1f}",
        "met" if rate >= 50 else "MISSED",
    )
    speed.add_row(
        "Presidio per cell",
        str(plain_rows),
        f"{plain:.2f}",
        f"{plain_wall:.2f}",
        "1.0",
        "met" if plain >= 50 else "MISSED",
    )
    console.print(speed)
    if report.k_anonymity:
        k = report.k_anonymity
        console.print(
            f"k-anonymity over {', '.join(k.quasi_identifiers)}: k={k.k}, rows at risk {k.at_risk:.1%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
