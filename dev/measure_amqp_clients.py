"""Consume rate of pika against py-amqp for the batch consumer, on the same queue contents.

Starts a throw-away RabbitMQ node on loopback (as the test suite does, through
pytest-rabbitmq's executor), fills a quorum queue with ``--messages`` persistent
messages of ``--size`` bytes, drains it with one client, fills it again, drains it
with the other; ``--rounds`` times, the clients alternating, so that both meet the
same machine load.  Each drain has the batch consumer's shape: prefetch twice the
batch, one ``basic_ack(multiple=True)`` per batch.  The last column drains through
``bus.messaging.BatchConsumer`` itself (what the layer adds on top of its client).

    .venv/bin/python dev/measure_amqp_clients.py --messages 200000 --rounds 3

Bounded: at most ``--messages`` per fill, and every drain gives up after ``--timeout-s``.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

QUEUE = "measure.batch-consume"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(workdir: Path):
    from pytest_rabbitmq.factories.executor import RabbitMqExecutor

    workdir.chmod(0o777)  # run as root, rabbitmq-server drops to its own user, which writes here
    (workdir / "plugins").write_text("[].\n")
    conf = workdir / "rabbitmq.conf"
    conf.write_text("disk_free_limit.absolute = 100MB\n")
    os.environ["RABBITMQ_CONFIG_FILE"] = str(conf)
    os.environ["RABBITMQ_NODE_IP_ADDRESS"] = "127.0.0.1"
    os.environ["ERL_CRASH_DUMP"] = str(workdir / "erl_crash.dump")
    port = free_port()
    node = RabbitMqExecutor(shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server", "127.0.0.1", port,
                            free_port(), shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl",
                            workdir / "logs", workdir, workdir, node_name=f"gridbus-measure-{port}")
    node.start()
    return node, f"amqp://guest:guest@127.0.0.1:{port}//"


def fill(url: str, count: int, size: int) -> float:
    """Publish ``count`` persistent messages with confirms (py-amqp, a window of 1,000)."""
    from bus.messaging import ConfirmingPublisher, connect

    conn = connect(url, "measure-declare")
    ch = conn.channel()
    ch.queue_declare(QUEUE, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})
    conn.close()
    body = b"x" * size
    started = time.monotonic()
    with ConfirmingPublisher(url, "measure-fill", window=1000) as pub:
        for i in range(count):
            pub.publish("", QUEUE, body, {"delivery_mode": 2, "content_type": "application/octet-stream"},
                        {"n": i})
        pub.flush(timeout_s=120)
    return time.monotonic() - started


def drain_pika(url: str, count: int, batch: int, timeout_s: float) -> float:
    from bus.messaging import pika_connect

    conn = pika_connect(url, "measure-pika")
    ch = conn.channel()
    ch.basic_qos(prefetch_count=batch * 2)
    seen, last_tag = [0], [0]

    def on_message(channel, method, props, body):
        seen[0] += 1
        last_tag[0] = method.delivery_tag
        if seen[0] % batch == 0:
            channel.basic_ack(method.delivery_tag, multiple=True)

    started = time.monotonic()
    ch.basic_consume(QUEUE, on_message)
    while seen[0] < count and time.monotonic() - started < timeout_s:
        conn.process_data_events(time_limit=0.1)
    ch.basic_ack(last_tag[0], multiple=True)
    elapsed = time.monotonic() - started
    conn.close()
    return elapsed if seen[0] >= count else float("nan")


def drain_py_amqp(url: str, count: int, batch: int, timeout_s: float) -> float:
    from bus.messaging import connect

    conn = connect(url, "measure-py-amqp")
    ch = conn.channel()
    ch.basic_qos(0, batch * 2, False)
    seen, last_tag = [0], [0]

    def on_message(message):
        seen[0] += 1
        last_tag[0] = message.delivery_tag
        if seen[0] % batch == 0:
            ch.basic_ack(message.delivery_tag, multiple=True)

    started = time.monotonic()
    ch.basic_consume(QUEUE, callback=on_message)
    while seen[0] < count and time.monotonic() - started < timeout_s:
        try:
            conn.drain_events(timeout=0.1)
        except TimeoutError:
            pass
    ch.basic_ack(last_tag[0], multiple=True)
    elapsed = time.monotonic() - started
    conn.close()
    return elapsed if seen[0] >= count else float("nan")


def drain_layer(url: str, count: int, batch: int, timeout_s: float) -> float:
    from bus.messaging import BatchConsumer

    seen = [0]

    def handle(deliveries) -> None:
        seen[0] += len(deliveries)

    started = time.monotonic()
    BatchConsumer(url, [QUEUE], handle, name="measure-layer", batch_max=batch,
                  prefetch=batch * 2).drain(timeout_s=timeout_s)
    elapsed = time.monotonic() - started
    return elapsed if seen[0] >= count else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout-s", type=float, default=300)
    ap.add_argument("--url", help="an existing broker (loopback) instead of a throw-away node")
    args = ap.parse_args()
    if args.messages > 1_000_000 or args.rounds > 10:
        raise SystemExit("bounded: at most 1,000,000 messages and 10 rounds")

    workdir = Path(tempfile.mkdtemp(prefix="gridbus-measure-"))
    node = None
    try:
        if args.url:
            url = args.url
        else:
            node, url = start_node(workdir)
        clients = {"pika": drain_pika, "py-amqp": drain_py_amqp, "layer (pika)": drain_layer}
        rates: dict[str, list[float]] = {name: [] for name in clients}
        print(f"{time.strftime('%Y-%m-%d %H:%M')}  {platform.node()}  {platform.processor() or platform.machine()}"
              f"  {os.cpu_count()} cores  python {platform.python_version()}")
        print(f"{args.messages} persistent messages of {args.size} bytes on a quorum queue, "
              f"batch {args.batch}, prefetch {args.batch * 2}")
        for round_no in range(1, args.rounds + 1):
            order = list(clients) if round_no % 2 else list(reversed(clients))
            for name in order:
                fill_s = fill(url, args.messages, args.size)
                took = clients[name](url, args.messages, args.batch, args.timeout_s)
                rate = args.messages / took
                rates[name].append(rate)
                print(f"round {round_no}  {name:13s} drained in {took:6.2f} s: {rate:9,.0f} msg/s"
                      f"   (filled in {fill_s:.1f} s)", flush=True)
        medians = {name: statistics.median(r) for name, r in rates.items()}
        print("median msg/s: " + "   ".join(f"{n} {m:,.0f}" for n, m in medians.items()))
        print(f"pika / py-amqp: {medians['pika'] / medians['py-amqp']:.2f}x   "
              f"layer / pika: {medians['layer (pika)'] / medians['pika']:.2f}x")
    finally:
        if node is not None:
            node.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    threading.current_thread().name = "measure"
    main()
