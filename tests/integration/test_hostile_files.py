"""Hostile HES files against the real use-case-1 stack (issue 16).

Real RabbitMQ, ingress, worker and MDMS stand-in: each test counts what the
MDMS stored (``/stats``, ``/readings``) against the ground truth of the file it
dropped, and reads the file's reconciliation report.
"""
from __future__ import annotations

import datetime as dt
import os
import random
import time
from pathlib import Path

import pytest
import requests

from tests.support import Proc, ROOT, gridbus, wait_for

pytestmark = pytest.mark.broker
KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"


def block_lines(uc1, rows: int, name: str, seed: int = 1) -> list[str]:
    """A clean block-load file (no missing, duplicate or malformed rows): header + ``rows`` lines."""
    summary = uc1.generate("--profile", "block-load", "--rows", str(rows), "--malformed-rows", "0",
                           "--duplicate-share", "0", "--missing-share", "0", "--file-name", name, seed=seed)
    lines = Path(summary["path"]).read_text().splitlines()
    assert len(lines) == rows + 1 and summary["expected_readings"] == 6 * rows
    return lines


def write(uc1, name: str, lines: list[str] | bytes) -> Path:
    path = uc1.tmp / name
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("\n".join(lines) + "\n")
    return path


def witness(uc1, name: str, marker_suffix: str = "") -> dict:
    """Drop a small clean file (5 rows, 30 readings) and return its report.  Once it is reported,
    the ingress has scanned the inbox and settled files again since the moment of the call: a
    test that checks something did *not* happen to an earlier file waits for this, not a fixed time."""
    path = uc1.drop(write(uc1, name, block_lines(uc1, 5, name, seed=7)))
    if marker_suffix:
        path.with_name(path.name + marker_suffix).write_text("")
    return uc1.report(name)


def utc(local: str) -> str:
    return dt.datetime.fromisoformat(local).astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stored(uc1, meter: str) -> dict[tuple[str, str], float]:
    found = requests.get(f"{uc1.mdms.url}/readings", params={"meter": meter}, timeout=5).json()["readings"]
    return {(r["readingType"], r["timeStamp"]): r["value"] for r in found}


def reasons_in_rejected(uc1, count: int, folder: str = "hes-a", timeout_s: float = 60) -> list[str]:
    rejected = uc1.inbox / folder / "rejected"
    wait_for(lambda: len(list(rejected.glob("*.reason"))) >= count if rejected.exists() else False, timeout_s,
             f"{count} files in rejected/ (ingress log: {uc1.ingress.log()[-1500:]})")
    return [p.read_text() for p in sorted(rejected.glob("*.reason"))]


def test_bug_2_a_quote_that_never_closes_costs_only_its_own_line(uc1):
    # Given a 1,000-row block-load file whose line 11 starts a quoted field that never closes
    lines = block_lines(uc1, 1000, "stray-quote.csv")
    fields = lines[10].split(",")
    fields[2] = '"1.1'
    lines[10] = ",".join(fields)
    # When it is dropped
    uc1.drop(write(uc1, "stray-quote.csv", lines))
    report = uc1.report("stray-quote.csv")
    # Then line 11 alone is rejected, and the MDMS holds the readings of the 999 other rows
    assert [r["line"] for r in report["rejections"]] == [11]
    assert (report["rows_read"], report["rows_accepted"], report["rows_rejected"]) == (1000, 999, 1)
    assert report["status"] == "delivered"
    assert uc1.mdms.stats()["readings"] == 999 * 6
    assert (KWH_IMP, utc(fields[1])) not in stored(uc1, fields[0])


def test_bug_2_a_file_whose_lines_are_not_all_accounted_for_is_not_reported_delivered(uc1):
    # Given an MDMS that refuses every message for good (400), so the file's chunks are dead-lettered
    lines = block_lines(uc1, 1500, "refused.csv")
    uc1.mdms.control(mode="error", status=400)
    # When the file is dropped
    uc1.drop(write(uc1, "refused.csv", lines))
    report = uc1.report("refused.csv")
    # Then the report does not call it delivered, and names the lines nobody accounted for
    assert report["status"] == "incomplete"
    assert report["rows_accepted"] + report["rows_rejected"] < report["rows_read"] == 1500
    assert [(u["first_line"], u["last_line"]) for u in report["unaccounted"]] == [(2, 1001), (1002, 1501)]
    assert uc1.mdms.stats()["readings"] == 0


