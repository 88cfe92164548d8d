"""The gateway under a flood and under slow clients, as a real process (issue 22).

One system floods; another pushes at its normal pace and is never refused.  Connections that
send their headers or body a byte at a time are closed after the deadlines.  The latency
figures (the other system's p99 with and without a flood) are measured by `gridbus bench
fairness`, not here: no timed assertions in tests.
"""
from __future__ import annotations

import socket
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support import run_cli, start_gateway, wait_for

pytestmark = pytest.mark.broker

ALARM = [{"meter": "UPM00000001", "code": 101, "occurred_at": "2026-11-01T00:00:00+05:30"}]


@pytest.fixture
def gateway(bus_env, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "push.yaml").write_text(textwrap.dedent("""\
        use_case: 2
        routes:
          - id: hes-a-alarms
            source: {system: hes-a, connector: http-push, path: hes-a/alarms}
            method: pub-sub
            message: {noun: EndDeviceEvents}
            transform: [hes_alarm_json]
            destinations: [{system: events, connector: events}]
          - id: hes-b-alarms
            source: {system: hes-b, connector: http-push, path: hes-b/alarms}
            method: pub-sub
            message: {noun: EndDeviceEvents}
            transform: [hes_alarm_json]
            destinations: [{system: events, connector: events}]
        """))
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes)}
    keys = {s: run_cli(env, "gateway", "keys", "add", s).stdout.strip() for s in ("hes-a", "hes-b")}
    server, url = start_gateway(env, logs, "--rate-per-system", "50", "--in-flight-per-system", "4",
                                "--header-timeout-s", "2", "--body-timeout-s", "2")
    yield {"url": url, "keys": keys, "port": int(url.rsplit(":", 1)[1]), "server": server}
    server.stop()


def test_a_flooding_system_is_refused_while_another_is_served(gateway):
    # Given HES-A flooding the gateway from 32 connections at once, far over its rate and its share
    stop = threading.Event()
    statuses: dict[int, int] = {}
    codes: set[str] = set()
    lock = threading.Lock()

    def flood():
        session = requests.Session()
        while not stop.is_set():
            r = session.post(f"{gateway['url']}/v1/push/hes-a/alarms", json=ALARM, timeout=30,
                             headers={"X-API-Key": gateway["keys"]["hes-a"]})
            with lock:
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 429:
                    codes.add(r.json()["Reply"]["Error"][0]["code"])

    pool = ThreadPoolExecutor(32)
    for _ in range(32):
        pool.submit(flood)
    try:
        wait_for(lambda: statuses.get(429, 0) > 200, 60, "HES-A refused for its flood")
        # When HES-B pushes at its normal pace meanwhile
        answers = []
        session = requests.Session()
        for _ in range(20):
            answers.append(session.post(f"{gateway['url']}/v1/push/hes-b/alarms", json=ALARM, timeout=30,
                                        headers={"X-API-Key": gateway["keys"]["hes-b"]}).status_code)
            time.sleep(0.05)
    finally:
        stop.set()
        pool.shutdown(wait=True)
    # Then every one of HES-B's pushes is taken, and HES-A's excess was refused with 429 and a reason
    assert answers == [202] * 20
    assert statuses.get(202, 0) > 0 and statuses.get(429, 0) > 200, statuses
    assert codes <= {"RATE_LIMITED", "TOO_MANY_IN_FLIGHT"} and codes, codes
    assert set(statuses) <= {202, 429}, statuses


def _slow_header_connection(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/push/hes-b/alarms HTTP/1.1\r\nHost: x\r\n")
    return s


def _closed(s: socket.socket) -> bool:
    s.settimeout(0.2)
    try:
        return s.recv(1024) == b""
    except socket.timeout:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_clients_sending_headers_a_byte_at_a_time_are_disconnected(gateway):
    # Given 200 connections that send their headers a byte at a time
    conns = [_slow_header_connection(gateway["port"]) for _ in range(200)]
    started = time.monotonic()
    open_ = list(conns)
    # When they keep trickling (one byte each, every half second)
    while open_ and time.monotonic() - started < 20:
        for s in list(open_):
            try:
                s.sendall(b"X")
            except OSError:
                open_.remove(s)
                continue
            if _closed(s):
                open_.remove(s)
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    # Then the gateway has closed every one of them (header deadline 2 s), well before 20 s
    assert not open_, f"{len(open_)} slow connections still open after {elapsed:.0f}s"
    # and it still answers others at once
    assert requests.get(f"{gateway['url']}/health", timeout=5).status_code == 200
    for s in conns:
        s.close()


def test_a_body_sent_a_byte_at_a_time_is_answered_408_and_closed(gateway):
    # Given a push whose headers are complete but whose body trickles
    s = socket.create_connection(("127.0.0.1", gateway["port"]), timeout=10)
    s.sendall(f"POST /v1/push/hes-b/alarms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              f"X-API-Key: {gateway['keys']['hes-b']}\r\nContent-Length: 1000\r\n\r\n".encode())
    answer = b""
    started = time.monotonic()
    # When it sends a byte every half second
    while time.monotonic() - started < 15:
        try:
            s.sendall(b" ")
        except OSError:
            break
        s.settimeout(0.5)
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            continue
        if not chunk:
            break
        answer += chunk
    s.close()
    # Then the answer is 408 naming the deadline, and the connection is closed
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"BODY_TOO_SLOW" in answer
    assert time.monotonic() - started < 15
