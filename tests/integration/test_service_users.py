"""Service users: each bus role, connected as its own broker user, can do its job and nothing else.

One vhost for the module: the shipped routes' topology is declared once by the administrator
(guest, `gridbus routes apply`), then `gridbus broker users sync --passwords DIR` makes the
users.  Every refusal is the broker's own 403 ACCESS_REFUSED.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import amqp
import pytest
import requests

from bus.broker_admin import BrokerAdmin
from bus.service_users import SERVICE_TAG, exact
from tests.support import (ROOT, ROUTE_ENV, Mdms, Proc, drop_vhost, env_of_its_own, gridbus, run_cli,
                           wait_for)

pytestmark = pytest.mark.broker

ROLES = ("worker", "request-worker", "ingress", "gateway", "recorder", "keeper", "network", "outages")
ROUTE_QUEUE = "gridbus.route.hes-a-csv-to-mdms-1"
RETRY_BITS = ".".join("0" * 27 + "1")  # a one-second delay, as kombu writes it


@pytest.fixture(scope="module")
def stack(rabbitmq_proc, management_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("service-users")
    env, vhost = env_of_its_own(rabbitmq_proc, management_url, tmp, "svc")
    env.update(ROUTE_ENV, GRIDBUS_ROUTES=str(ROOT / "routes"))
    applied = run_cli(env, "routes", "apply")
    assert applied.returncode == 0, applied.stderr
    secrets = tmp / "secrets"
    synced = run_cli(env, "broker", "users", "sync", "--passwords", str(secrets))
    assert synced.returncode == 0, synced.stdout + synced.stderr
    yield Stack(env, vhost, rabbitmq_proc.port, management_url, secrets, synced.stdout, tmp)
    drop_vhost(management_url, vhost)


class Stack:
    def __init__(self, env, vhost, port, management_url, secrets: Path, synced: str, tmp: Path):
        self.env, self.vhost, self.port, self.management_url = env, vhost, port, management_url
        self.secrets, self.synced, self.tmp = secrets, synced, tmp

    def password(self, role: str) -> str:
        return (self.secrets / f"gridbus-{role}").read_text().strip()

    def url(self, role: str) -> str:
        return f"amqp://gridbus-{role}:{quote(self.password(role), safe='')}@127.0.0.1:{self.port}/{self.vhost}"

    def connect(self, role: str) -> amqp.Connection:
        # confirms: a publish waits for the broker's answer, so a refusal is seen at the publish
        conn = amqp.Connection(f"127.0.0.1:{self.port}", userid=f"gridbus-{role}", password=self.password(role),
                               virtual_host=self.vhost, confirm_publish=True)
        conn.connect()
        return conn


def can(stack: Stack, role: str, *operations) -> None:
    conn = stack.connect(role)
    try:
        for operation in operations:
            ch = conn.channel()
            operation(ch)
            ch.basic_qos(0, 1, False)  # a round trip: an asynchronous refusal would arrive before it
            ch.close()
    finally:
        conn.close()


def cannot(stack: Stack, role: str, operation, what: str) -> None:
    conn = stack.connect(role)
    try:
        ch = conn.channel()
        with pytest.raises(amqp.exceptions.AccessRefused) as refused:
            operation(ch)
            ch.basic_qos(0, 1, False)
        assert refused.value.reply_code == 403, f"{role} {what}: {refused.value}"
    finally:
        conn.close()


def consume(queue):
    return lambda ch: ch.basic_cancel(ch.basic_consume(queue, callback=lambda m: None))


def publish(exchange, key):
    return lambda ch: ch.basic_publish(amqp.Message(b"{}", delivery_mode=2), exchange=exchange, routing_key=key)


def declare(queue):
    return lambda ch: ch.queue_declare(queue, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})


def delete(queue):
    return lambda ch: ch.queue_delete(queue)


def test_sync_makes_every_role_s_user_tagged_and_writes_owner_only_password_files(stack):
    # Then every role has a user tagged gridbus-service, the keeper alone also management
    admin = BrokerAdmin(stack.env["GRIDBUS_MANAGEMENT_URL"], stack.vhost)
    users = {u["name"]: u for u in admin.users()}
    for role in ROLES:
        tags = users[f"gridbus-{role}"]["tags"]
        tags = tags.split(",") if isinstance(tags, str) else tags
        assert SERVICE_TAG in tags and "administrator" not in tags
        assert ("management" in tags) == (role == "keeper"), (role, tags)
        # and its password file is its owner's only, in a directory only its owner may open
        assert stat.S_IMODE((stack.secrets / f"gridbus-{role}").stat().st_mode) == 0o600
    assert stat.S_IMODE(stack.secrets.stat().st_mode) == 0o700
    # and no password is printed
    for role in ROLES:
        assert stack.password(role) not in stack.synced
    # and `list` shows them with their role
    listed = json.loads(run_cli(stack.env, "broker", "users", "list", "--json").stdout)
    roles = {row["system"]: row for row in listed if row.get("role")}
    assert set(roles) == {f"gridbus-{r}" for r in ROLES}
    assert roles["gridbus-gateway"]["read"] == r"^(gridbus\.replies)$"
    assert roles["gridbus-network"]["configure"] == r"^(gridbus\.network\.publisher)$"


def test_the_worker_consumes_retries_dead_letters_and_publishes_events_only_as_its_routes_say(stack):
    can(stack, "worker", consume(ROUTE_QUEUE),
        publish("celery_delayed_27", f"{RETRY_BITS}.route.hes-a-csv-to-mdms-1"),
        publish("gridbus.dlx.hes-a-csv-to-mdms-1", ""),
        publish("", "gridbus.reconciliation"),
        publish("gridbus.events", "EndDeviceEvents.created.hes-a.route.critical-to-mdms-1"),
        publish("gridbus.trace", "trace"))
    cannot(stack, "worker", delete(ROUTE_QUEUE), "deletes its own route queue")
    cannot(stack, "worker", publish("gridbus.ingress", "route.hes-a-csv-to-mdms-1"), "publishes on the ingress")
    cannot(stack, "worker", publish("gridbus.events", "EndDeviceEvents.created.hes-a.route.hes-a-alarms"),
           "publishes an event to a route that does not subscribe")
    cannot(stack, "worker", publish("celery_delayed_27", f"{RETRY_BITS}.route.billing-1-reads"),
           "retries a request route")
    cannot(stack, "worker", consume("gridbus.route.billing-1-reads"), "consumes a request route")


def test_the_request_worker_replies_and_consumes_only_the_request_routes(stack):
    can(stack, "request-worker", consume("gridbus.route.billing-1-reads"), publish("", "gridbus.replies"),
        publish("celery_delayed_27", f"{RETRY_BITS}.route.billing-1-reads"))
    cannot(stack, "request-worker", consume(ROUTE_QUEUE), "consumes a delivery route")
    cannot(stack, "request-worker", publish("gridbus.ingress", "route.billing-1-reads"), "publishes on the ingress")


def test_the_ingress_publishes_its_sources_routes_and_consumes_no_route(stack):
    can(stack, "ingress", publish("gridbus.ingress", "route.hes-a-csv-to-mdms-1"),
        consume("gridbus.reconciliation"), consume("gridbus.in.hes-b-alarms-mq"),
        publish("gridbus.events", "FileReconciliation.created.hes-a"))
    cannot(stack, "ingress", consume(ROUTE_QUEUE), "consumes a route queue")
    cannot(stack, "ingress", publish("gridbus.ingress", "route.billing-1-commands"), "publishes a gateway route")
    cannot(stack, "ingress", publish("", ROUTE_QUEUE), "publishes to a queue by name")


def test_the_gateway_publishes_its_routes_reads_replies_and_nothing_else(stack):
    can(stack, "gateway", publish("gridbus.ingress", "route.billing-1-reads"),
        publish("gridbus.ingress", "route.reply-callbacks"), consume("gridbus.replies"))
    cannot(stack, "gateway", consume(ROUTE_QUEUE), "consumes a route queue")
    cannot(stack, "gateway", publish("gridbus.events", "EndDeviceEvents.created.hes-a.route.critical-to-mdms-1"),
           "publishes to gridbus.events")
    cannot(stack, "gateway", publish("gridbus.ingress", "route.hes-a-csv-to-mdms-1"), "publishes a file route")


def test_the_recorder_reads_traces_and_publishes_nothing(stack):
    can(stack, "recorder", consume("gridbus.trace"))
    cannot(stack, "recorder", publish("gridbus.ingress", "route.hes-a-csv-to-mdms-1"), "publishes to a route")
    cannot(stack, "recorder", publish("gridbus.trace", "trace"), "publishes a trace event")
    cannot(stack, "recorder", consume(ROUTE_QUEUE), "consumes a route queue")


def test_the_keeper_reads_dead_letter_queues_found_through_the_management_api_and_publishes_nothing(stack):
    can(stack, "keeper", consume("gridbus.dlq.hes-a-csv-to-mdms-1"), consume("gridbus.dlq.network-to-billing-1"))
    auth = ("gridbus-keeper", stack.password("keeper"))
    api = f"{stack.management_url}/api"
    listed = requests.get(f"{api}/queues/{stack.vhost}", auth=auth, params={"columns": "name"}, timeout=10)
    assert listed.status_code == 200 and {"name": "gridbus.dlq.hes-a-csv-to-mdms-1"} in listed.json()
    cannot(stack, "keeper", publish("gridbus.ingress", "route.hes-a-csv-to-mdms-1"), "publishes to a route")
    cannot(stack, "keeper", publish("gridbus.ingress", "anything.at.all"), "publishes an arbitrary key")
    cannot(stack, "keeper", consume(ROUTE_QUEUE), "consumes a route queue")
    # and over HTTP it may change nothing
    made = requests.put(f"{api}/users/intruder", auth=auth, json={"password": "x", "tags": "administrator"},
                        timeout=10)
    assert made.status_code in (401, 403), made.text


def test_the_network_role_declares_its_leader_queue_only(stack):
    can(stack, "network",
        lambda ch: ch.queue_declare("gridbus.network.publisher", exclusive=True, auto_delete=True),
        publish("gridbus.network.updates", "slot.1"), consume("gridbus.ordered.network-to-billing-1.0"),
        publish("", "gridbus.dlq.network-to-billing-1"))
    cannot(stack, "network", declare("gridbus.network.other"), "declares another queue")
    cannot(stack, "network", publish("gridbus.ingress", "route.network-to-billing-1"), "publishes on the ingress")
    cannot(stack, "network", consume(ROUTE_QUEUE), "consumes a route queue")


def test_the_outage_correlator_routes_ticks_verifies_and_tells_the_adms(stack):
    can(stack, "outages", consume("gridbus.route.outages-to-adms"), consume("gridbus.outages.outages-to-adms.0"),
        publish("gridbus.outages", "outages-to-adms.0"), publish("gridbus.ingress", "route.outages-to-adms"),
        publish("gridbus.ingress", "route.outages-verify-reads"), publish("adms.outages", "outages"))
    cannot(stack, "outages", publish("gridbus.ingress", "route.hes-a-alarms"), "publishes another route")
    cannot(stack, "outages", consume("adms.outages"), "reads the ADMS's own queue")


@pytest.mark.parametrize("role", ROLES)
def test_no_role_declares_or_deletes_route_queues(stack, role):
    cannot(stack, role, declare(ROUTE_QUEUE), "declares a route queue")
    cannot(stack, role, delete(ROUTE_QUEUE), "deletes a route queue")
    cannot(stack, role, lambda ch: ch.exchange_declare("gridbus.ingress", "topic", durable=True, auto_delete=False,
                                                       arguments={"alternate-exchange": "gridbus.unroutable"}),
           "declares the ingress exchange")


def test_a_name_with_regex_characters_cannot_widen_a_pattern(stack):
    # Given queues whose names differ from a granted one only where a regex would match more
    admin = BrokerAdmin(stack.env["GRIDBUS_MANAGEMENT_URL"], stack.vhost)
    conn = amqp.Connection(f"127.0.0.1:{stack.port}", userid="guest", password="guest", virtual_host=stack.vhost)
    conn.connect()
    ch = conn.channel()
    for queue in ("hostile.a+b", "hostile.aab", "hostileXa+b", "hostile.a+b.more"):
        ch.queue_declare(queue, durable=True, auto_delete=False)
    conn.close()
    # and a user granted read on exactly "hostile.a+b", as bus/service_users.py writes patterns
    admin.put_user("gridbus-hostile-test", "hostile-test-password", SERVICE_TAG)
    try:
        admin.set_permissions("gridbus-hostile-test", configure="^$", write="^$", read=exact(["hostile.a+b"]))
        conn = amqp.Connection(f"127.0.0.1:{stack.port}", userid="gridbus-hostile-test",
                               password="hostile-test-password", virtual_host=stack.vhost)
        conn.connect()
        try:
            ch = conn.channel()
            ch.basic_cancel(ch.basic_consume("hostile.a+b", callback=lambda m: None))
            # Then it reads that queue and none of the others
            for other in ("hostile.aab", "hostileXa+b", "hostile.a+b.more"):
                ch = conn.channel()
                with pytest.raises(amqp.exceptions.AccessRefused):
                    ch.basic_consume(other, callback=lambda m: None)
        finally:
            conn.close()
    finally:
        admin.delete_user("gridbus-hostile-test")


def test_sync_is_idempotent_and_two_at_once_both_succeed(stack):
    # Given the users exist  When sync runs twice at the same time with the same password folder
    argv = gridbus("broker", "users", "sync", "--passwords", str(stack.secrets))
    runs = [subprocess.Popen(argv, env=stack.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outcomes = [(r.wait(120), *r.communicate()) for r in runs]
    # Then both succeed, and every role still logs in with the password in its file
    assert all(code == 0 for code, _out, _err in outcomes), outcomes
    can(stack, "worker", consume(ROUTE_QUEUE))
    can(stack, "gateway", consume("gridbus.replies"))


def test_two_first_syncs_at_once_agree_on_each_password(stack, tmp_path):
    # Given an empty password folder  When two syncs make the passwords at the same time
    folder = tmp_path / "fresh"
    argv = gridbus("broker", "users", "sync", "--passwords", str(folder))
    runs = [subprocess.Popen(argv, env=stack.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outcomes = [(r.wait(120), *r.communicate()) for r in runs]
    assert all(code == 0 for code, _out, _err in outcomes), outcomes
    # Then each user's one file holds the password the broker has (the module's files move on to it)
    for role in ROLES:
        (stack.secrets / f"gridbus-{role}").write_text((folder / f"gridbus-{role}").read_text())
    can(stack, "recorder", consume("gridbus.trace"))
    can(stack, "keeper", consume("gridbus.dlq.hes-a-csv-to-mdms-1"))
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # nothing half-written left


def test_a_password_file_others_may_read_is_refused(stack, tmp_path):
    # Given a password folder where one file is world-readable
    folder = tmp_path / "open"
    folder.mkdir(mode=0o700)
    leaked = folder / "gridbus-recorder"
    leaked.write_text("a-password-others-can-read\n")
    leaked.chmod(0o644)
    # When sync is asked to use it
    done = run_cli(stack.env, "broker", "users", "sync", "--passwords", str(folder))
    # Then it refuses, naming the file and the fix, and never prints the password
    assert done.returncode == 1, done.stdout + done.stderr
    assert str(leaked) in done.stderr and "chmod 600" in done.stderr
    assert "a-password-others-can-read" not in done.stdout + done.stderr


def test_a_user_gridbus_did_not_make_is_not_touched(stack, tmp_path):
    admin = BrokerAdmin(stack.env["GRIDBUS_MANAGEMENT_URL"], stack.vhost)
    admin.put_user("gridbus-recorder", stack.password("recorder"), "")  # as if someone else made it
    try:
        done = run_cli(stack.env, "broker", "users", "sync", "--passwords", str(stack.secrets))
        assert done.returncode == 1 and "not made by gridbus" in done.stderr, done.stderr
    finally:
        admin.put_user("gridbus-recorder", stack.password("recorder"), SERVICE_TAG)


def test_a_worker_as_its_service_user_refuses_to_start_when_the_topology_is_incomplete(stack, rabbitmq_proc,
                                                                                        management_url, tmp_path):
    # Given a vhost where the topology was applied but one route queue has gone since
    env, vhost = env_of_its_own(rabbitmq_proc, management_url, tmp_path, "bare")
    try:
        env.update(ROUTE_ENV, GRIDBUS_ROUTES=str(ROOT / "routes"))
        assert run_cli(env, "routes", "apply").returncode == 0
        assert run_cli(env, "broker", "users", "sync").returncode == 0
        conn = amqp.Connection(f"127.0.0.1:{stack.port}", userid="guest", password="guest", virtual_host=vhost)
        conn.connect()
        conn.channel().queue_delete(ROUTE_QUEUE)
        conn.close()
        env["GRIDBUS_BROKER_URL"] = stack.url("worker").rsplit("/", 1)[0] + f"/{vhost}"
        # When the worker starts as gridbus-worker, which may not declare it
        done = run_cli(env, "worker", "--kind", "deliveries", timeout=60)
        # Then it exits, naming exactly what is missing and who declares it
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"lacks 1 object(s) of the topology: queue {ROUTE_QUEUE};" in done.stderr, done.stderr
        assert "the administrator declares the topology: gridbus routes apply" in done.stderr
    finally:
        drop_vhost(management_url, vhost)


def test_worker_and_ingress_as_service_users_deliver_a_file(stack, rabbitmq_proc, management_url, tmp_path):
    # Given a vhost of its own (the other tests' probes left junk in the module's queues), the
    # topology applied and the users' permissions there set by the administrator
    env, vhost = env_of_its_own(rabbitmq_proc, management_url, tmp_path, "e2e")
    env.update(ROUTE_ENV, GRIDBUS_ROUTES=str(ROOT / "routes"), GRIDBUS_INBOX=str(tmp_path / "inbox"),
               GRIDBUS_OUTBOX=str(tmp_path / "outbox"))
    assert run_cli(env, "routes", "apply").returncode == 0
    assert run_cli(env, "broker", "users", "sync").returncode == 0
    # and an MDMS stand-in, and a worker and an ingress started with their service users' URLs
    logs = tmp_path / "logs"
    logs.mkdir()
    mdms = Mdms(env, logs)
    env["MDMS_1_URL"] = mdms.url

    def as_role(role: str) -> dict:
        return {**env, "GRIDBUS_BROKER_URL": stack.url(role).rsplit("/", 1)[0] + f"/{vhost}"}
    worker = Proc("worker", gridbus("worker", "-c", "2", "--kind", "deliveries"), as_role("worker"), logs).start()
    ingress = Proc("ingress", gridbus("ingress"), as_role("ingress"), logs).start()
    admin = BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], vhost)
    try:
        wait_for(lambda: admin.queue(ROUTE_QUEUE).get("consumers", 0) > 0, 60,
                 f"the worker's consumer (log: {worker.log()[-2000:]})")
        # When a HES-A file is dropped into the inbox
        staging = tmp_path / "staging"
        made = subprocess.run([sys.executable, "-m", "simulators.hes_files", "--out", str(staging), "--seed", "7",
                               "--profile", "daily", "--meters", "5", "--days", "1", "--first-serial", "700"],
                              capture_output=True, text=True, cwd=ROOT)
        assert made.returncode == 0, made.stderr
        summary = json.loads(made.stdout)
        inbox = Path(env["GRIDBUS_INBOX"]) / "hes-a"
        wait_for(inbox.exists, 30, f"the ingress to make its inbox (log: {ingress.log()[-2000:]})")
        source = Path(summary["path"])
        part = inbox / f".{source.name}.part"
        part.write_bytes(source.read_bytes())
        part.replace(inbox / source.name)
        # Then the MDMS gets every reading, and the file's report comes back through reconciliation
        wait_for(lambda: mdms.stats()["readings"] == summary["expected_readings"], 90,
                 f"readings at the MDMS (worker: {worker.log()[-2000:]}; ingress: {ingress.log()[-2000:]})")
        wait_for(lambda: list((inbox / "archive").rglob(f"{source.name}.report.json")), 60, "the file's report")
        # and neither declared anything nor was refused anything
        for proc in (worker, ingress):
            assert "ACCESS_REFUSED" not in proc.log(), proc.log()[-3000:]
    finally:
        for proc in (ingress, worker):
            proc.stop()
        mdms.stop()
        drop_vhost(management_url, vhost)
