"""Two gateways on separate hosts' homes sharing one vhost and one PostgreSQL state store
(``GRIDBUS_STATE_STORE``): requests, keys and seen alarms are the same through either, a command
approved on two hosts at once is sent once, and a PostgreSQL restart under load costs 503s while
it is away, never a request.

One stack for the module (about 15 s to build): gateway A and gateway B (each with its own
GRIDBUS_HOME, so nothing reaches them through a local file), a request worker with a home of
its own, and the MDMS stand-in answering billing determinants.
"""
from __future__ import annotations

import shlex
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pika
import pytest
import requests

from bus.requests.store import RequestStore
from tests.postgres import _as_postgres, _bin_dir, postgres_url  # noqa: F401 - the server of the store
from tests.state_stores import own_schema
from tests.support import (ROOT, ROUTE_ENV, Mdms, Proc, drop_vhost, env_of_its_own, gridbus, run_cli, start_gateway,
                           wait_for)

pytestmark = pytest.mark.broker
ROUTES = ("uc6-7-8-requests.yaml", "uc2-4-5-alarms.yaml")
DETERMINANTS = "billing-1/billing-determinants"


@pytest.fixture(scope="module")
def shared(rabbitmq_proc, management_url, tmp_path_factory, postgres_url):  # noqa: F811
    tmp = tmp_path_factory.mktemp("shared-gateways")
    base, vhost = env_of_its_own(rabbitmq_proc, management_url, tmp, prefix="shared")
    logs, routes = tmp / "logs", tmp / "routes"
    logs.mkdir()
    routes.mkdir()
    for name in ROUTES:
        (routes / name).write_text((ROOT / "routes" / name).read_text())
    store_url = own_schema(postgres_url)
    common = {**base, **ROUTE_ENV, "GRIDBUS_ROUTES": str(routes), "GRIDBUS_STATE_STORE": store_url}
    mdms = Mdms(common, logs, "mdms-1")
    common["MDMS_1_URL"] = mdms.url
    envs = {}
    for host in ("a", "b", "worker"):  # a home each: what one host keeps is invisible to the others
        home = tmp / f"home-{host}"
        home.mkdir()
        envs[host] = {**common, "GRIDBUS_HOME": str(home), "GRIDBUS_ENV_FILE": str(home / "none.env")}
    procs = [mdms.proc]
    try:
        keys = {s: run_cli(envs["a"], "gateway", "keys", "add", s).stdout.strip() for s in ("billing-1", "hes-a")}
        assert all("." in k for k in keys.values()), keys
        gateway_a, url_a = start_gateway(envs["a"], logs)
        procs.append(gateway_a)
        gateway_a.log_path.rename(logs / "gateway-a.log")  # the next gateway's log is its own
        gateway_a.log_path = logs / "gateway-a.log"
        gateway_b, url_b = start_gateway(envs["b"], logs)
        procs.append(gateway_b)
        procs.append(Proc("worker", gridbus("worker", "--pool", "asyncio", "--routes", "billing-1-determinants"),
                          envs["worker"], logs).start())
        stack = {"a": url_a, "b": url_b, "env": envs, "keys": keys, "store_url": store_url, "logs": logs,
                 "broker": base["GRIDBUS_BROKER_URL"]}
        wait_for(lambda: ask(stack, "a").status_code == 200, 60, "a determinants request answered through A")
        yield stack
    finally:
        for proc in procs:
            proc.stop()
        drop_vhost(management_url, vhost)


def ask(stack, gateway: str, message_id: str | None = None, timeout: float = 30) -> requests.Response:
    """Billing-1 asks for determinants (answered by the MDMS stand-in: Result FAILED, NO_DATA)."""
    return requests.post(f"{stack[gateway]}/v1/requests/{DETERMINANTS}", timeout=timeout,
                         json={"Header": {"MessageID": message_id or uuid.uuid4().hex},
                               "Request": {"usagePoint": "UP-UPM00000001", "from": "2026-11-01T00:00:00Z",
                                           "to": "2026-11-02T00:00:00Z"}},
                         headers={"X-API-Key": stack["keys"]["billing-1"]})


def fetch(stack, gateway: str, request_id: str, key: str | None = None) -> requests.Response:
    return requests.get(f"{stack[gateway]}/v1/requests/{request_id}", timeout=30,
                        headers={"X-API-Key": key or stack["keys"]["billing-1"]})


def push_alarm(stack, gateway: str, alarm_id: str) -> requests.Response:
    return requests.post(f"{stack[gateway]}/v1/push/hes-a/alarms", timeout=30,
                         json=[{"alarm_id": alarm_id, "meter": "UPM00000007", "code": 201,
                                "occurred_at": "2026-11-01T10:15:02+05:30",
                                "received_at": "2026-11-01T10:15:30+05:30"}],
                         headers={"X-API-Key": stack["keys"]["hes-a"]})


