"""The PII scan: checksums against published examples, look-alikes, known counts, k-anonymity, CLI."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlsec.cli import main
from dlsec.comply import _pii_engine
from dlsec.comply.pii import PiiScanner, k_anonymity, mask, quasi_identifier_columns, scan_file
from dlsec.errors import DataError, UsageError


def found(entity: str, text: str) -> list[str]:
    """The substrings of ``text`` reported as ``entity`` (context-free: a plain text record)."""
    report = PiiScanner(entities=[entity]).scan_texts([text])
    return [text[f.start : f.end] for f in report.findings if f.entity == entity]


# Published test numbers: the card networks' test cards (valid Luhn), and one digit changed.
@pytest.mark.parametrize(
    "number, valid",
    [
        ("4111 1111 1111 1111", True),  # Visa test card
        ("4012888888881881", True),  # Visa test card
        ("5500 0055 5555 5559", True),  # Mastercard test card
        ("378282246310005", True),  # American Express test card
        ("6011111111111117", True),  # Discover test card
        ("4111 1111 1111 1112", False),  # Luhn fails
        ("5500 0055 5555 5550", False),
        ("378282246310006", False),
    ],
)
def test_payment_cards_follow_the_luhn_check(number, valid):
    assert found("CREDIT_CARD", f"paid with {number} yesterday") == ([number] if valid else [])


# IBAN examples from ISO 13616 / the ECBS register; then a changed check digit or account digit.
@pytest.mark.parametrize(
    "iban, valid",
    [
        ("GB82 WEST 1234 5698 7654 32", True),
        ("GB82WEST12345698765432", True),
        ("DE89 3704 0044 0532 0130 00", True),
        ("FR14 2004 1010 0505 0001 3M02 606", True),
        ("NL91ABNA0417164300", True),
        ("BE68 5390 0754 7034", True),
        ("GB82 WEST 1234 5698 7654 33", False),  # mod 97 fails
        ("GB83 WEST 1234 5698 7654 32", False),
        ("DE88 3704 0044 0532 0130 00", False),
    ],
)
def test_ibans_follow_the_mod97_check(iban, valid):
    assert found("IBAN_CODE", f"account {iban}") == ([iban] if valid else [])


@pytest.mark.parametrize(
    "ssn, valid",
    [
        ("536-22-4399", True),
        ("772 11 5432", True),
        ("000-12-3456", False),  # area 000 is never issued
        ("666-12-3456", False),  # area 666 is never issued
        ("912-34-5678", False),  # 9xx areas are ITINs, never SSNs
        ("987-65-4321", False),
        ("536-00-4399", False),  # group 00
        ("536-22-0000", False),  # serial 0000
        ("078-05-1120", False),  # the published Woolworth wallet sample
    ],
)
def test_ssns_outside_the_issued_ranges_are_refused(ssn, valid):
    assert found("US_SSN", f"SSN {ssn}") == ([ssn] if valid else [])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("NHS 943 476 5919", ["943 476 5919"]),  # NHS Digital's example number
        ("NHS 943 476 5918", []),  # check digit wrong
        ("patient 943 476 5919", ["943 476 5919"]),  # the NHS's 3 3 4 spacing needs no context
        ("order 9434765919 shipped", []),  # ten bare digits pass mod 11 one time in 11: need context
        ("nhs number 9434765919", ["9434765919"]),
    ],
)
def test_nhs_numbers_need_the_check_digit_and_their_format_or_context(text, expected):
    assert found("UK_NHS", text) == expected


@pytest.mark.parametrize(
    "entity, text, expected",
    [
        ("EMAIL_ADDRESS", "write to ann.lee@example.co.uk", ["ann.lee@example.co.uk"]),
        ("EMAIL_ADDRESS", "user@localhost or a@b.notatld", []),
        ("IP_ADDRESS", "from 192.168.10.4 and 2001:db8::1", ["192.168.10.4", "2001:db8::1"]),
        ("IP_ADDRESS", "values 999.10.1.1 and 1.2.3", []),
        ("PHONE_NUMBER", "ring +44 20 7946 0958 or (415) 555-2671", ["+44 20 7946 0958", "(415) 555-2671"]),
        ("PHONE_NUMBER", "total 12345 units, ratio 3.14159, id 42", []),
        ("DATE_OF_BIRTH", "born on 17 May 1990 in Leeds", ["17 May 1990"]),
        ("DATE_OF_BIRTH", "DOB: 1984-02-29", ["1984-02-29"]),
        ("DATE_OF_BIRTH", "meeting on 2020-01-01 at noon", []),  # a date without birth context
        ("PERSON", "signed by Mary Smith and JOHN DOE", ["Mary Smith", "JOHN DOE"]),
        ("PERSON", "the quick brown fox", []),
    ],
)
def test_entities_and_look_alikes(entity, text, expected):
    assert found(entity, text) == expected


# Values of every kind, for checking the batched analysis against Presidio's analyze() per value.
MIXED = [
    "4111 1111 1111 1111",
    "4111111111111112",
    "paid with 5500 0055 5555 5559 yesterday",
    "Refund of 12 units to card 4111 1111 1111 1112 declined.",
    "GB82 WEST 1234 5698 7654 32",
    "DE88 3704 0044 0532 0130 00",
    "536-22-4399",
    "SSN 772 11 5432 on file",
    "912-34-5678",
    "943 476 5919",
    "9434765919",
    "nhs number 9434765919",
    "423 759 4592",
    "4155550123",
    "(415) 555-2671",
    "+44 20 7946 0958",
    "call me on +49 1512 3456789 or 4155550123",
    "mobile 4155550123",
    "1990-01-31",
    "31.01.1990, tel 020 7946 0958",
    "Patient was born on 1990-01-31; follow-up in two weeks.",
    "DOB: 1984-02-29",
    "17 May 1990",
    "meeting on 2020-01-01 at noon",
    "Mary Smith",
    "SMITH, Mary",
    "Dear Linda",
    "Spoke with Will Young about order 12345.",
    "Patient",
    "ann.lee@example.co.uk",
    "user@localhost",
    "192.168.10.4",
    "2001:db8::1",
    "999.10.1.1",
    "12.50",
    "",
]


@pytest.mark.parametrize("context", [[], ["phone"], ["dob"], ["name"], ["nhs", "number"], ["notes"], ["ref"]])
@pytest.mark.parametrize("min_score", [0.4, 0.2])
def test_batched_analysis_equals_presidio_analyze_per_value(context, min_score):
    engine = _pii_engine.build_engine(frozenset(_pii_engine.DEFAULT_ENTITIES), ("US", "GB", "DE"))
    for entity in sorted(engine.entities):
        batched = [
            sorted(spans) for spans in engine.analyze(MIXED, entity, context=context, min_score=min_score)
        ]
        plain = []
        for value in MIXED:
            results = engine.analyzer.analyze(
                value,
                language="en",
                entities=[entity],
                context=context,
                score_threshold=min_score,
                return_decision_process=True,
            )
            if entity == "DATE_OF_BIRTH":
                results = [r for r in results if r.analysis_explanation.supportive_context_word]
            plain.append(sorted((r.start, r.end, float(r.score)) for r in results))
        assert batched == plain, entity
    # the shortcut for values without letters assumes every context word has a letter
    for recognizer in engine.analyzer.registry.recognizers:
        assert all(any(c.isalpha() for c in word) for word in recognizer.context or [])


def test_a_column_named_for_another_identifier_has_no_phone_numbers():
    number = "423 759 4592"  # a valid US phone number, and an NHS-like number failing mod 11
    table = {
        "nhs": [number],
        "NHS_Number": [number],
        "credit_card": [number],
        "phone": [number],
        "email_or_phone": [number],
        "notes": [f"ring {number}"],
    }
    report = PiiScanner(entities=["PHONE_NUMBER", "UK_NHS"]).scan_table(table)
    assert {n: c.counts for n, c in report.columns.items()} == {
        "nhs": {},
        "NHS_Number": {},
        "credit_card": {},
        "phone": {"PHONE_NUMBER": 1},
        "email_or_phone": {"PHONE_NUMBER": 1},
        "notes": {"PHONE_NUMBER": 1},
    }
    assert _pii_engine.names_other_identifier("patient_ssn")
    assert not _pii_engine.names_other_identifier("mobile_number")


def test_dates_are_not_phone_numbers_and_bare_digits_need_phone_context():
    assert found("PHONE_NUMBER", "visit 1990-01-31 and 31.01.1990") == []
    assert found("PHONE_NUMBER", "born 1990-01-31, call (415) 555-2671") == ["(415) 555-2671"]
    table = {"ref": ["4155550123"], "phone": ["4155550123"], "notes": ["mobile 4155550123"]}
    report = PiiScanner(entities=["PHONE_NUMBER"]).scan_table(table)
    assert {n: c.counts for n, c in report.columns.items()} == {
        "ref": {},
        "phone": {"PHONE_NUMBER": 1},
        "notes": {"PHONE_NUMBER": 1},
    }


def test_masked_samples_never_show_more_than_a_quarter():
    assert mask("4111 1111 1111 1111") == "**** **** **** 1111"
    assert mask("ab") == "**"
    for value in ("mary@example.com", "GB82 WEST 1234 5698 7654 32", "Mary Smith"):
        masked = mask(value)
        alnum = sum(c.isalnum() for c in value)
        assert len(masked) == len(value) and masked.count("*") >= alnum - alnum // 4


TABLE = {
    "name": ["Mary Smith", "John Doe", "x", "Linda Brown", "n/a", "Robert Jones"],
    "email": ["mary@example.com", "-", "john@example.org", "", "bad@nowhere", "rj@example.net"],
    "card": ["4111111111111111", "4111111111111112", "", "5500005555555559", "", ""],
    "dob": ["1990-05-17", "", "17/05/1988", "", "", "May 1, 1970"],
    "zip": ["02139", "02139", "02139", "02140", "02140", "02141"],
    "sex": ["F", "F", "F", "M", "M", "M"],
    "amount": ["12.50", "4111", "1000000", "7", "0", "99"],
}


def test_per_column_counts_on_a_table_with_known_answers(tmp_path):
    path = tmp_path / "people.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(TABLE)
        writer.writerows(zip(*TABLE.values(), strict=True))
    report = scan_file(path)
    counts = {name: col.counts for name, col in report.columns.items()}
    assert counts == {
        "name": {"PERSON": 4},
        "email": {"EMAIL_ADDRESS": 3},
        "card": {"CREDIT_CARD": 2},
        "dob": {"DATE_OF_BIRTH": 3},
        "zip": {},
        "sex": {},
        "amount": {},
    }
    assert sorted(report.by_row()) == [0, 1, 2, 3, 5]
    assert report.columns["card"].sample["CREDIT_CARD"] == "************1111"
    assert report.k_anonymity is not None
    assert report.k_anonymity.quasi_identifiers == ("dob", "zip", "sex")
    out = report.write_redacted(tmp_path / "people.red.csv")
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert rows[0]["email"] == "<EMAIL_ADDRESS>" and rows[1]["card"] == "4111111111111112"
    assert rows[3]["name"] == "<PERSON>" and rows[5]["dob"] == "<DATE_OF_BIRTH>"
    text = out.read_text()
    assert "mary@example.com" not in text and "4111111111111111" not in text


def test_k_anonymity_on_a_hand_computed_table():
    # classes: (02139, F) x3, (02140, M) x2, (02141, M) x1
    result = k_anonymity(TABLE, ["zip", "sex"], threshold=3)
    assert (result.k, result.classes, result.rows) == (1, 3, 6)
    assert result.at_risk == pytest.approx(3 / 6)  # the classes of 2 and 1 are below 3
    assert result.max_risk == 1.0 and result.mean_risk == pytest.approx(3 / 6)
    assert k_anonymity(TABLE, ["sex"], threshold=3).k == 3
    assert k_anonymity(TABLE, ["sex"], threshold=3).at_risk == 0.0
    assert quasi_identifier_columns(["ZipCode", "post_code", "Gender", "age_years", "dob", "income"]) == [
        "ZipCode",
        "post_code",
        "Gender",
        "age_years",
        "dob",
    ]
    with pytest.raises(UsageError):
        k_anonymity(TABLE, ["nope"])


def test_text_corpora_and_npz(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(
        json.dumps({"text": "mail ann@example.org", "meta": {"ip": "10.0.0.7"}})
        + "\n"
        + json.dumps({"text": "hi"})
        + "\n"
    )
    report = scan_file(jsonl)
    assert {n: c.counts for n, c in report.columns.items()} == {
        "text": {"EMAIL_ADDRESS": 1},
        "meta.ip": {"IP_ADDRESS": 1},
    }
    red = report.write_redacted(tmp_path / "c.red.jsonl")
    assert [json.loads(line) for line in red.read_text().splitlines()] == [
        {"text": "mail <EMAIL_ADDRESS>", "meta": {"ip": "<IP_ADDRESS>"}},
        {"text": "hi"},
    ]
    npz = tmp_path / "d.npz"
    np.savez(npz, notes=np.array(["card 4111 1111 1111 1111", "none"]), y=np.array([0, 1]))
    report = scan_file(npz)
    assert report.columns["notes"].counts == {"CREDIT_CARD": 1} and report.rows == 2
    red = report.write_redacted(tmp_path / "d.red.npz")
    with np.load(red) as z:
        assert z["notes"].tolist() == ["card <CREDIT_CARD>", "none"] and z["y"].tolist() == [0, 1]


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(UsageError, match="unknown entity"):
        PiiScanner(entities=["NOPE"]).scan_texts(["x"])
    ragged = tmp_path / "r.csv"
    ragged.write_text("a,b\n1,2,3\n")
    with pytest.raises(DataError, match="line 2 has 3 fields"):
        scan_file(ragged)
    objects = tmp_path / "o.npz"
    np.savez(objects, text=np.array(["a", None], dtype=object))
    with pytest.raises(DataError, match="never unpickles"):
        scan_file(objects)


def test_the_scan_never_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the PII scan tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    _pii_engine.build_engine.cache_clear()
    report = PiiScanner(entities=["EMAIL_ADDRESS", "PERSON"]).scan_texts(["Mary Smith <mary@example.co.uk>"])
    assert {f.entity for f in report.findings} == {"EMAIL_ADDRESS", "PERSON"}


def test_the_library_imports_no_torch():
    code = (
        "import sys\n"
        "from dlsec.comply.pii import PiiScanner\n"
        "r = PiiScanner(entities=['EMAIL_ADDRESS']).scan_texts(['a@example.com'])\n"
        "heavy = ('torch', 'transformers', 'sklearn')\n"
        "print(len(r.findings), sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split("\n")[-2] == "1 []", proc.stderr


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def test_cli_exit_codes_and_redacted_file(tmp_path, capsys):
    dirty = write_csv(tmp_path / "dirty.csv", [["email", "n"], ["ann@example.org", "1"], ["-", "2"]])
    clean = write_csv(tmp_path / "clean.csv", [["id", "n"], ["1", "2"]])
    out = tmp_path / "dirty.red.csv"
    assert main(["data", "pii", str(dirty), "--json", "--write-redacted", str(out)]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["totals"] == {"EMAIL_ADDRESS": 1} and payload["rows_detail"][0]["row"] == 0
    assert "ann@example.org" not in json.dumps(payload)
    assert out.read_text() == "email,n\n<EMAIL_ADDRESS>,1\n-,2\n"
    assert main(["data", "pii", str(clean)]) == 0
    assert "no personal data found" in capsys.readouterr().out
    bad = [
        [str(tmp_path / "missing.csv")],
        [str(write_csv(tmp_path / "ragged.csv", [["a"], ["1", "2"]]))],
        [str(clean), "--entities", "EMAIL_ADDRESS,NOPE"],
        [str(clean), "--write-redacted", str(tmp_path / "x.txt")],
    ]
    np.savez(tmp_path / "numbers.npz", x=np.zeros(3))
    bad.append([str(tmp_path / "numbers.npz")])
    for argv in bad:
        assert main(["data", "pii", *argv]) == 2, argv
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (tmp_path / "x.txt").exists()