def test_bug_3_a_file_written_in_place_with_pauses_is_taken_only_when_complete(uc1):
    # Given an HES that writes its file in place (no rename), pausing 0.7-1 s between rows
    lines = block_lines(uc1, 10, "slow.csv")
    target = uc1.inbox / "hes-a" / "slow.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    pauses = random.Random(3)
    # When it writes the header, then one row at a time
    with open(target, "w") as f:
        for line in lines:
            f.write(line + "\n")
            f.flush()
            time.sleep(pauses.uniform(0.7, 1.0))  # the stalls of the upload under test, not a wait for a result
    report = uc1.report("slow.csv")
    # Then the file was taken once, whole: one report, 10 rows read, the archived file has them all
    archive = uc1.inbox / "hes-a" / "archive"
    witness(uc1, "witness.csv")  # a second, premature pick-up would have left its traces by now
    assert sorted(p.name for p in archive.rglob("*.report.json")) == ["slow.csv.report.json",
                                                                     "witness.csv.report.json"]
    assert not list(archive.rglob("*.duplicate"))
    assert report["rows_read"] == 10 and report["status"] == "delivered"
    assert len(Path(report["archived_as"]).read_text().splitlines()) == 11
    # and the MDMS holds all 60 readings (and the witness's 30)
    assert uc1.mdms.stats()["readings"] == 60 + 30


def test_bug_3_with_a_marker_convention_a_file_waits_for_its_marker(uc1, tmp_path):
    # Given the HES-A CSV route set to wait for a ".done" marker (the ingress restarted with it)
    routes = (ROOT / "routes" / "uc1-meter-data-files.yaml").read_text().replace(
        'pattern: "*.csv"}', 'pattern: "*.csv", marker_suffix: ".done"}', 1)
    (tmp_path / "marker-routes.yaml").write_text(routes)
    uc1.ingress.stop()
    uc1.ingress = Proc("ingress-marker", gridbus("ingress"),
                       {**uc1.env, "GRIDBUS_ROUTES": str(tmp_path / "marker-routes.yaml")}, uc1.logs).start()
    lines = block_lines(uc1, 20, "marked.csv")
    # When the file lands without its marker and stays there well past the settle time
    dropped = uc1.drop(write(uc1, "marked.csv", lines))
    # (a file dropped after it, with its marker, is taken and reported: the settle time has passed)
    witness(uc1, "witness.csv", marker_suffix=".done")
    assert dropped.exists() and uc1.mdms.stats()["readings"] == 30
    # and then its marker arrives
    dropped.with_name("marked.csv.done").write_text("")
    report = uc1.report("marked.csv")
    # Then it is delivered whole and the marker is gone from the inbox
    assert report["status"] == "delivered" and uc1.mdms.stats()["readings"] == 120 + 30
    assert not dropped.with_name("marked.csv.done").exists()


def test_bug_7_files_that_can_never_be_read_go_to_rejected_once_and_block_nothing(uc1):
    # Given a 20 MB single-line .csv, a name with a byte that is not UTF-8, and a 240-byte name
    one_line = write(uc1, "one-line.csv", b"x," * 10_000_000)
    good_lines = block_lines(uc1, 20, "good.csv")
    bad_name = os.fsdecode(b"bad-\xff-name.csv")
    long_name = "L" * 236 + ".csv"
    # When they are dropped, followed by a good file
    uc1.drop(one_line)
    uc1.drop(write(uc1, "bad.csv", good_lines), name=bad_name)
    uc1.drop(write(uc1, "long.csv", block_lines(uc1, 20, "long.csv", seed=2)), name=long_name)
    uc1.drop(write(uc1, "good.csv", good_lines))
    # Then the good file is delivered and reported as usual
    report = uc1.report("good.csv")
    assert report["status"] == "delivered" and uc1.mdms.stats()["readings"] == 120
    # and each unreadable file is in rejected/ once, under a safe name, with a readable reason
    reasons = reasons_in_rejected(uc1, 3)
    assert len(reasons) == 3
    assert any("max_line_bytes" in r for r in reasons)
    assert any("not UTF-8" in r and "bad-\\xff-name.csv" in r for r in reasons)
    assert any("longer than" in r for r in reasons)
    assert all(os.fsencode(p.name).isascii() for p in (uc1.inbox / "hes-a" / "rejected").iterdir())
    assert sorted(p.name for p in (uc1.inbox / "hes-a").iterdir() if p.is_file()) == []
    # and the 20 MB file was read once, not at every scan of the inbox since
    witness(uc1, "witness.csv")
    assert uc1.ingress.log().count("one-line.csv") <= 2


