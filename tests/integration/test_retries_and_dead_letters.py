"""Retries held in the broker, faithful dead letters, poison protection, and `gridbus dlq`.

Real RabbitMQ, a real MDMS stand-in whose failure mode each test sets, real
worker processes (killed with SIGKILL where the test says so).
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import requests

from bus import task_message
from bus.transform import SourceChunk
from bus.worker.pipeline import chunk_payload
from tests.support import Mdms, Proc, ROOT, gridbus, run_cli, wait_for

pytestmark = pytest.mark.broker
TESTKIT = ROOT / "tests" / "testkit"
ROUTE = "retry-route"

CSV = """meter_serial,interval_end,kwh_imp,kwh_exp,kvah_imp,kvah_exp,v_avg,i_avg
{meter},2026-11-01T00:15:00+05:30,0.120,0.000,0.130,0.000,231.2,2.1
{meter},2026-11-01T00:30:00+05:30,0.110,0.000,0.120,0.000,230.8,2.0
"""
READINGS_PER_FILE = 12  # 2 rows x 6 reading types


class RetryStack:
    """A route into the MDMS stand-in with short backoff, and a worker for it."""

    def __init__(self, env: dict, tmp: Path, attempts: int = 4, first_delay_s: int = 1,
                 max_delay_s: int = 4, delivery_limit: int = 3, poison: bool = False):
        self.tmp, self.logs, self.inbox = tmp, tmp / "logs", tmp / "inbox"
        self.logs.mkdir(exist_ok=True)
        self.mdms = Mdms(env, self.logs)
        chain = '["poison_pill", "hes_a_csv", "to_mdms_json"]' if poison else '["hes_a_csv", "to_mdms_json"]'
        routes = tmp / "routes"
        routes.mkdir(exist_ok=True)
        (routes / "retry.yaml").write_text(textwrap.dedent(f"""\
            use_case: 1
            routes:
              - id: {ROUTE}
                source: {{system: hes-t, connector: file-drop, path: "{tmp / 'inbox'}", pattern: "*.csv"}}
                method: file-batch
                transform: {chain}
                destinations:
                  - {{system: mdms-t, connector: rest, url: "{self.mdms.url}/messages", timeout_s: 2}}
                retry: {{attempts: {attempts}, first_delay_s: {first_delay_s}, max_delay_s: {max_delay_s}, jitter: 0}}
                queue: {{batch_size: 1000, delivery_limit: {delivery_limit}}}
            """))
        self.env = {**env, "GRIDBUS_ROUTES": str(routes),
                    "PYTHONPATH": os.pathsep.join([str(TESTKIT), str(ROOT)]), "GRIDBUS_USER": "operator-a"}
        self.worker = self.start_worker()

    def start_worker(self) -> Proc:
        proc = Proc("worker", gridbus("worker", "-c", "2"), self.env, self.logs).start()
        vhost = self.env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
        api = self.env["GRIDBUS_MANAGEMENT_URL"].replace("guest:guest@", "")

        def consuming():
            r = requests.get(f"{api}/api/queues/{vhost}/gridbus.route.{ROUTE}", auth=("guest", "guest"), timeout=5)
            return r.ok and r.json().get("consumers", 0) > 0
        wait_for(consuming, 60, f"the worker to consume (log: {proc.log()[-2000:]})")
        return proc

    def send(self, text: str, name: str = "reads.csv") -> str:
        path = self.tmp / name
        path.write_text(text)
        done = run_cli(self.env, "send", ROUTE, str(path))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def cli(self, *args: str, **kw):
        return run_cli(self.env, *args, **kw)

    def dead_letters(self) -> list[dict]:
        done = self.cli("dlq", "list", "--group", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def attempts(self, message_id: str) -> list:
        log = requests.get(f"{self.mdms.url}/_requests?limit=1000", timeout=5).json()["requests"]
        return [r["status"] for r in log if r.get("message_id") == message_id]

    def stop(self) -> None:
        self.worker.stop()
        self.mdms.stop()


@pytest.fixture
def stack(bus_env, tmp_path):
    made = []

    def make(**options) -> RetryStack:
        s = RetryStack(dict(bus_env), tmp_path, **options)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()


def test_503_three_times_then_200_is_delivered_once_after_four_attempts(stack):
    # Given an MDMS that answers 503 to the next three requests
    s = stack()
    s.mdms.control(mode="error", status=503, times=3)
    # When a batch is sent
    message_id = s.send(CSV.format(meter="UPM00000001"))
    # Then it is delivered once, on the fourth attempt
    wait_for(lambda: s.mdms.stats()["readings"] == READINGS_PER_FILE, 60, "delivery after retries")
    wait_for(lambda: len(s.attempts(message_id)) == 4, 10, "four attempts")
    assert s.attempts(message_id) == [503, 503, 503, 200]
    assert s.mdms.stats()["duplicate_values"] == 0
    assert s.dead_letters() == []


def test_400_is_dead_lettered_at_once_and_a_replay_after_the_fix_delivers_once(stack):
    # Given an MDMS that refuses the next request with 400
    s = stack()
    s.mdms.control(mode="error", status=400, times=1)
    text = CSV.format(meter="UPM00000002")
    message_id = s.send(text)
    # When the worker meets the 400
    groups = wait_for(lambda: s.dead_letters(), 30, "a dead letter")
    # Then it is dead-lettered at once (one attempt), with the reason
    assert s.attempts(message_id) == [400]
    assert groups[0]["count"] == 1 and groups[0]["error_class"] == "PermanentDeliveryError"
    assert "answered 400" in groups[0]["reason"]
    shown = s.cli("dlq", "show", message_id)
    assert shown.returncode == 0 and "PermanentDeliveryError" in shown.stdout and "UPM00000002" in shown.stdout
    # and the body is kept byte for byte
    raw = s.cli("dlq", "show", message_id, "--raw")
    original = task_message.encode_body(chunk_payload(SourceChunk(text, "reads.csv", 2, "csv")))
    assert raw.stdout.encode() == original
    # When the cause is fixed and the dead letter replayed
    replayed = s.cli("dlq", "replay", message_id)
    assert replayed.returncode == 0, replayed.stderr
    # Then it is delivered exactly once, and no longer dead
    wait_for(lambda: s.mdms.stats()["readings"] == READINGS_PER_FILE, 30, "the replayed delivery")
    assert s.dead_letters() == []
    replay_id = replayed.stdout.split("-> ")[1].split()[0]
    assert s.attempts(replay_id) == [200]
    # and a second replay of the same dead letter is refused: it is not dead any more
    again = s.cli("dlq", "replay", message_id)
    assert again.returncode == 1 and "already replayed" in again.stderr


def test_destination_down_past_the_last_attempt_dead_letters_into_one_group(stack):
    # Given an MDMS that is down, and a route with 3 attempts
    s = stack(attempts=3, first_delay_s=1, max_delay_s=2)
    s.mdms.control(mode="down")
    # When three batches are sent
    for i in range(3):
        s.send(CSV.format(meter=f"UPM0000010{i}"), name=f"f{i}.csv")
    # Then all three end as dead letters in a single failure group
    groups = wait_for(lambda: [g for g in s.dead_letters() if g["count"] == 3], 60, "three dead letters")
    assert len(s.dead_letters()) == 1
    assert groups[0]["error_class"] == "TransientDeliveryError"
    assert groups[0]["reason"].startswith("retries exhausted after 3 attempts")
    assert s.mdms.stats()["readings"] == 0


@pytest.mark.slow
def test_kill_9_of_the_worker_during_a_backoff_still_delivers_once(stack):
    # Given a batch whose first attempt got a 503 and whose retry waits 6 s in the broker
    s = stack(first_delay_s=6, max_delay_s=6)
    s.mdms.control(mode="error", status=503, times=1)
    message_id = s.send(CSV.format(meter="UPM00000003"))
    wait_for(lambda: s.attempts(message_id) == [503], 20, "the first failed attempt")
    # When the worker is killed with SIGKILL during the backoff, and another started
    s.worker.kill9()
    s.worker = s.start_worker()
    # Then the batch is still delivered, once
    wait_for(lambda: s.mdms.stats()["readings"] == READINGS_PER_FILE, 60, "delivery after the backoff")
    assert s.attempts(message_id) == [503, 200]


@pytest.mark.slow
def test_a_poison_message_is_dead_lettered_after_the_delivery_limit_and_others_flow(stack):
    # Given a route whose first transformer kills the worker process on a POISON batch
    s = stack(poison=True, delivery_limit=2)
    # When a poison batch and three good ones are sent
    poison_id = s.send(CSV.format(meter="POISON0001"), name="poison.csv")
    for i in range(3):
        s.send(CSV.format(meter=f"UPM0000020{i}"), name=f"good{i}.csv")
    # Then the good ones are delivered
    wait_for(lambda: s.mdms.stats()["readings"] == 3 * READINGS_PER_FILE, 90, "the good batches")
    # and the poison one ends in the dead-letter store, with the broker's reason
    groups = wait_for(lambda: s.dead_letters(), 90, "the poison dead letter")
    assert groups[0]["count"] == 1 and groups[0]["error_class"] == "DeliveryLimitExceeded"
    shown = s.cli("dlq", "show", poison_id)
    assert "delivery limit" in shown.stdout and "POISON0001" in shown.stdout


def test_an_edited_replay_delivers_the_edited_body_and_the_audit_keeps_the_original(stack):
    # Given a dead letter for a batch with a wrong meter serial
    s = stack()
    s.mdms.control(mode="error", status=400, times=1)
    message_id = s.send(CSV.format(meter="BADMETER1"))
    wait_for(lambda: s.dead_letters(), 30, "a dead letter")
    # When an operator edits it in $EDITOR and replays it
    edited = run_cli({**s.env, "EDITOR": "sed -i s/BADMETER1/UPM00000099/g"},
                     "dlq", "replay", message_id, "--edit")
    assert edited.returncode == 0, edited.stderr
    # Then the MDMS receives the edited readings, and none for the wrong serial
    wait_for(lambda: s.mdms.stats()["readings"] == READINGS_PER_FILE, 30, "the edited delivery")
    got = requests.get(f"{s.mdms.url}/readings?meter=UPM00000099", timeout=5).json()
    assert got["count"] == READINGS_PER_FILE
    assert requests.get(f"{s.mdms.url}/readings?meter=BADMETER1", timeout=5).json()["count"] == 0
    # and the audit trail names who edited it and keeps the original body
    trail = json.loads(s.cli("dlq", "audit", message_id, "--json").stdout)
    [entry] = [t for t in trail if t["action"] == "edit"]
    assert entry["who"] == "operator-a" and "BADMETER1" in entry["detail"]["original_body"]


def test_purge_archives_before_deleting_and_export_writes_json_lines(stack, tmp_path):
    # Given two dead letters
    s = stack()
    s.mdms.control(mode="error", status=400, times=2)
    s.send(CSV.format(meter="UPM00000301"), name="a.csv")
    s.send(CSV.format(meter="UPM00000302"), name="b.csv")
    wait_for(lambda: [g for g in s.dead_letters() if g["count"] == 2], 30, "two dead letters")
    # When they are exported, then purged without a prompt
    out = tmp_path / "export.jsonl"
    assert s.cli("dlq", "export", "-o", str(out)).returncode == 0
    purged = s.cli("dlq", "purge", "--yes")
    # Then the export and the purge archive both hold them, and the store is empty
    assert len(out.read_text().splitlines()) == 2
    archive = Path(purged.stdout.split("archive ")[1].strip())
    lines = [json.loads(x) for x in archive.read_text().splitlines()]
    assert sorted(x["headers"]["gridbus-dl-route"] for x in lines) == [ROUTE, ROUTE]
    assert s.dead_letters() == []
    # and purge without --yes asks first (no answer: nothing deleted)
    assert "no dead letters" in s.cli("dlq", "purge", input="n\n").stdout


def test_429_retry_after_is_honoured_before_the_next_attempt(stack):
    # Given an MDMS that answers 429 with Retry-After: 3 once, and a route whose own backoff is 1 s
    s = stack(first_delay_s=1, max_delay_s=1)
    s.mdms.control(mode="error", status=429, times=1, retry_after_s=3)
    # When a batch is sent
    message_id = s.send(CSV.format(meter="UPM00000004"))
    wait_for(lambda: s.mdms.stats()["readings"] == READINGS_PER_FILE, 30, "delivery after the 429")
    # Then the second attempt came no sooner than the destination asked
    log = requests.get(f"{s.mdms.url}/_requests?limit=100", timeout=5).json()["requests"]
    first, second = [r for r in log if r.get("message_id") == message_id]
    assert (first["status"], second["status"]) == (429, 200)
    assert second["time"] - first["time"] >= 2.9


@pytest.mark.slow
def test_a_bulk_replay_killed_half_way_replays_each_dead_letter_exactly_once(stack):
    # Given 2,000 dead letters (one per row: a route with batch size 1 into an MDMS answering 400)
    import sqlite3
    s = stack(attempts=1)
    routes = Path(s.env["GRIDBUS_ROUTES"]) / "retry.yaml"
    routes.write_text(routes.read_text().replace("batch_size: 1000", "batch_size: 1"))
    s.worker.stop()
    s.worker = s.start_worker()
    s.mdms.control(mode="error", status=400)
    rows = "".join(f"UPM{n:08d},2026-11-01T00:15:00+05:30,0.1,0,0.1,0,230,1\n" for n in range(2000))
    ingress = Proc("ingress", gridbus("ingress"), s.env, s.logs).start()
    try:
        (s.tmp / "big.csv").write_text("meter_serial,interval_end,kwh_imp,kwh_exp,kvah_imp,kvah_exp,v_avg,i_avg\n"
                                       + rows)
        (s.inbox).mkdir(exist_ok=True)
        (s.tmp / "big.csv").replace(s.inbox / "big.csv")
        wait_for(lambda: sum(g["count"] for g in s.dead_letters()) >= 2000, 180, "2,000 dead letters", every_s=1)
    finally:
        ingress.stop()
    s.mdms.control(mode="healthy")
    db = Path(s.env["GRIDBUS_HOME"]) / "state" / "dead-letters.sqlite"
    # When a bulk replay is killed with SIGKILL once its first batch is marked
    replay = Proc("replay", gridbus("dlq", "replay", "--all"), s.env, s.logs).start()

    def marked():
        with sqlite3.connect(db) as c:
            return c.execute("SELECT COUNT(*) FROM dead_letters WHERE state != 'dead'").fetchone()[0]
    wait_for(lambda: marked() > 0, 60, "the replay to start", every_s=0.01)
    replay.kill9()
    with sqlite3.connect(db) as c:
        at_kill = dict(c.execute("SELECT state, COUNT(*) FROM dead_letters GROUP BY state").fetchall())
    print("states at kill:", at_kill)
    # and the replay is run again
    again = s.cli("dlq", "replay", "--all")
    assert again.returncode == 0, again.stderr
    # Then every dead letter is replayed, each under exactly one replay id, and the MDMS has each once
    with sqlite3.connect(db) as c:
        states = dict(c.execute("SELECT state, COUNT(*) FROM dead_letters GROUP BY state").fetchall())
        ids = c.execute("SELECT COUNT(DISTINCT replay_id) FROM dead_letters").fetchone()[0]
    assert states == {"replayed": 2000}, (at_kill, states)
    assert ids == 2000
    wait_for(lambda: s.mdms.stats()["readings"] == 2000 * 6, 120, "every replayed reading", every_s=1)
    assert s.mdms.stats()["messages"] == 2000  # one distinct replay id per dead letter reached it