def queued(stack, queue: str) -> int:
    """Messages in ``queue`` now (no consumer reads the alarm route here: each publish stays)."""
    connection = pika.BlockingConnection(pika.URLParameters(stack["broker"]))
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def test_a_request_sent_through_gateway_a_is_fetched_through_gateway_b_with_the_same_answer(shared):
    # Given ten determinants requests sent through gateway A (both gateways consume the replies,
    # so some of A's replies are kept by B and reach A through the shared store)
    answers = [ask(shared, "a") for _ in range(10)]
    # Then every one was answered with its reply
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers if a.status_code != 200]
    assert {a.json()["Reply"]["Result"] for a in answers} == {"FAILED"}  # NO_DATA: the MDMS has no reads
    # When each is fetched through A and through B
    for answer in answers:
        request_id = answer.json()["request_id"]
        through_a, through_b = fetch(shared, "a", request_id), fetch(shared, "b", request_id)
        # Then B answers exactly as A does: the request, its reply and its trail
        assert through_b.status_code == through_a.status_code == 200
        assert through_b.json() == through_a.json()
        assert through_b.json()["reply"]["Reply"]["Error"][0]["code"] == "NO_DATA"


def test_a_repeat_sent_to_the_other_gateway_is_the_same_request(shared):
    # Given a request billing sent through A with its MessageID
    message_id = uuid.uuid4().hex
    first = ask(shared, "a", message_id)
    assert first.status_code == 200, first.text
    # When billing sends it again through B (its retry went to the other gateway)
    again = ask(shared, "b", message_id)
    # Then B answers with the first request's outcome, marked a duplicate: the MDMS was asked once
    assert again.status_code == 200, again.text
    assert again.json()["request_id"] == first.json()["request_id"] and again.json().get("duplicate") is True


def test_a_key_revoked_through_a_s_command_line_is_refused_by_b_on_the_very_next_request(shared):
    # Given a key of billing-1 that gateway B accepts
    key = run_cli(shared["env"]["a"], "gateway", "keys", "add", "billing-1").stdout.strip()
    assert fetch(shared, "b", "no-such-request", key).status_code == 404
    # When an operator revokes it with A's GRIDBUS_HOME
    done = run_cli(shared["env"]["a"], "gateway", "keys", "revoke", key.split(".")[0])
    assert done.returncode == 0, done.stderr
    # Then B refuses it on its very next request, and so does A
    refused = fetch(shared, "b", "no-such-request", key)
    assert refused.status_code == 401, refused.text
    assert fetch(shared, "a", "no-such-request", key).status_code == 401
    # and B's own listing shows it revoked, never the secret
    listed = run_cli(shared["env"]["b"], "gateway", "keys", "list", "--revoked", "--json").stdout
    assert key.split(".")[0] in listed and key.split(".")[1] not in listed


def test_an_alarm_resent_to_b_after_a_accepted_it_gets_the_same_answer_and_is_published_once(shared):
    # Given an alarm HES-A pushed through gateway A, accepted
    before = queued(shared, "gridbus.route.hes-a-alarms")
    alarm_id = f"hes-a-{uuid.uuid4().hex[:8]}"
    first = push_alarm(shared, "a", alarm_id)
    assert first.status_code == 202, first.text
    # When HES-A resends it to gateway B (its retry went to the other host)
    again = push_alarm(shared, "b", alarm_id)
    # Then B answers 202 naming the message A published, as a duplicate
    assert again.status_code == 202, again.text
    assert again.json()["message_id"] == first.json()["message_id"] and again.json()["duplicates"] == 1
    # and the alarm was published once
    assert queued(shared, "gridbus.route.hes-a-alarms") == before + 1


@pytest.mark.parametrize("key", ["a" * 4000 + ".x", "x" * 65 + ".secret", "ümlaut.key", "..", "k1.",
                                 "' OR 1=1 --.x", "%00.x"])
def test_a_hostile_api_key_is_refused_with_401_by_a_gateway_on_a_shared_store(shared, key):
    # When a caller presents a key made to break the lookup in the shared store  Then 401, never 5xx
    for gateway in ("a", "b"):
        answer = requests.get(f"{shared[gateway]}/v1/requests/x", timeout=10,
                              headers={"X-API-Key": key.encode("utf-8")})
        assert answer.status_code == 401, answer.text


# --- PostgreSQL away ----------------------------------------------------------------------------

def _data_dir(url: str) -> Path:
    import psycopg

    with psycopg.connect(url) as conn:
        return Path(conn.execute("SHOW data_directory").fetchone()[0])


@contextmanager
def postgres_stopped(url: str):
    """The server of ``url`` crashed (``pg_ctl stop -m immediate``) inside the block, started again
    after it with the options it ran with."""
    data, pg_ctl = _data_dir(url), str(_bin_dir() / "pg_ctl")
    argv = shlex.split((data / "postmaster.opts").read_text())[1:]  # the server's own command line
    options = [a for i, a in enumerate(argv) if a != "-D" and (i == 0 or argv[i - 1] != "-D")]
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), check=True,
                   capture_output=True, timeout=60)
    try:
        yield
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-l", str(data.parent / "log"), "-w", "-o",
                                     shlex.join(options), "start"]), check=True, capture_output=True, timeout=120)


