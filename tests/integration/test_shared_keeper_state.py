"""Two keeper hosts sharing one vhost and one PostgreSQL state store (issue 20, behaviour 3).

Host A and host B are two GRIDBUS_HOMEs with the same broker vhost and the same
``GRIDBUS_STATE_STORE``; each runs a real `gridbus keeper`, and the operators run the real
`gridbus dlq` CLI with their host's home.  Dead letters are made by a real worker whose
destination, the MDMS stand-in, refuses with 400 until the test fixes it; replays are counted
where they arrive, at the stand-in.  The PostgreSQL server is restarted (`pg_ctl restart -m
immediate`) while dead letters stream in, and the dead letters are counted in the store and
in the queue afterwards.

The processes (worker, both keepers, the stand-in) are shared by the tests of this module.
"""
from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from bus import naming, task_message
from bus.deadletters import headers as dl
from bus.deadletters.collect import collect
from bus.deadletters.store import DeadLetterStore
from bus.envelope import Envelope
from bus.messaging import ConfirmingPublisher, connect
from bus.state_store import StateStoreError
from bus.transform import SourceChunk
from bus.worker.pipeline import chunk_payload
from tests.postgres import own_database, postgres_url, restart_postgres, start_postgres, stop_postgres  # noqa: F401
from tests.support import Mdms, Proc, drop_vhost, env_of_its_own, gridbus, run_cli, wait_for

pytestmark = pytest.mark.broker
ROUTE = "shared-keepers"
CSV = ("meter_serial,interval_end,kwh_imp,kwh_exp,kvah_imp,kvah_exp,v_avg,i_avg\n"
       "{meter},2026-11-01T00:15:00+05:30,0.120,0.000,0.130,0.000,231.2,2.1\n")
READINGS_PER_BATCH = 6  # 1 row x 6 reading types


