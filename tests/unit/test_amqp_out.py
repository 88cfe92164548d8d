"""The ``amqp`` destination without a broker: its options, its messages, its topology and its reader's grant."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from bus import registry
from bus.broker_users import SourceUsers, anchored, reads_of
from bus.errors import ConfigError, RouteValidationError
from bus.routes import load_routes
from bus.routes.model import Endpoint
from bus.topology import compile_topology
from bus.topology.model import BindingSpec
from bus.topology.plan import make_plan
from connectors import amqp_out
from tests.support import ROUTE_ENV

DESTINATION = "{system: adms, connector: amqp, exchange: adms.outages, routing_key: outages, queue: adms.outages}"


def route_file(tmp_path: Path, destination: str = DESTINATION, name: str = "r.yaml", route_id: str = "outages-to-adms",
               extra: str = "") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(f"""\
        use_case: 3
        routes:
          - id: {route_id}
            source: {{system: adms, connector: subscription, topic: "Outage.#"}}
            method: pub-sub
            transform: [to_mdms_json]
            destinations:
              - {destination}
        """) + extra)
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(RouteValidationError) as caught:
        load_routes([path], env=ROUTE_ENV)
    return [str(e) for e in caught.value.errors]


def endpoint(**options) -> Endpoint:
    loaded = amqp_out.AmqpOptions().load({"exchange": "adms.outages", "routing_key": "outages", **options})
    return Endpoint("adms", "amqp", loaded)


OUTAGE = {"type": "outage", "verb": "created", "noun": "Outage", "messageId": "OUT-FDR-0002-000004/1",
          "Outage": {"mRID": "OUT-FDR-0002-000004", "kind": "feeder", "metersAffected": 2140}}


def test_the_connector_is_registered_as_amqp_and_its_route_loads_with_defaults(tmp_path):
    # Given a route whose destination is the ADMS over AMQP
    table = load_routes([route_file(tmp_path)], env=ROUTE_ENV)
    # Then the connector found by name is the AMQP destination, and the options have their defaults
    assert isinstance(registry.connector("amqp"), amqp_out.AmqpDestination)
    options = table.get("outages-to-adms").destinations[0].options
    assert options == {"exchange": "adms.outages", "routing_key": "outages", "queue": "adms.outages",
                       "exchange_type": "direct", "reader": None}


@pytest.mark.parametrize("destination, expected", [
    ("{system: adms, connector: amqp, routing_key: outages}", "missing required key 'exchange'"),
    ("{system: adms, connector: amqp, exchange: adms.outages}", "missing required key 'routing_key'"),
    ("{system: adms, connector: amqp, exchange: adms.outages, routing_key: outages, qeue: adms.outages}",
     "unknown key 'qeue'"),
    ("{system: adms, connector: amqp, exchange: gridbus.ingress, routing_key: outages}",
     "exchange: exchange 'gridbus.ingress' is not the receiving system's"),
    ("{system: adms, connector: amqp, exchange: amq.direct, routing_key: outages}",
     "exchange: exchange 'amq.direct' is not the receiving system's"),
    ('{system: adms, connector: amqp, exchange: "", routing_key: outages}', "not the default exchange"),
    ("{system: adms, connector: amqp, exchange: adms.outages, routing_key: outages, queue: gridbus.route.x}",
     "queue: queue 'gridbus.route.x' is not the receiving system's"),
    ('{system: adms, connector: amqp, exchange: adms.outages, routing_key: "outages.#"}', "no wildcards"),
    ("{system: adms, connector: amqp, exchange: adms.outages, routing_key: outages, exchange_type: headers}",
     "exchange_type: Must be one of: direct, topic, fanout."),
    ("{system: adms, connector: amqp, exchange: adms.outages, routing_key: outages, reader: adms}",
     "reader: a reader reads a queue: set queue as well"),
    ('{system: adms, connector: amqp, exchange: "adms outages", routing_key: outages}', "exchange must be 1-255"),
])
def test_bad_options_are_refused_at_load_time_with_file_and_line(tmp_path, destination, expected):
    # Given a route whose amqp destination (line 8 of the file) has a bad option
    path = route_file(tmp_path, destination)
    # When it is loaded  Then one error names the file, the line and what is wrong
    errors = errors_of(path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}:8: ") and expected in errors[0], errors[0]


def test_a_message_is_persistent_mandatory_and_carries_its_message_id():
    # When the message for one Outage document is built
    msg = amqp_out.document_message(endpoint(), OUTAGE)
    # Then it goes to the ADMS's exchange with its key, as the document's JSON
    assert (msg.exchange, msg.routing_key) == ("adms.outages", "outages")
    assert json.loads(msg.body) == OUTAGE
    # and it is persistent, with the document's messageId as the AMQP message id
    assert msg.properties["delivery_mode"] == 2 and msg.properties["message_id"] == "OUT-FDR-0002-000004/1"
    assert msg.properties["content_type"] == "application/json"
    assert msg.headers == {"gridbus-verb": "created", "gridbus-noun": "Outage"}
    # and it is in the order ConfirmingPublisher.publish takes (mandatory is its default)
    assert list(msg._fields) == ["exchange", "routing_key", "body", "properties", "headers"]


def test_a_message_without_an_id_is_refused():
    with pytest.raises(ValueError, match="message id"):
        amqp_out.message(endpoint(), b"{}", "")
    with pytest.raises(ValueError, match="messageId"):
        amqp_out.document_message(endpoint(), {"verb": "created", "Outage": {"mRID": "X"}})


def test_routes_declare_the_receivers_exchange_queue_and_binding(tmp_path):
    # Given the route with the ADMS over AMQP
    topology = compile_topology(load_routes([route_file(tmp_path)], env=ROUTE_ENV))
    # Then the compiled topology has its durable direct exchange, a quorum queue and the binding
    assert topology.exchanges["adms.outages"].type == "direct"
    assert topology.queues["adms.outages"].args == {"x-queue-type": "quorum"}
    assert BindingSpec("adms.outages", "adms.outages", "outages") in topology.bindings


def test_without_a_queue_only_the_exchange_is_declared(tmp_path):
    path = route_file(tmp_path, "{system: adms, connector: amqp, exchange: adms.in, routing_key: k, "
                                "exchange_type: fanout}")
    topology = compile_topology(load_routes([path], env=ROUTE_ENV))
    assert topology.exchanges["adms.in"].type == "fanout"
    assert not [b for b in topology.bindings if b.source == "adms.in"]


def test_two_routes_wanting_one_exchange_as_different_types_is_a_config_error(tmp_path):
    # Given two routes naming one ADMS exchange, direct in one and topic in the other
    route_file(tmp_path, name="a.yaml", route_id="outages-a")
    route_file(tmp_path, name="b.yaml", route_id="outages-b",
               destination=DESTINATION.replace("}", ", exchange_type: topic}"))
    table = load_routes([tmp_path], env=ROUTE_ENV)
    # When compiled  Then the conflict is named
    with pytest.raises(ConfigError, match="exchange 'adms.outages'"):
        compile_topology(table)


class LiveBroker:
    """The management API of a broker where the routes' topology was declared."""

    def __init__(self, topology):
        self.topology = topology

    def exchanges(self):
        return [{"name": x.name, "type": x.type, "arguments": x.args} for x in self.topology.exchanges.values()] + [
            {"name": "adms.private", "type": "topic", "arguments": {}}]

    def queues(self):
        return [{"name": q.name, "arguments": q.args, "durable": True} for q in self.topology.queues.values()] + [
            {"name": "adms.private", "arguments": {}, "durable": True}]

    def bindings(self):
        return [{"source": b.source, "destination": b.destination, "routing_key": b.routing_key,
                 "destination_type": b.destination_type} for b in self.topology.bindings] + [
            {"source": "adms.outages", "destination": "adms.private", "routing_key": "mine",
             "destination_type": "queue"}]