@pytest.mark.slow
def test_postgresql_crashing_under_load_costs_503s_while_it_is_away_and_no_request(shared):
    # Given billing sending requests through both gateways, three at a time on each
    answers, stop = [], threading.Event()

    def billing(gateway: str) -> None:
        while not stop.is_set():
            message_id, started = uuid.uuid4().hex, time.monotonic()
            try:
                answer = ask(shared, gateway, message_id, timeout=60)
                answers.append((gateway, message_id, answer.status_code, answer.json(), time.monotonic() - started,
                                started))
            except requests.RequestException as exc:  # a hang or a cut connection: counted as such
                answers.append((gateway, message_id, None, {"error": str(exc)}, time.monotonic() - started, started))
    threads = [threading.Thread(target=billing, args=(g,)) for g in ("a", "b") * 3]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(answers) >= 12, 60, "requests answered before the crash")
        # When PostgreSQL crashes, and while it is away HES-A pushes an alarm to A, billing asks
        # B for a request and sends B a new one
        with postgres_stopped(shared["store_url"]):
            down_at = time.monotonic()
            probes = [(push_alarm, "a", f"hes-a-{uuid.uuid4().hex[:8]}"), (fetch, "b", "any-request"),
                      (ask, "b", uuid.uuid4().hex)]
            away = []
            for call, gateway, arg in probes:
                started = time.monotonic()
                away.append((call(shared, gateway, arg), time.monotonic() - started))
        up_at = time.monotonic()
        # Then each of those was refused at once with 503 saying why, and when to retry
        for answer, took in away:
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "5", answer.text
            assert answer.json()["Reply"]["Error"][0]["code"] == "STORE_UNAVAILABLE" and took < 10
        # and once it is back, requests are answered 200 again within seconds
        wait_for(lambda: [a for a in answers if a[5] > up_at and a[2] == 200], 60, "a request answered after")
    finally:
        stop.set()
        for t in threads:
            t.join(90)
    # and every request of the load had an answer: 200 with its reply, or 503; none left hanging
    assert any(a[5] < down_at for a in answers) and any(a[5] > up_at for a in answers)
    for gateway, message_id, status, body, took, started in answers:
        assert status in (200, 503), (gateway, status, body)
        assert took < 20, (gateway, status, took)
    # and every request answered 200 is in the store with its reply: nothing accepted was lost
    store = RequestStore(Path("/nonexistent"), url=shared["store_url"])
    try:
        for gateway, message_id, status, body, _, _ in answers:
            if status == 200:
                assert store.get(body["request_id"]).client_key == message_id, (gateway, message_id)
                wait_for(lambda: store.get(body["request_id"]).reply is not None, 30, f"the reply of {message_id}")
    finally:
        store.close()


def test_a_command_approved_at_once_on_two_hosts_is_approved_and_sent_once(shared):
    # Given approvers bob (on B's host) and carol (on A's host), and a disconnect of 60 meters that
    # billing sent through gateway A, waiting for a second user's approval (above 50 meters)
    for env, name in ((shared["env"]["b"], "bob"), (shared["env"]["a"], "carol")):
        made = run_cli(env, "operators", "add", name, "--role", "approver", "--password-stdin",
                       input=f"{name} has a long password\n")
        assert made.returncode == 0 or "exists" in made.stderr, made.stderr
    command_id = f"cut-{uuid.uuid4().hex[:8]}"
    sent = requests.post(f"{shared['a']}/v1/requests/billing-1/commands", timeout=30,
                         json={"Header": {}, "Request": {"commandId": command_id, "action": "disconnect",
                                                         "meters": [f"UPM{n:08d}" for n in range(1, 61)]}},
                         headers={"X-API-Key": shared["keys"]["billing-1"], "X-User": "alice"})
    assert sent.status_code == 202 and sent.json()["state"] == "pending-approval", sent.text
    request_id = sent.json()["request_id"]
    before = queued(shared, "gridbus.route.billing-1-commands")
    # When bob approves it on B's host and carol on A's, at the same moment
    approvals = [subprocess.Popen(gridbus("commands", "approve", request_id, "--user", name, "--password-stdin"),
                                  env=shared["env"][host], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for host, name in (("b", "bob"), ("a", "carol"))]
    outcomes = [p.communicate(f"{name} has a long password\n", timeout=60)
                for p, name in zip(approvals, ("bob", "carol"))]
    codes = [p.returncode for p in approvals]
    # Then one approval went through and the other was told the command is no longer pending
    assert sorted(codes) == [0, 1], outcomes
    refused = outcomes[codes.index(1)][1]
    assert "not pending-approval" in refused or "cannot become" in refused, refused
    # and the command was sent once, with one approval in its trail, seen alike through A and B
    assert queued(shared, "gridbus.route.billing-1-commands") == before + 1
    through_a, through_b = fetch(shared, "a", request_id).json(), fetch(shared, "b", request_id).json()
    assert through_a == through_b
    assert [a["event"] for a in through_b["audit"]] == ["pending-approval", "requested", "sent"]
    assert through_b["approved_by"] == ("bob", "carol")[codes.index(0)]
