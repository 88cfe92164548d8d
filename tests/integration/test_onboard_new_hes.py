"""A connector team onboards a new HES CSV dialect in YAML alone, as the README's route section says.

Real RabbitMQ, a real MDMS stand-in, real gridbus worker and ingress processes.  The format is one
none of the shipped routes uses: Windows-1252 with a vendor banner, semicolons and decimal commas,
one row per meter, time and OBIS code, watt-hours, date and time in two columns, day first, local
time in India, each time marking the start of its 30-minute interval, and "NA" for values it lacks.
"""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import requests

from tests.support import Mdms, Proc, gridbus, run_cli, wait_for

pytestmark = pytest.mark.broker

KWH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
KWH_EXP = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"

ROUTE = textwrap.dedent(f"""\
    use_case: 1
    title: HES-X (OBIS long format) into MDMS-1
    routes:
      - id: hes-x-csv-to-mdms-1
        description: HES-X interval exports, one row per OBIS code
        source: {{system: hes-x, connector: file-drop, path: "${{GRIDBUS_INBOX}}/hes-x", pattern: "*.csv", settle_s: 0.2}}
        method: file-batch
        transform: [csv_readings, to_mdms_json]
        destinations:
          - {{system: mdms-1, connector: rest, url: "${{MDMS_1_URL}}/messages", timeout_s: 10}}
        queue: {{batch_size: 4}}
        options:
          csv_readings:
            encoding: windows-1252
            skip_lines: 2
            delimiter: ";"
            decimal: ","
            missing: ["", NA]
            time_zone: Asia/Kolkata
            profiles:
              intervals:
                kind: interval
                layout: long
                meter: Zählernummer
                date: Datum
                time: Uhrzeit
                time_format: "%d.%m.%Y %H:%M"
                time_marks: start
                interval_s: 1800
                code: OBIS
                value: Wert
                quantities:
                  "1.8.0": {{reading_type: {KWH_IMP}, scale: 0.001, max: 100}}
                  "2.8.0": {{reading_type: {KWH_EXP}, scale: 0.001, max: 100}}
    """)

SAMPLE = ("HES-X Export – Zählerdaten\r\nerstellt 02.11.2026\r\n"
          "Zählernummer;Datum;Uhrzeit;OBIS;Wert\r\n"
          "X001;01.11.2026;00:00;1.8.0;1250,5\r\n"
          "X001;01.11.2026;00:00;2.8.0;NA\r\n"
          "X001;01.11.2026;00:30;1.8.0;1300\r\n"
          "X002;01.11.2026;00:00;1.8.0;990\r\n"
          "X002;01.11.2026;00:00;2.8.0;12,25\r\n"
          "X002;01.11.2026;00:00;9.9.9;1\r\n"
          "X003;31.11.2026;00:00;1.8.0;5\r\n").encode("windows-1252")

TEST_FILE = textwrap.dedent(f"""\
    cases:
      - name: OBIS rows become interval readings in kWh at the end of each interval
        route: hes-x-csv-to-mdms-1
        input_file: sample.csv
        expect:
          - noun: MeterReadings
            MeterReading:
              - meter: X001
                intervalBlocks:
                  - readingType: {KWH_IMP}
                    intervalReadings:
                      - {{timeStamp: "2026-10-31T19:00:00Z", value: 1.2505}}
                      - {{timeStamp: "2026-10-31T19:30:00Z", value: 1.3}}
              - "..."
          - "..."
        expect_rejections:
          - {{line: 9, reason: "'9.9.9'"}}
          - {{line: 10, reason: "does not match"}}
    """)


def test_a_new_hes_dialect_onboarded_in_yaml_alone(bus_env, tmp_path):
    env = dict(bus_env)
    logs = tmp_path / "logs"
    logs.mkdir()
    mdms = Mdms(env, logs)
    env["MDMS_1_URL"] = mdms.url
    # Given a connector team's route file, its route test and the vendor's sample, in a routes folder
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "hes-x.yaml").write_text(ROUTE, encoding="utf-8")
    (routes / "hes-x_test.yaml").write_text(TEST_FILE, encoding="utf-8")
    (routes / "sample.csv").write_bytes(SAMPLE)
    env["GRIDBUS_ROUTES"] = str(routes)
    procs = []
    try:
        # When the team runs its route test, validates and applies the route
        tested = run_cli(env, "routes", "test", str(routes))
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "1 passed, 0 failed" in tested.stdout
        assert run_cli(env, "routes", "validate", str(routes)).returncode == 0
        applied = run_cli(env, "routes", "apply", str(routes))
        assert applied.returncode == 0, applied.stderr
        # and the bus runs it: a worker and the ingress, nothing else configured
        procs.append(Proc("worker", gridbus("worker", "-c", "1"), env, logs).start())
        procs.append(Proc("ingress", gridbus("ingress"), env, logs).start())
        inbox = Path(env["GRIDBUS_INBOX"]) / "hes-x"
        wait_for(inbox.is_dir, 30, "the ingress watching the hes-x inbox")
        part = inbox / ".export.csv.part"
        shutil.copyfile(routes / "sample.csv", part)
        part.rename(inbox / "export.csv")
        # Then the file is reconciled: every row accounted for, bad rows named by their line in the vendor's file
        archive = inbox / "archive"

        def report():
            hits = list(archive.rglob("export.csv.report.json")) if archive.exists() else []
            return json.loads(hits[0].read_text()) if hits else None
        found = wait_for(report, 90, f"the reconciliation report (ingress: {procs[1].log()[-1500:]}; "
                                     f"worker: {procs[0].log()[-1500:]})")
        assert found["rows_read"] == 7 and found["rows_rejected"] == 2, found
        assert [(r["line"], "9.9.9" in r["reason"] or "does not match" in r["reason"])
                for r in found["rejections"]] == [(9, True), (10, True)], found
        # and MDMS-1 holds exactly the readings of the good rows, in kWh, at the end of each interval, in UTC
        got = {}
        for meter in ("X001", "X002", "X003"):
            body = requests.get(f"{mdms.url}/readings", params={"meter": meter}, timeout=5).json()
            got.update({(meter, r["readingType"], r["timeStamp"]): r["value"] for r in body["readings"]})
        assert got == {("X001", KWH_IMP, "2026-10-31T19:00:00Z"): 1.2505,
                       ("X001", KWH_IMP, "2026-10-31T19:30:00Z"): 1.3,
                       ("X002", KWH_IMP, "2026-10-31T19:00:00Z"): 0.99,
                       ("X002", KWH_EXP, "2026-10-31T19:00:00Z"): 0.01225}
    finally:
        for proc in procs:
            proc.stop()
        mdms.stop()
