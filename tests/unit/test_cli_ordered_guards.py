"""Commands that do not run ordered routes say so, and the one that releases their parked
consumers takes only an ordered route (no broker: the publisher is a stand-in that records)."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bus import naming
from bus.cli import network_delivery
from bus.cli import run as run_cli
from bus.network import delivery
from bus.network.delivery_topology import replays_queue_name
from tests.support import ROOT, ROUTE_ENV

ORDERED = "network-to-billing-1"
USAGE = 2  # click's exit code for a usage error, as `gridbus network deliver` answers one


class RecordingPublisher:
    """Stands in for ConfirmingPublisher: keeps what it is handed, confirms at once."""

    sent: list = []

    def __init__(self, *_args, **_kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def publish(self, exchange, routing_key, body, properties, headers, mandatory=True) -> None:
        self.sent.append((exchange, routing_key, headers))

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """The shipped routes, and a broker nobody listens on behind a recording publisher."""
    home = tmp_path / "home"
    (home / "state").mkdir(parents=True)
    for name, value in {**ROUTE_ENV, "GRIDBUS_HOME": str(home), "GRIDBUS_ENV_FILE": str(home / "none.env"),
                        "GRIDBUS_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/t",
                        "GRIDBUS_ROUTES": str(ROOT / "routes")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(RecordingPublisher, "sent", [])
    monkeypatch.setattr(run_cli, "ConfirmingPublisher", RecordingPublisher)
    monkeypatch.setattr(network_delivery, "ConfirmingPublisher", RecordingPublisher)
    return home


def test_send_to_an_ordered_route_is_refused_and_points_at_the_outbox_publisher(home):
    # Given a document meant for the billing route network-to-billing-1
    # When it is sent to that route with gridbus send
    done = CliRunner().invoke(run_cli.send, [ORDERED, "-"], input='{"consumer": "CON-1"}')
    # Then it is refused as a usage error, saying where the route's updates come from, and nothing
    # is published (its replays queue would have dead-lettered it as a DecodeError)
    assert done.exit_code == USAGE, done.output
    assert ("network-to-billing-1 is an ordered route: its updates come from the network store's outbox; "
            "see gridbus network publish") in done.stderr
    assert RecordingPublisher.sent == []


def test_send_to_a_route_of_another_method_still_publishes(home):
    # Given an alarm document for a push route
    # When it is sent with gridbus send
    done = CliRunner().invoke(run_cli.send, ["hes-a-alarms", "-"], input='{"alarms": []}')
    # Then it is published on the ingress exchange with the route's key, and its id printed
    assert done.exit_code == 0, done.output
    assert [(exchange, key) for exchange, key, _ in RecordingPublisher.sent] == [
        (naming.INGRESS_EXCHANGE, naming.route_routing_key("hes-a-alarms"))]
    assert RecordingPublisher.sent[0][2]["id"] == done.stdout.strip()


@pytest.mark.parametrize("routes", [ORDERED, f"hes-a-alarms,{ORDERED}"])
def test_a_worker_for_an_ordered_route_says_it_is_run_by_network_deliver(home, monkeypatch, routes):
    # Given nothing may be declared (there is no broker)
    monkeypatch.setattr(run_cli, "ensure_topology", lambda *_: pytest.fail("declared for a refused worker"))
    # When a worker is started for an ordered route, alone or beside a route the worker runs
    done = CliRunner().invoke(run_cli.worker, ["--routes", routes])
    # Then it is refused as a usage error naming the ordered route and what runs it, not
    # "no all routes among ..." (nor a worker that quietly leaves the ordered route out)
    assert done.exit_code == USAGE, done.output
    assert f"{ORDERED} is an ordered route, run by `gridbus network deliver`, never by the worker" in done.stderr
    assert "no all routes" not in done.output


def test_release_of_a_parked_consumer_of_an_ordered_route_goes_to_its_replays_queue(home):
    # Given the ordered route network-to-billing-1
    # When one of its parked consumers is released
    done = CliRunner().invoke(network_delivery.release, [ORDERED, "CON-00000017"])
    # Then the release is published to the route's replays queue, naming the consumer
    assert done.exit_code == 0, done.output
    assert RecordingPublisher.sent == [("", replays_queue_name(ORDERED), {delivery.H_RELEASE: "CON-00000017"})]


@pytest.mark.parametrize("route, said", [
    ("network-to-biling-1", "no route 'network-to-biling-1' (did you mean 'network-to-billing-1'?)"),
    ("hes-a-csv-to-mdms-1", "hes-a-csv-to-mdms-1 is not an ordered route (method file-batch)"),
])
def test_release_on_an_unknown_or_not_ordered_route_is_refused_with_the_ordered_routes(home, route, said):
    # Given a route id that is mistyped, or names a route of another method
    # When a consumer of it is released
    done = CliRunner().invoke(network_delivery.release, [route, "CON-00000017"])
    # Then it is refused as a usage error that says why and lists the ordered routes, and nothing
    # is published (it would wait on a replays queue nobody reads)
    assert done.exit_code == USAGE, done.output
    assert said in done.stderr
    assert "ordered routes: network-to-billing-1, network-to-billing-2" in done.stderr
    assert RecordingPublisher.sent == []


CORRELATED = "outages-to-adms"


def test_send_to_a_correlate_route_is_refused_and_points_at_the_alarm_routes(home):
    # Given an HES alarm file meant for outage identification
    # When it is sent to the correlate route itself
    done = CliRunner().invoke(run_cli.send, [CORRELATED, "-"], input='{"alarms": []}')
    # Then it is refused as a usage error (its router would have dead-lettered it), and nothing is published
    assert done.exit_code == USAGE, done.output
    assert "outages-to-adms is a correlate route: it takes the canonical events the alarm routes publish" in done.stderr
    assert RecordingPublisher.sent == []


def test_a_worker_for_a_correlate_route_says_it_is_run_by_outages_run(home, monkeypatch):
    monkeypatch.setattr(run_cli, "ensure_topology", lambda *_: pytest.fail("declared for a refused worker"))
    done = CliRunner().invoke(run_cli.worker, ["--routes", f"hes-a-alarms,{CORRELATED}"])
    assert done.exit_code == USAGE, done.output
    assert f"{CORRELATED} is a correlate route, run by `gridbus outages run`, never by the worker" in done.stderr
