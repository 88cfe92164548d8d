"""Plain pika for `gridbus bench alarms`: the HES that publishes alarms over AMQP, and the baseline.

    python -m gridbus_dev.bench.alarm_pika publish URL EXCHANGE KEY|KEYS_FILE ALARMS_FILE [PER_MESSAGE]
    python -m gridbus_dev.bench.alarm_pika consume URL QUEUE EXPECTED

``publish`` sends every alarm as its own persistent message, as an HES does
(or PER_MESSAGE alarms in one JSON array, as an HES that packs a burst does):
the routing key is the fixed ``--key`` (to gridbus's ingress) or, for the
baseline, ``alarm.<class>...`` from the code → classes map in KEYS_FILE.  It
does not wait for a confirm per message (pika's blocking channel can only
confirm one at a time, a few thousand a second); every message is counted
where it arrives, so a loss would show as a run that never completes.

``consume`` is the whole baseline subscriber: take, count, ack in batches,
print the wall-clock time of the last one.  No decoding, no HTTP: the floor
that any pipeline on this broker pays.
"""
from __future__ import annotations

import json
import sys
import time

import pika


def _connect(url: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(url))


def publish(url: str, exchange: str, key_spec: str, alarms_file: str, per_message: int = 1) -> None:
    alarms = json.loads(open(alarms_file, encoding="utf-8").read())
    classes = None
    if key_spec.endswith(".json"):
        classes = {int(code): cls for code, cls in json.loads(open(key_spec).read()).items()}
    by_key: dict[str, list] = {}
    for alarm in alarms:  # the baseline routes by class: one key per message
        key = key_spec if classes is None else "alarm." + ".".join(classes.get(alarm["code"], ["none"]))
        by_key.setdefault(key, []).append(alarm)
    messages = []
    for key, items in by_key.items():
        for i in range(0, len(items), per_message):
            part = items[i] if per_message == 1 else items[i:i + per_message]
            messages.append((key, json.dumps(part, separators=(",", ":"))))
    conn = _connect(url)
    ch = conn.channel()
    props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    for key, body in messages:
        ch.basic_publish(exchange, key, body, props)
    conn.process_data_events(0)
    conn.close()
    print(json.dumps({"published": len(alarms), "at": time.time()}), flush=True)


def consume(url: str, queue: str, expected: int) -> None:
    conn = _connect(url)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2000)
    got = 0
    for method, _props, body in ch.consume(queue, inactivity_timeout=1):
        if method is None:
            continue
        got += len(json.loads(body)) if body[:1] == b"[" else 1  # an array is that many alarms
        if method.delivery_tag % 500 == 0 or got >= expected:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if got >= expected:
            break
    print(json.dumps({"queue": queue, "consumed": got, "last_at": time.time()}), flush=True)
    ch.cancel()
    conn.close()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "publish":
        publish(*args[:4], *(int(a) for a in args[4:]))
    elif command == "consume":
        consume(args[0], args[1], int(args[2]))
    else:
        sys.exit(f"unknown command {command!r}: publish or consume")
