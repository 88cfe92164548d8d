"""The baseline of `gridbus bench ingest`: the least code that does the same job.

csv.reader → pika publish with confirms → pika consume → one HTTP POST per batch,
same batch size, same MDMS stand-in, same JSON the MDMS stores.  No envelope,
no validation, no reconciliation, no retries, no dead letters: what gridbus
costs is the difference.

    python -m gridbus_dev.bench.baseline publish AMQP_URL QUEUE FILE BATCH CONSUMERS
    python -m gridbus_dev.bench.baseline consume AMQP_URL QUEUE MDMS_URL
"""
from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timezone

import pika
import requests

COLUMNS = {  # block-load column -> ReadingType mRID (same as transformers/data)
    "kwh_imp": "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
    "kwh_exp": "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0",
    "kvah_imp": "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.71.0",
    "kvah_exp": "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.71.0",
    "v_avg": "0.2.2.6.0.1.54.0.0.0.0.0.0.0.0.0.29.0",
    "i_avg": "0.2.2.6.0.1.4.0.0.0.0.0.0.0.0.0.5.0",
}


def publish(url: str, queue: str, path: str, batch: int, consumers: int = 1) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = []
        for row in reader:
            rows.append(row)
            if len(rows) == batch:
                ch.basic_publish("", queue, json.dumps([header, rows]), props)
                rows = []
        if rows:
            ch.basic_publish("", queue, json.dumps([header, rows]), props)
    for _ in range(consumers):  # one end marker per consumer
        ch.basic_publish("", queue, b"END", props)
    conn.close()


def to_message(header: list[str], rows: list[list[str]]) -> bytes:
    idx = {name: i for i, name in enumerate(header)}
    meters: dict[str, dict[str, list]] = {}
    for row in rows:
        try:
            stamp = datetime.fromisoformat(row[idx["interval_end"]]).astimezone(timezone.utc)
            ts = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
            blocks = meters.setdefault(row[idx["meter_serial"]], {})
            for column, mrid in COLUMNS.items():
                value = row[idx[column]]
                if value:
                    blocks.setdefault(mrid, []).append({"timeStamp": ts, "value": float(value)})
        except (ValueError, IndexError, KeyError):
            continue  # the baseline drops bad rows silently: that is part of why it is fast
    doc = {"MeterReading": [{"meter": m, "intervalBlocks": [{"readingType": t, "intervalReadings": r}
                                                          for t, r in b.items()]}
                            for m, b in meters.items()]}
    return json.dumps({"Header": {"Verb": "created", "Noun": "MeterReadings", "Source": "baseline"},
                       "Payload": {"MeterReadings": doc}}, separators=(",", ":")).encode()


def consume(url: str, queue: str, mdms_url: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    ch.basic_qos(prefetch_count=4)
    session = requests.Session()
    for method, _props, body in ch.consume(queue):
        if body == b"END":
            ch.basic_ack(method.delivery_tag)
            break
        header, rows = json.loads(body)
        session.post(f"{mdms_url}/messages", data=to_message(header, rows),
                     headers={"Content-Type": "application/json"}, timeout=30).raise_for_status()
        ch.basic_ack(method.delivery_tag)
    conn.close()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "publish":
        publish(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif command == "consume":
        consume(*args)
    else:
        sys.exit(__doc__)