class Hosts:
    """One vhost, one PostgreSQL store, two homes (A, B) each with a keeper; a worker and the MDMS."""

    def __init__(self, base: dict, state_url: str, tmp: Path):
        self.tmp, self.logs = tmp, tmp / "logs"
        self.logs.mkdir()
        self.mdms = Mdms(base, self.logs)
        routes = tmp / "routes"
        routes.mkdir()
        (routes / "shared.yaml").write_text(textwrap.dedent(f"""\
            use_case: 1
            routes:
              - id: {ROUTE}
                source: {{system: hes-t, connector: file-drop, path: "{tmp / 'inbox'}", pattern: "*.csv"}}
                method: file-batch
                transform: ["hes_a_csv", "to_mdms_json"]
                destinations:
                  - {{system: mdms-t, connector: rest, url: "{self.mdms.url}/messages", timeout_s: 2}}
                retry: {{attempts: 1, first_delay_s: 1, max_delay_s: 1, jitter: 0}}
            """))
        self.env = {}
        for host in ("a", "b"):
            home = tmp / host
            home.mkdir()
            self.env[host] = {**base, "GRIDBUS_HOME": str(home), "GRIDBUS_ENV_FILE": str(home / "none.env"),
                              "GRIDBUS_ROUTES": str(routes), "GRIDBUS_STATE_STORE": state_url,
                              "GRIDBUS_USER": f"operator-{host}"}
        applied = run_cli(self.env["a"], "routes", "apply")
        assert applied.returncode == 0, applied.stderr
        self.state_url = state_url
        self.store = DeadLetterStore(tmp / "unused.sqlite", url=state_url)
        self.worker = Proc("worker", gridbus("worker", "-c", "2"), self.env["a"], self.logs).start()
        wait_for(lambda: self.consumers(naming.route_queue_name(ROUTE)) > 0, 60,
                 f"the worker to consume (log: {self.worker.log()[-2000:]})")
        self.keepers: dict[str, Proc] = {}

    # -- processes ---------------------------------------------------------------------
    def start_keeper(self, host: str) -> Proc:
        before = self.consumers(naming.dead_letter_queue_name(ROUTE))
        keeper = self.keepers[host] = Proc(f"keeper-{host}", gridbus("keeper", "--rescan-s", "5"),
                                           self.env[host], self.logs).start()
        wait_for(lambda: self.consumers(naming.dead_letter_queue_name(ROUTE)) > before, 30,
                 f"keeper {host} to consume the dead-letter queue (log: {keeper.log()[-2000:]})")
        return keeper

    def stop_keeper(self, host: str) -> None:
        keeper = self.keepers.pop(host, None)
        if keeper is not None:
            keeper.stop()
            assert keeper.popen.returncode == 0, keeper.log()[-3000:]

    def cli(self, host: str, *args: str) -> subprocess.CompletedProcess:
        return run_cli(self.env[host], *args)

    def stop(self) -> None:
        for host in list(self.keepers):
            self.keepers.pop(host).stop()
        self.worker.stop()
        self.mdms.stop()
        self.store.close()

    # -- the broker ----------------------------------------------------------------------
    def consumers(self, queue: str) -> int:
        vhost = self.env["a"]["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
        api = self.env["a"]["GRIDBUS_MANAGEMENT_URL"].replace("guest:guest@", "")
        r = requests.get(f"{api}/api/queues/{vhost}/{queue}", auth=("guest", "guest"), timeout=5)
        return r.json().get("consumers", 0) if r.ok else 0

    def held(self) -> int:
        """Dead letters in the dead-letter queue, ready or in a keeper's hands unacked (the
        management API's count, which lags by a few seconds)."""
        vhost = self.env["a"]["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
        api = self.env["a"]["GRIDBUS_MANAGEMENT_URL"].replace("guest:guest@", "")
        r = requests.get(f"{api}/api/queues/{vhost}/{naming.dead_letter_queue_name(ROUTE)}",
                         auth=("guest", "guest"), timeout=5)
        return r.json().get("messages", 0) if r.ok else -1

    def in_queue(self) -> int:
        """Dead letters in the dead-letter queue now (ready; with no keeper running: every one)."""
        conn = connect(self.env["a"]["GRIDBUS_BROKER_URL"], "test-shared-keepers")
        try:
            return conn.channel().queue_declare(naming.dead_letter_queue_name(ROUTE), passive=True).message_count
        finally:
            conn.close()

    def send(self, meters: list[str]) -> list[str]:
        """One batch per meter onto the route, as `gridbus send` publishes a file; the message ids."""
        ids = []
        with ConfirmingPublisher(self.env["a"]["GRIDBUS_BROKER_URL"], "test-send") as pub:
            for meter in meters:
                envelope = Envelope(route_id=ROUTE, source="hes-t", verb="created", noun="MeterReadings")
                payload = chunk_payload(SourceChunk(CSV.format(meter=meter), f"{meter}.csv", 2, "csv"))
                pub.publish(naming.INGRESS_EXCHANGE, naming.route_routing_key(ROUTE),
                            *task_message.build(envelope, payload))
                ids.append(envelope.message_id)
            pub.flush()
        return ids

    def stored(self, message_ids: list[str]) -> list:
        wanted = set(message_ids)
        return [x for x in self.store.select(states=("dead", "replaying", "replayed")) if x.message_id in wanted]

    def replayed_at_mdms(self) -> Counter:
        """Replayed batches the MDMS took (200), by replay message id."""
        log = requests.get(f"{self.mdms.url}/_requests?limit=5000", timeout=5).json()["requests"]
        return Counter(r["message_id"] for r in log
                       if r.get("status") == 200 and str(r.get("message_id", "")).startswith("replay-"))


@pytest.fixture(scope="module")
def hosts(rabbitmq_proc, management_url, postgres_url, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("shared-keepers")
    base, vhost = env_of_its_own(rabbitmq_proc, management_url, tmp, prefix="keepers")
    made = Hosts(base, own_database(postgres_url, "gridbus_shared_keepers"), tmp)
    yield made
    made.stop()
    drop_vhost(management_url, vhost)


def test_a_dead_letter_collected_by_keeper_a_is_listed_and_replayed_from_host_b(hosts):
    # Given keeper A running and keeper B stopped, and the MDMS refusing every batch with 400
    hosts.stop_keeper("b")
    hosts.start_keeper("a")
    hosts.mdms.control(mode="error", status=400)
    # When a batch is sent and the worker dead-letters it
    [message_id] = hosts.send(["UPM00005001"])
    # Then keeper A stores it in the shared store
    [letter] = wait_for(lambda: hosts.stored([message_id]), 60,
                        f"the dead letter stored by keeper A (log: {hosts.keepers['a'].log()[-2000:]})")
    assert letter.state == "dead" and "answered 400" in letter.reason
    # and host B's `dlq list` and `dlq show` see it (B's home holds no store file)
    listed = hosts.cli("b", "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(g["route"], g["count"]) for g in json.loads(listed.stdout)] == [(ROUTE, 1)]
    assert not (Path(hosts.env["b"]["GRIDBUS_HOME"]) / "state" / "dead-letters.sqlite").exists()
    assert hosts.cli("b", "dlq", "show", letter.dl_id).returncode == 0
    # When the cause is fixed and operator B replays it from host B
    hosts.mdms.control(mode="healthy")
    replayed = hosts.cli("b", "dlq", "replay", letter.dl_id)
    assert replayed.returncode == 0, replayed.stderr
    replay_id = replayed.stdout.split("-> ")[1].split()[0]
    # Then it reaches the MDMS once
    wait_for(lambda: hosts.replayed_at_mdms()[replay_id] == 1, 60, "the replayed batch at the MDMS")
    assert hosts.mdms.stats()["duplicate_values"] == 0
    # and host A's audit says operator B replayed it
    audit = hosts.cli("a", "dlq", "audit", letter.dl_id, "--json")
    assert audit.returncode == 0, audit.stderr
    assert [(e["action"], e["who"], e["detail"]["replay_id"]) for e in json.loads(audit.stdout)] == [
        ("replay", "operator-b", replay_id)]


def _both_keepers(hosts: Hosts) -> None:
    for host in ("a", "b"):
        if host not in hosts.keepers:
            hosts.start_keeper(host)


def test_two_replays_started_at_once_on_hosts_a_and_b_replay_each_dead_letter_once(hosts):
    # Given both keepers running, and 20 batches the MDMS refused, collected into the shared store
    _both_keepers(hosts)
    hosts.mdms.control(mode="error", status=400)
    sent = hosts.send([f"UPM000060{i:02d}" for i in range(20)])
    wait_for(lambda: len(hosts.stored(sent)) == 20, 90, "20 dead letters in the shared store")
    hosts.mdms.control(mode="healthy")
    before = hosts.replayed_at_mdms()
    # When operators A and B run `gridbus dlq replay --all` at the same moment, each on their host
    runs = {host: subprocess.Popen(gridbus("dlq", "replay", "--all", "--route", ROUTE), env=hosts.env[host],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for host in ("a", "b")}
    outcomes = {host: (p.communicate(timeout=120), p.returncode) for host, p in runs.items()}
    assert all(rc == 0 for _, rc in outcomes.values()), outcomes
    # Then the MDMS gets each of the 20 once, and each dead letter has one replay in the audit
    letters = {x.dl_id: x for x in hosts.stored(sent)}
    wait_for(lambda: sum((hosts.replayed_at_mdms() - before).values()) >= 20, 60, "20 replays at the MDMS")
    at_mdms = hosts.replayed_at_mdms() - before
    assert sorted(at_mdms) == sorted(x.replay_id for x in letters.values()) and set(at_mdms.values()) == {1}
    assert {x.state for x in letters.values()} == {"replayed"}
    replays = [e for e in hosts.store.audit_trail() if e["action"] == "replay" and e["dl_id"] in letters]
    assert Counter(e["dl_id"] for e in replays) == Counter(dict.fromkeys(letters, 1))
    # and the audit names whose run sent each; the two runs' counts add up to 20
    sent_by = Counter(e["who"] for e in replays)
    assert set(sent_by) <= {"operator-a", "operator-b"}
    counted = {host: int(out.split("replayed ")[-1].split()[0]) for host, ((out, _), _) in outcomes.items()}
    assert sum(counted.values()) == 20 and sent_by == Counter({f"operator-{h}": n for h, n in counted.items() if n})
    print("replayed by run:", counted)


def _dead_letter(message_id: str) -> tuple[bytes, dict, dict]:
    """(body, properties, headers) of a dead letter as the worker publishes one."""
    now, reason = time.time(), "mdms-t answered 400: meter unknown"
    headers = {"id": message_id, dl.DL_ROUTE: ROUTE, dl.DL_DESTINATION: "mdms-t",
               dl.DL_ERROR_CLASS: "PermanentDeliveryError", dl.DL_REASON: reason, dl.DL_TRACEBACK: "",
               dl.DL_ATTEMPTS: 1, dl.DL_FIRST_FAILURE: now, dl.DL_LAST_FAILURE: now, dl.DL_WORKER_HOST: "test",
               dl.DL_FINGERPRINT: dl.fingerprint(ROUTE, "PermanentDeliveryError", reason)}
    return (f"reading of {message_id}".encode(),
            {"message_id": message_id, "content_type": "application/json", "delivery_mode": 2}, headers)


def test_with_postgresql_down_the_keepers_ack_nothing_and_store_all_once_it_is_back(hosts, postgres_url):  # noqa: F811
    # Given both keepers collecting into the shared store, and PostgreSQL stopped
    _both_keepers(hosts)
    stop_postgres(postgres_url)
    try:
        # When 100 dead letters arrive while it is down
        ids = [f"pg-down-{n:04d}" for n in range(100)]
        with ConfirmingPublisher(hosts.env["a"]["GRIDBUS_BROKER_URL"], "test-dead-letters") as pub:
            for message_id in ids:
                pub.publish(naming.dead_letter_exchange_name(ROUTE), "", *_dead_letter(message_id))
            pub.flush()
        # Then none is acked: all 100 stay in the dead-letter queue (ready, or unacked in a keeper's hands)
        wait_for(lambda: hosts.held() == 100, 20, "the management API to count the 100 dead letters")
        time.sleep(3)  # a keeper that acked without storing would have done so by now
        assert hosts.held() == 100
    finally:
        start_postgres(postgres_url)
    # When PostgreSQL is back, with no keeper restarted by hand
    # Then each is stored exactly once, and the queue is empty
    rows = wait_for(lambda: (r := hosts.stored(ids)) and len(r) >= 100 and r, 120,
                    f"100 dead letters stored once PostgreSQL is back (keeper A: {hosts.keepers['a'].log()[-1500:]})")
    assert Counter(x.message_id for x in rows) == Counter(dict.fromkeys(ids, 1))
    wait_for(lambda: hosts.in_queue() == 0 and hosts.held() == 0, 30, "the dead-letter queue to be empty")
    assert all(k.popen.poll() is None for k in hosts.keepers.values())


def test_postgresql_restarted_while_dead_letters_stream_in_loses_and_doubles_none(hosts, postgres_url):  # noqa: F811
    # Given both keepers collecting, and 600 dead letters arriving in a stream (chunks of 20)
    _both_keepers(hosts)
    total, chunk = 600, 20
    ids = [f"pg-restart-{n:04d}" for n in range(total)]
    published: list[str] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def stream() -> None:
        try:
            with ConfirmingPublisher(hosts.env["a"]["GRIDBUS_BROKER_URL"], "test-dead-letters") as pub:
                for start in range(0, total, chunk):
                    for message_id in ids[start:start + chunk]:
                        pub.publish(naming.dead_letter_exchange_name(ROUTE), "", *_dead_letter(message_id))
                    pub.flush()
                    published.extend(ids[start:start + chunk])
                    done.wait(0.1)  # the pace of the stream, not a wait for a result
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failures.append(exc)
        finally:
            done.set()

    producer = threading.Thread(target=stream, daemon=True)
    producer.start()
    # When PostgreSQL is restarted (immediate: a crash) once some are stored and more are on their way
    wait_for(lambda: len(published) > len(hosts.stored(ids)) >= 100, 60, "100 dead letters stored, more coming",
             every_s=0.05)
    at_restart = (len(published), len(hosts.stored(ids)))
    restart_postgres(postgres_url)
    assert not done.is_set(), f"the stream ended before the restart: {at_restart}"
    producer.join(120)
    assert not failures, failures
    # Then every dead letter is in the store exactly once, with no keeper restarted by hand
    rows = wait_for(lambda: (r := hosts.stored(ids)) and len(r) >= total and r, 120,
                    f"{total} dead letters stored after the restart (at the restart: {at_restart}; keeper A: "
                    f"{hosts.keepers['a'].log()[-1500:]})")
    assert Counter(x.message_id for x in rows) == Counter(dict.fromkeys(ids, 1))
    # and, the keepers stopped (SIGTERM), none is left in the dead-letter queue: each was acked once stored
    for host in ("a", "b"):
        assert hosts.keepers[host].popen.poll() is None, hosts.keepers[host].log()[-3000:]
        hosts.stop_keeper(host)
    assert hosts.in_queue() == 0
    recovered = [h for h in ("a", "b") if "dead-letter collector" in (hosts.tmp / "logs" / f"keeper-{h}.log")
                 .read_text(errors="replace")]
    print(f"at the restart (published, stored): {at_restart}; keepers that met it and reconnected: {recovered}")


def test_a_batch_the_store_cannot_take_is_not_acked_and_is_stored_once_it_can(hosts, postgres_url):  # noqa: F811
    # Given no keeper running, 50 dead letters in the queue, and a collector whose store waits at
    # most 2 s for a PostgreSQL connection (the keeper waits 30 s: an outage longer than that)
    for host in list(hosts.keepers):
        hosts.stop_keeper(host)
    store = DeadLetterStore(hosts.tmp / "unused.sqlite", url=hosts.state_url, wait_s=2)
    ids = [f"pg-long-{n:03d}" for n in range(50)]
    with ConfirmingPublisher(hosts.env["a"]["GRIDBUS_BROKER_URL"], "test-dead-letters") as pub:
        for message_id in ids:
            pub.publish(naming.dead_letter_exchange_name(ROUTE), "", *_dead_letter(message_id))
        pub.flush()
    queues, broker_url = [naming.dead_letter_queue_name(ROUTE)], hosts.env["a"]["GRIDBUS_BROKER_URL"]
    stop_postgres(postgres_url)
    try:
        # When the collector takes them while PostgreSQL is down
        # Then its batch fails with the store's own error, and none is acked: all 50 are back in the queue
        with pytest.raises(StateStoreError):
            collect(broker_url, queues, store)
        wait_for(lambda: hosts.in_queue() == 50, 10, "the 50 dead letters back in the queue")
    finally:
        start_postgres(postgres_url)
    # When it collects again with PostgreSQL back (what the keeper's reconnect does), on the same store
    collect(broker_url, queues, store)
    # Then each is stored once, and the queue is empty
    assert Counter(x.message_id for x in hosts.stored(ids)) == Counter(dict.fromkeys(ids, 1))
    assert hosts.in_queue() == 0
    store.close()