def test_the_plan_is_in_sync_once_applied_and_leaves_the_receivers_own_objects_alone(tmp_path):
    # Given a broker with the routes' topology declared, and objects the ADMS made itself
    topology = compile_topology(load_routes([route_file(tmp_path)], env=ROUTE_ENV))
    # When planned  Then nothing is missing, and the ADMS's own objects are not called extra
    plan = make_plan(topology, LiveBroker(topology))
    assert plan.in_sync, plan.lines()


class FakeAdmin:
    def __init__(self):
        self.users_, self.permissions, self.topics = {}, {}, {}

    def users(self):
        return [{"name": n, "tags": t} for n, t in self.users_.items()]

    def put_user(self, name, password, tags):
        self.users_[name] = tags

    def set_permissions(self, user, configure, write, read):
        self.permissions[user] = {"configure": configure, "write": write, "read": read}

    def clear_topic_permissions(self, user):
        self.topics[user] = []

    def set_topic_permissions(self, user, exchange, write, read):
        self.topics.setdefault(user, []).append((exchange, write, read))


def test_the_reader_may_read_only_its_queue_and_configure_and_write_nothing(tmp_path):
    # Given the ADMS route over AMQP, and an amqp-in route for HES-A
    route_file(tmp_path)
    (tmp_path / "mq.yaml").write_text(textwrap.dedent("""\
        routes:
          - id: hes-a-alarms-mq
            source: {system: hes-a, connector: amqp-in, routing_key: hes-a.alarms}
            method: push
            transform: [hes_alarm_json, to_mdms_json]
            destinations:
              - {system: mdms-1, connector: rest, url: "http://127.0.0.1:9/messages"}
        """))
    routes = load_routes([tmp_path], env=ROUTE_ENV)
    admin = FakeAdmin()
    users = SourceUsers(admin, routes)
    # When the ADMS and HES-A get their users
    users.add("adms")
    users.add("hes-a")
    # Then the ADMS may consume adms.outages, exactly, and nothing else
    assert admin.permissions["adms"] == {"configure": "^$", "write": "^$", "read": r"^(adms\.outages)$"}
    assert admin.topics["adms"] == []
    # and HES-A keeps what it had: publish its key, read nothing
    assert admin.permissions["hes-a"] == {"configure": "^$", "write": r"^(gridbus\.hes\-ingress)$", "read": "^$"}
    assert admin.topics["hes-a"] == [("gridbus.hes-ingress", r"^(hes\-a\.alarms)$", "^$")]
    # and sync says what each may do
    assert dict(users.sync()) == {"adms": "read adms.outages",
                                  "hes-a": "publish gridbus.hes-ingress: hes-a.alarms"}


def test_the_reader_can_be_another_system_and_a_system_with_nothing_gets_no_user(tmp_path):
    route_file(tmp_path, DESTINATION.replace("}", ", reader: adms-2}"))
    routes = load_routes([tmp_path], env=ROUTE_ENV)
    assert reads_of(routes, "adms-2") == ("adms.outages",) and reads_of(routes, "adms") == ()
    with pytest.raises(ConfigError, match="systems that read a queue: adms-2"):
        SourceUsers(FakeAdmin(), routes).add("adms")


def test_permission_patterns_escape_every_regex_character():
    assert anchored(["a.b", "c+d"]) == r"^(a\.b|c\+d)$" and anchored([]) == "^$"


def test_the_connector_found_by_name_builds_the_same_messages():
    # Given the connector as a bus process finds it, by the endpoint's connector name
    connector = registry.connector("amqp")
    # Then its message builders are the module's
    assert connector.message(endpoint(), b"{}", "m-1", "application/json", {"h": "v"}) == \
        amqp_out.message(endpoint(), b"{}", "m-1", "application/json", {"h": "v"})
    assert connector.document_message(endpoint(), OUTAGE) == amqp_out.document_message(endpoint(), OUTAGE)
