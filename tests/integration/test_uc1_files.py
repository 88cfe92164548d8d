"""Use case 1 end to end: HES files → file drop → RabbitMQ → worker → MDMS-1 (REST) / MDMS-2 (CIM XML files).

Real RabbitMQ (pytest-rabbitmq), real MDMS stand-in HTTP server, real gridbus worker
and ingress processes.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.support import wait_for

pytestmark = pytest.mark.broker
MR = "{http://iec.ch/TC57/2011/MeterReadings#}"


def test_csv_and_xml_files_reach_mdms_1_exactly(uc1):
    # Given block-load, daily and event-log CSV files and a block-load XML file from HES-A
    block = uc1.generate("--profile", "block-load", "--meters", "20", "--days", "1", "--first-serial", "100")
    daily = uc1.generate("--profile", "daily", "--meters", "20", "--days", "3", "--first-serial", "100")
    events = uc1.generate("--profile", "events", "--meters", "20", "--days", "1", "--first-serial", "100")
    xml = uc1.generate("--profile", "block-load", "--format", "xml", "--meters", "5", "--days", "1",
                       "--first-serial", "900", "--xml-envelope")
    # When they are dropped into the HES-A inbox
    for summary in (block, daily, events, xml):
        uc1.drop(Path(summary["path"]))
    reports = [uc1.report(Path(s["path"]).name) for s in (block, daily, events, xml)]
    # Then MDMS-1 holds exactly the expected readings and events, no more
    stats = uc1.mdms.stats()
    assert stats["readings"] == block["expected_readings"] + daily["expected_readings"] + xml["expected_readings"]
    assert stats["events"] == events["expected_readings"]
    # and each file's report accounts for every row
    for summary, report in zip((block, daily, events), reports):
        assert report["rows_read"] == summary["rows_written"]
        assert report["rows_rejected"] == len(summary["malformed_lines"])
        assert report["chunks_dead_lettered"] == []


def test_hes_b_csv_becomes_cim_xml_files_in_the_mdms_2_inbox(uc1):
    # Given a block-load CSV from HES-B, whose route writes CIM XML files for MDMS-2
    block = uc1.generate("--profile", "block-load", "--meters", "10", "--days", "1", "--first-serial", "500",
                         "--source", "hes-b")
    # When it is dropped into the HES-B inbox
    uc1.drop(Path(block["path"]), folder="hes-b")
    report = uc1.report(Path(block["path"]).name, folder="hes-b")
    # Then MDMS-2's inbox holds complete CIM XML files (no temporary names left) with every reading
    files = sorted(uc1.mdms2_inbox.glob("*.xml"))
    assert len(files) == report["chunks"] and not list(uc1.mdms2_inbox.glob(".*"))
    stored = set()
    for f in files:
        for reading in ET.parse(f).getroot().iter(f"{MR}MeterReading"):
            meter = reading.find(f"{MR}Meter/{MR}mRID").text
            for block_el in reading.iter(f"{MR}IntervalBlocks"):
                rt = block_el.find(f"{MR}ReadingType").get("ref")
                for iv in block_el.iter(f"{MR}IntervalReadings"):
                    stored.add((meter, rt, iv.find(f"{MR}timeStamp").text))
    assert len(stored) == block["expected_readings"]


def test_the_same_file_dropped_twice_is_delivered_once(uc1):
    # Given a file that has been delivered
    block = uc1.generate("--profile", "block-load", "--meters", "5", "--days", "1")
    uc1.drop(Path(block["path"]))
    uc1.report(Path(block["path"]).name)
    before = uc1.mdms.stats()
    # When the same content arrives again, even under another name
    again = uc1.drop(Path(block["path"]), name="resent.csv")
    # Then it is archived as a duplicate and nothing more reaches the MDMS
    wait_for(lambda: list((again.parent / "archive").rglob("resent.csv.duplicate")), 30, "duplicate archived")
    assert uc1.mdms.stats()["posts"] == before["posts"]
    assert uc1.mdms.stats()["readings"] == before["readings"] == block["expected_readings"]


def test_bad_rows_are_rejected_with_line_numbers_and_the_rest_goes_through(uc1):
    # Given a file with malformed rows at known lines
    block = uc1.generate("--profile", "block-load", "--meters", "8", "--days", "1", "--malformed-rows", "4")
    assert len(block["malformed_lines"]) == 4
    # When it is dropped
    uc1.drop(Path(block["path"]))
    report = uc1.report(Path(block["path"]).name)
    # Then the report names exactly those lines, with a reason each
    assert sorted(r["line"] for r in report["rejections"]) == sorted(block["malformed_lines"])
    assert all(r["reason"] for r in report["rejections"])
    assert report["rows_accepted"] == report["rows_read"] - 4
    # and every good reading reached the MDMS
    assert uc1.mdms.stats()["readings"] == block["expected_readings"]


def test_a_file_that_cannot_be_read_goes_to_rejected_with_a_reason(uc1):
    # Given a file that is not text, and one whose header matches no profile
    (uc1.tmp / "garbage.csv").write_bytes(b"\xff\xfe\x00\x01binary\x00\x9f" * 50)
    (uc1.tmp / "unknown.csv").write_text("serial,when,what\nUPM1,2026-11-01,3\n")
    # When they are dropped
    uc1.drop(uc1.tmp / "garbage.csv")
    uc1.drop(uc1.tmp / "unknown.csv")
    # Then both are in rejected/ with a reason file, and nothing was published
    assert "UTF-8" in uc1.rejected("garbage.csv")
    assert "meter_serial" in uc1.rejected("unknown.csv")
    assert uc1.mdms.stats()["posts"] == 0


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<MeterReadings xmlns="http://iec.ch/TC57/2011/MeterReadings#"><MeterReading><Meter><mRID>&lol3;</mRID></Meter>
</MeterReading></MeterReadings>"""

EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<MeterReadings xmlns="http://iec.ch/TC57/2011/MeterReadings#"><MeterReading><Meter><mRID>&secret;</mRID></Meter>
</MeterReading></MeterReadings>"""


def test_xml_with_an_entity_bomb_or_an_external_entity_is_rejected_unexpanded(uc1):
    # Given an entity bomb and an external-entity XML file
    (uc1.tmp / "bomb.xml").write_text(BOMB)
    (uc1.tmp / "external.xml").write_text(EXTERNAL)
    # When they are dropped
    uc1.drop(uc1.tmp / "bomb.xml")
    uc1.drop(uc1.tmp / "external.xml")
    # Then both are rejected, the reason says why, and nothing was expanded or published
    for name in ("bomb.xml", "external.xml"):
        reason = uc1.rejected(name)
        assert "DTD" in reason or "entit" in reason.lower()
        assert "root:" not in reason and "lollol" not in reason
    assert uc1.mdms.stats()["posts"] == 0


@pytest.mark.slow
def test_kill_9_of_the_worker_during_a_200k_read_file_loses_and_doubles_nothing(uc1):
    # Given a 200,000-read block-load file being ingested
    big = uc1.generate("--profile", "block-load", "--rows", "200000", "--malformed-rows", "0",
                       "--file-name", "big.csv")
    uc1.drop(Path(big["path"]))
    wait_for(lambda: 0 < uc1.mdms.stats()["readings"] < big["expected_readings"] // 2, 120,
             "the first readings at MDMS-1", every_s=0.05)
    # When the worker (main process and pool) is killed with SIGKILL and started again
    uc1.worker.kill9()
    at_kill = uc1.mdms.stats()["readings"]
    uc1.worker = uc1.start_worker()
    # Then MDMS-1 ends up holding every read exactly once
    report = uc1.report("big.csv", timeout_s=300)
    stats = uc1.mdms.stats()
    assert at_kill < big["expected_readings"]
    assert stats["readings"] == big["expected_readings"]
    assert report["rows_read"] == 200000 and report["chunks_dead_lettered"] == []


def test_the_reconciliation_report_is_also_published_as_an_event(uc1):
    # Given a delivered file with its report on disk
    block = uc1.generate("--profile", "daily", "--meters", "3", "--days", "2")
    uc1.drop(Path(block["path"]))
    report = uc1.report(Path(block["path"]).name)
    # Then the same report is on the file-reports queue as a FileReconciliation event
    import amqp
    import json as _json
    from kombu.utils.url import parse_url
    url = parse_url(uc1.env["GRIDBUS_BROKER_URL"])
    conn = amqp.Connection(host=f"{url['hostname']}:{url['port']}", virtual_host=url["virtual_host"])
    conn.connect()
    message = wait_for(lambda: conn.channel().basic_get("gridbus.file-reports", no_ack=True), 20,
                       "the FileReconciliation event")
    conn.close()
    event = _json.loads(message.body)
    assert message.properties["type"] == "created.FileReconciliation"
    assert (event["file"], event["rows_read"], event["checksum"]) == \
        (report["file"], report["rows_read"], report["checksum"])


@pytest.mark.slow
def test_a_broker_restart_during_a_200k_read_file_loses_and_doubles_nothing(uc1, rabbitmq_proc):
    # Given a 200,000-read file being ingested
    big = uc1.generate("--profile", "block-load", "--rows", "200000", "--malformed-rows", "0",
                       "--file-name", "restart.csv")
    uc1.drop(Path(big["path"]))
    wait_for(lambda: 0 < uc1.mdms.stats()["readings"] < big["expected_readings"] // 2, 120,
             "the first readings at MDMS-1", every_s=0.05)
    # When the RabbitMQ application is stopped and started again (every connection drops)
    rabbitmq_proc.rabbitctl_output("stop_app")
    rabbitmq_proc.rabbitctl_output("start_app")
    # Then worker, ingress and reconciliation reconnect by themselves and MDMS-1 ends up
    # holding every read exactly once
    report = uc1.report("restart.csv", timeout_s=300)
    wait_for(lambda: uc1.mdms.stats()["readings"] == big["expected_readings"], 120, "every reading")
    assert report["rows_read"] == 200000 and report["chunks_dead_lettered"] == []


def test_junk_on_the_reconciliation_queue_neither_stalls_the_ingress_nor_reaches_a_report(uc1):
    # Given records on gridbus.reconciliation that are not chunk outcomes, as a broken or hostile
    # publisher with the default exchange would put there: not JSON, a list, a wrong shape, a
    # right shape with wrong types, a huge one; each failed every batch and came back for ever
    import amqp
    import json as _json
    from kombu.utils.url import parse_url
    url = parse_url(uc1.env["GRIDBUS_BROKER_URL"])
    conn = amqp.Connection(host=f"{url['hostname']}:{url['port']}", virtual_host=url["virtual_host"])
    conn.connect()
    channel = conn.channel()
    junk = [b"\xff\xfe not json", b"[1, 2]", _json.dumps({"route": "x"}).encode(),
            _json.dumps({"route": "hes-a-csv-to-mdms-1", "checksum": "c", "chunk": "1", "result": "delivered",
                         "message_id": "m", "reason": "", "rejected": "all"}).encode(),
            _json.dumps({"route": "x", "rejected": [{"line": 1, "reason": "r"}] * 100_000}).encode()]
    for body in junk:
        channel.basic_publish(amqp.Message(body, delivery_mode=2), exchange="", routing_key="gridbus.reconciliation")
    # When a file is dropped after them
    daily = uc1.generate("--profile", "daily", "--meters", "3", "--days", "2")
    uc1.drop(Path(daily["path"]))
    # Then its report is written, accounting for every row, and the junk is gone from the queue
    report = uc1.report(Path(daily["path"]).name)
    assert report["status"] == "delivered" and report["rows_read"] == daily["rows_written"]
    waiting = channel.queue_declare("gridbus.reconciliation", passive=True).message_count
    conn.close()
    assert waiting == 0
