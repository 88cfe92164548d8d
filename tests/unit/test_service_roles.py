"""Each bus role's permissions, as bus/service_users.py derives them from the routes (no broker).

What the broker makes of them is tests/integration/test_service_users.py; here, the shape:
every pattern anchored and escaped, every topic exchange written to carries its keys, and
the permissions follow the route table.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from bus import secret_files
from bus.errors import ConfigError
from bus.service_users import NOTHING, ServiceUsers, exact, role_named, roles
from bus.topology import compile_topology
from tests.support import ROOT, ROUTE_ENV

ROLES = ("worker", "request-worker", "ingress", "gateway", "recorder", "keeper", "network", "outages")


@pytest.fixture(scope="module")
def table():
    from bus.routes import load_routes

    return load_routes([ROOT / "routes"], env=ROUTE_ENV)


def matches(pattern: str, name: str) -> bool:
    # RabbitMQ searches with the pattern as given (not a full match): the anchors must do it
    return re.search(pattern, name) is not None


def test_there_is_one_user_per_role_named_gridbus_role(table):
    assert [r.user for r in roles(table)] == [f"gridbus-{r}" for r in ROLES]


def test_every_pattern_is_anchored_at_both_ends(table):
    for role in roles(table):
        for pattern in (role.configure, role.write, role.read, *(keys for _ex, keys in role.topics)):
            assert pattern == NOTHING or (pattern.startswith("^(") and pattern.endswith(")$")), (role.name, pattern)


def test_only_the_network_publisher_may_declare_and_only_its_leader_queue(table):
    declaring = {r.name: r.configure for r in roles(table) if r.configure != NOTHING}
    assert declaring == {"network": r"^(gridbus\.network\.publisher)$"}


def test_every_topic_exchange_a_role_writes_to_limits_its_keys(table):
    # a topic exchange without a topic permission would take any key from a user who may write to it
    topic = {name for name, spec in compile_topology(table).exchanges.items() if spec.type == "topic"}
    for role in roles(table):
        limited = {exchange for exchange, _keys in role.topics}
        written = {name for name in topic if matches(role.write, name)}
        assert written <= limited, (role.name, written - limited)


def test_the_gateway_publishes_only_its_sources_routes_and_the_callbacks(table):
    gateway = role_named(table, "gateway")
    keys = dict(gateway.topics)["gridbus.ingress"]
    assert matches(keys, "route.billing-1-reads") and matches(keys, "route.reply-callbacks")
    assert not matches(keys, "route.hes-a-csv-to-mdms-1") and not matches(keys, "route.billing-1-reads.x")
    assert not matches(gateway.write, "gridbus.events") and not matches(gateway.read, "gridbus.route.billing-1-reads")


def test_a_route_added_to_the_table_is_granted_to_the_role_that_runs_it(table):
    from bus.routes.model import RouteTable

    # Given the table without one delivery route, Then the worker may not read its queue
    without = RouteTable(tuple(r for r in table if r.id != "hes-a-csv-to-mdms-1"))
    assert not matches(role_named(without, "worker").read, "gridbus.route.hes-a-csv-to-mdms-1")
    # and with it, it may
    assert matches(role_named(table, "worker").read, "gridbus.route.hes-a-csv-to-mdms-1")


def test_the_retry_key_pattern_takes_kombu_s_delay_bits_and_the_role_s_routes_only(table):
    from kombu.transport.native_delayed_delivery import calculate_routing_key

    keys = dict(role_named(table, "worker").topics)["celery_delayed_27"]
    assert matches(keys, calculate_routing_key(3600, "route.hes-a-csv-to-mdms-1"))
    assert not matches(keys, calculate_routing_key(3600, "route.billing-1-reads"))  # the request worker's
    assert not matches(keys, "route.hes-a-csv-to-mdms-1")  # no delay bits: not a retry


@pytest.mark.parametrize("hostile", ["gridbus.route.a", "gridbus.route.a.*", "q(x|y)", "a+b", "[ab]", "x{username}"])
def test_a_name_is_matched_literally_never_as_a_regex(hostile):
    pattern = exact([hostile])
    assert matches(pattern, hostile)
    for wider in (hostile + "x", "x" + hostile, hostile.replace(".", "X"), "gridbus.route.ab", "qx", "aab", "a"):
        if wider != hostile:
            assert not matches(pattern, wider), (hostile, wider)


def test_the_keeper_reads_dead_letter_queues_only(table):
    keeper = role_named(table, "keeper")
    assert matches(keeper.read, "gridbus.dlq.hes-a-csv-to-mdms-1") and matches(keeper.read, "gridbus.dlq.gone-route")
    for other in ("gridbus.route.hes-a-csv-to-mdms-1", "gridbus.dlq.x.y", "gridbus.dlqX", "xgridbus.dlq.ab"):
        assert not matches(keeper.read, other), other
    assert keeper.write == NOTHING and keeper.configure == NOTHING


# -- password files ---------------------------------------------------------------------------

def test_a_missing_password_is_made_owner_only_and_kept(tmp_path):
    folder = secret_files.directory(tmp_path / "secrets")
    made, new = secret_files.password(folder, "gridbus-worker")
    assert new and len(made) >= 32
    assert stat.S_IMODE((folder / "gridbus-worker").stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # and the next time it is read, not made again
    assert secret_files.password(folder, "gridbus-worker") == (made, False)


def test_a_password_file_made_beforehand_is_used(tmp_path):
    folder = secret_files.directory(tmp_path / "secrets")
    (folder / "gridbus-gateway").write_text("made-by-compose\n")
    (folder / "gridbus-gateway").chmod(0o600)
    assert secret_files.password(folder, "gridbus-gateway") == ("made-by-compose", False)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_password_file_others_may_read_is_refused(tmp_path, mode):
    folder = secret_files.directory(tmp_path / "secrets")
    (folder / "gridbus-keeper").write_text("secret\n")
    (folder / "gridbus-keeper").chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600") as refused:
        secret_files.password(folder, "gridbus-keeper")
    assert "secret\n" not in str(refused.value)


@pytest.mark.parametrize("mode,taken", [(0o444, True), (0o440, True), (0o400, True), (0o446, False), (0o464, False)])
def test_a_read_only_secret_as_docker_mounts_it_is_taken_and_one_others_may_write_is_not(tmp_path, mode, taken):
    # Given a password file read-only for everyone (how Docker and Kubernetes present a mounted
    # secret, and how docker/make-secrets writes them), or one group or others may change
    folder = secret_files.directory(tmp_path / "secrets")
    (folder / "gridbus-keeper").write_text("mounted\n")
    (folder / "gridbus-keeper").chmod(mode)
    # Then the first is the password, the second is refused
    if taken:
        assert secret_files.password(folder, "gridbus-keeper") == ("mounted", False)
    else:
        with pytest.raises(ConfigError, match="open to other users"):
            secret_files.password(folder, "gridbus-keeper")


def test_a_folder_others_may_write_to_is_refused(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(ConfigError, match="chmod 700"):
        secret_files.directory(folder)


@pytest.mark.parametrize("content", ["", "\n", "two words", "x" * 2000])
def test_a_password_file_that_is_not_one_password_is_refused(tmp_path, content):
    folder = secret_files.directory(tmp_path / "secrets")
    (folder / "gridbus-worker").write_text(content)
    (folder / "gridbus-worker").chmod(0o600)
    with pytest.raises(ConfigError, match="must hold one password"):
        secret_files.password(folder, "gridbus-worker")


def test_a_file_another_sync_made_meanwhile_wins(tmp_path, monkeypatch):
    # Given another sync links its file in between this one's check and its link
    folder = secret_files.directory(tmp_path / "secrets")
    real_link = os.link

    def racing_link(src, dst):
        Path(dst).write_text("the-other-one\n")
        Path(dst).chmod(0o600)
        return real_link(src, dst)
    monkeypatch.setattr(secret_files.os, "link", racing_link)
    # Then this one takes the other's password, and leaves nothing half-written behind
    assert secret_files.password(folder, "gridbus-worker") == ("the-other-one", False)
    assert [p.name for p in folder.iterdir()] == ["gridbus-worker"]


# -- sync against a recording management API --------------------------------------------------

class RecordingAdmin:
    def __init__(self, users=()):
        self.known = {u["name"]: u for u in users}
        self.calls: list[tuple] = []
        self.topics: dict[str, list[dict]] = {}

    def users(self):
        return list(self.known.values())

    def put_user(self, name, password, tags):
        self.known[name] = {"name": name, "tags": tags}
        self.calls.append(("put_user", name))

    def set_permissions(self, user, configure, write, read):
        self.calls.append(("permissions", user, write))

    def set_topic_permissions(self, user, exchange, write, read):
        self.topics.setdefault(user, []).append({"exchange": exchange, "write": write})
        self.calls.append(("topic", user, exchange))

    def clear_topic_permissions(self, user):
        self.topics.pop(user, None)
        self.calls.append(("clear", user))

    def topic_permissions_of(self, user):
        return list(self.topics.get(user, []))


def test_without_a_password_folder_missing_users_are_not_made(table):
    admin = RecordingAdmin()
    done = ServiceUsers(admin, table).sync(None)
    assert all("not made" in what for _user, what in done) and not admin.calls


def test_topic_permissions_are_set_before_the_vhost_s_so_no_key_is_ever_open(table, tmp_path):
    admin = RecordingAdmin()
    ServiceUsers(admin, table).sync(tmp_path / "secrets")
    calls = [c for c in admin.calls if c[1] == "gridbus-worker"]
    assert calls[0][0] == "put_user" and calls[-1][0] == "permissions"
    assert {c[2] for c in calls if c[0] == "topic"} == {"celery_delayed_27", "gridbus.events"}
    assert not [c for c in admin.calls if c[0] == "clear"]  # nothing stale: nothing cleared


def test_a_stale_topic_permission_is_cleared_with_writing_shut_meanwhile(table, tmp_path):
    # Given the worker has a topic permission on an exchange it no longer writes to
    admin = RecordingAdmin([{"name": "gridbus-worker", "tags": "gridbus-service"}])
    admin.topics["gridbus-worker"] = [{"exchange": "old.topic", "write": ".*"}]
    ServiceUsers(admin, table).sync(tmp_path / "secrets")
    calls = [c for c in admin.calls if c[1] == "gridbus-worker"]
    kinds = [c[0] for c in calls]
    # Then writing is shut, all topic permissions cleared, the wanted ones set, then writing opened
    first_shut = kinds.index("permissions")
    assert calls[first_shut][2] == NOTHING and kinds[first_shut + 1] == "clear"
    assert calls[-1][0] == "permissions" and calls[-1][2] != NOTHING
    assert {t["exchange"] for t in admin.topics["gridbus-worker"]} == {"celery_delayed_27", "gridbus.events"}


def test_a_user_of_that_name_not_made_by_gridbus_is_refused(table, tmp_path):
    admin = RecordingAdmin([{"name": "gridbus-recorder", "tags": "administrator"}])
    with pytest.raises(ConfigError, match="not made by gridbus"):
        ServiceUsers(admin, table).sync(tmp_path / "secrets")


def test_the_gateway_role_covers_the_sources_the_gateway_serves():
    from bus.cli.gateway import SERVED
    from bus.service_users import GATEWAY_SOURCES

    assert set(GATEWAY_SOURCES) == set(SERVED)


def test_a_role_with_no_route_to_run_may_do_nothing(table):
    from bus.routes.model import RouteTable

    # Given route files with no ordered and no correlate route
    plain = RouteTable(tuple(r for r in table if not r.is_ordered and not r.is_correlated))
    # Then the network and outage users may declare, publish and read nothing
    for name in ("network", "outages"):
        role = role_named(plain, name)
        assert (role.configure, role.write, role.read, role.topics) == (NOTHING, NOTHING, NOTHING, ()), role