def test_bug_8_one_oversized_field_rejects_its_row_not_its_chunk(uc1):
    # Given a 1,000-row file whose line 500 has a kwh_imp of 200,000 characters (over csv's field limit)
    lines = block_lines(uc1, 1000, "wide.csv")
    fields = lines[499].split(",")
    fields[2] = "1" * 200_000
    lines[499] = ",".join(fields)
    # When it is dropped
    uc1.drop(write(uc1, "wide.csv", lines))
    report = uc1.report("wide.csv")
    # Then line 500 is rejected and the 999 other rows reach the MDMS
    assert [r["line"] for r in report["rejections"]] == [500]
    assert report["chunks_dead_lettered"] == [] and report["status"] == "delivered"
    assert uc1.mdms.stats()["readings"] == 999 * 6


def test_bug_9_numbers_that_are_not_plain_decimals_or_not_plausible_are_rejected(uc1):
    # Given 20 rows of which six carry kwh_imp 1_000, full-width 12, Arabic-Indic 12, 1e308, -0 and 5000
    lines = block_lines(uc1, 20, "numbers.csv")
    bad = {3: "1_000", 4: "\uff11\uff12", 5: "\u0661\u0662", 6: "1e308", 7: "-0", 8: "5000"}
    keys = {}
    for line_no, value in bad.items():
        fields = lines[line_no - 1].split(",")
        fields[2] = value
        lines[line_no - 1] = ",".join(fields)
        keys[line_no] = (fields[0], utc(fields[1]))
    # When it is dropped
    uc1.drop(write(uc1, "numbers.csv", lines))
    report = uc1.report("numbers.csv")
    # Then exactly those rows are rejected, the limit named for 5000, and the MDMS holds the 14 others
    by_line = {r["line"]: r["reason"] for r in report["rejections"]}
    assert sorted(by_line) == sorted(bad)
    assert "plausible maximum" in by_line[8]
    assert uc1.mdms.stats()["readings"] == 14 * 6
    for meter, at in keys.values():
        assert (KWH_IMP, at) not in stored(uc1, meter)


def test_bug_10_conflicting_rows_far_apart_reject_the_later_one_naming_both_lines(uc1):
    # Given 2,500 rows in three chunks, where line 1,300 has line 100's meter and interval and another value
    lines = block_lines(uc1, 2500, "conflict.csv")
    first = lines[99].split(",")
    later = lines[1299].split(",")
    later[:2] = first[:2]
    later[2] = f"{float(first[2]) + 0.5:.3f}"
    lines[1299] = ",".join(later)
    # When it is dropped
    uc1.drop(write(uc1, "conflict.csv", lines))
    report = uc1.report("conflict.csv")
    # Then line 1,300 is rejected naming line 100, whatever order the chunks were delivered in
    assert [(r["line"], "first at line 100" in r["reason"]) for r in report["rejections"]] == [(1300, True)]
    assert report["status"] == "delivered"
    # and the MDMS keeps line 100's value and holds every other row
    assert stored(uc1, first[0])[(KWH_IMP, utc(first[1]))] == float(first[2])
    assert uc1.mdms.stats()["readings"] == 2499 * 6


def test_bug_12_symlinks_are_not_followed_and_a_bad_byte_is_named_by_its_line(uc1):
    # Given a link in the inbox to a CSV outside it, and a file with a byte that is not UTF-8 on line 7
    outside = write(uc1, "outside.csv", block_lines(uc1, 10, "outside.csv", seed=5))
    link = uc1.inbox / "hes-a" / "link.csv"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    latin = block_lines(uc1, 10, "latin.csv", seed=6)
    data = ("\n".join(latin[:6]) + "\n").encode() + latin[6].encode().replace(b"UPM", b"UP\xe9", 1) + \
        ("\n" + "\n".join(latin[7:]) + "\n").encode()
    good = block_lines(uc1, 5, "good.csv", seed=7)
    # When the link, the Latin-1 file and a good file are dropped
    uc1.drop(write(uc1, "latin.csv", data))
    uc1.drop(write(uc1, "good.csv", good))
    report = uc1.report("good.csv")
    # Then only the good file reaches the MDMS; the link was not followed and its target is untouched
    reasons = reasons_in_rejected(uc1, 2)
    assert uc1.mdms.stats()["readings"] == 5 * 6 and report["status"] == "delivered"
    assert any("symbolic link" in r for r in reasons)
    assert outside.exists() and not link.exists()
    # and the Latin-1 file is rejected naming line 7
    assert any("not UTF-8" in r and "line 7" in r for r in reasons)
