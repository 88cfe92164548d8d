"""`gridbus routes apply` is idempotent; `routes plan` sees what differs on the live broker."""
from __future__ import annotations

import amqp
import pytest

from tests.support import ROOT, run_cli

pytestmark = pytest.mark.broker
ROUTES = str(ROOT / "routes")


@pytest.fixture
def env(bus_env):
    return {**bus_env, "MDMS_1_URL": "http://127.0.0.1:9", "WFM_URL": "http://127.0.0.1:9",
            "FMS_URL": "http://127.0.0.1:9", "ADMS_URL": "http://127.0.0.1:9", "HES_A_URL": "http://127.0.0.1:9",
            "HES_B_URL": "http://127.0.0.1:9", "GRIDBUS_METER_ASSIGNMENT": "/tmp/meter-assignment.csv",
            "GRIDBUS_ROUTES": ROUTES}


def test_apply_twice_changes_nothing_the_second_time(env):
    # Given an empty virtual host  When routes are applied
    first = run_cli(env, "routes", "apply")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("declared ")
    # Then a second apply has nothing to do and the plan is in sync
    second = run_cli(env, "routes", "apply")
    assert second.returncode == 0 and second.stdout.strip() == "nothing to change"
    plan = run_cli(env, "routes", "plan")
    assert plan.returncode == 0 and "nothing to change" in plan.stdout


def test_plan_on_an_empty_broker_lists_what_apply_would_declare_and_changes_nothing(env):
    plan = run_cli(env, "routes", "plan")
    assert plan.returncode == 2
    assert "+ queue gridbus.route.hes-a-csv-to-mdms-1" in plan.stdout
    assert "+ queue gridbus.dlq.hes-a-csv-to-mdms-1" in plan.stdout
    assert "+ exchange gridbus.ingress" in plan.stdout
    assert run_cli(env, "routes", "plan").stdout == plan.stdout  # nothing was declared


def test_plan_reports_a_hand_altered_queue_and_an_extra_one(env, rabbitmq_proc):
    # Given applied routes, then an operator re-creates a route queue by hand with another
    # delivery limit, and leaves behind a queue no route knows
    assert run_cli(env, "routes", "apply").returncode == 0
    vhost = env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
    conn = amqp.Connection(host=f"127.0.0.1:{rabbitmq_proc.port}", virtual_host=vhost)
    conn.connect()
    ch = conn.channel()
    ch.queue_delete("gridbus.route.hes-b-csv-to-mdms-2")
    ch.queue_declare("gridbus.route.hes-b-csv-to-mdms-2", durable=True, auto_delete=False,
                     arguments={"x-queue-type": "quorum", "x-delivery-limit": 99})
    ch.queue_declare("gridbus.route.retired-route", durable=True, auto_delete=False,
                     arguments={"x-queue-type": "quorum"})
    conn.close()
    # When the plan is made
    plan = run_cli(env, "routes", "plan")
    # Then it reports the difference in arguments, the lost binding and the extra queue
    assert plan.returncode == 2
    assert "~ queue gridbus.route.hes-b-csv-to-mdms-2: " in plan.stdout
    assert "x-delivery-limit: live 99 != routes 5" in plan.stdout
    assert "+ binding gridbus.ingress -> queue gridbus.route.hes-b-csv-to-mdms-2" in plan.stdout
    assert "- queue gridbus.route.retired-route" in plan.stdout
    # and apply leaves the altered queue alone and says so
    applied = run_cli(env, "routes", "apply")
    assert "differs and was left alone" in applied.stderr
