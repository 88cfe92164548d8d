"""`gridbus dev up` runs every bus process as its role's service user, never as the administrator.

No stack is started: the helper dev up calls is run against a recording management API."""
from __future__ import annotations

import stat

import pytest

from bus.messaging.addresses import broker_addresses
from gridbus_dev import devstack
from gridbus_dev.cli import dev as dev_cli
from tests.support import ROOT, ROUTE_ENV
from tests.unit.test_service_roles import RecordingAdmin

ADMIN_URLS = {"GRIDBUS_BROKER_URL": "amqp://guest:guest@127.0.0.1:5691/%2F;amqp://guest:guest@127.0.0.1:5692/%2F",
              "GRIDBUS_MANAGEMENT_URL": "http://guest:guest@127.0.0.1:15679"}


@pytest.fixture
def admin(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDBUS_HOME", str(tmp_path))
    monkeypatch.setenv("GRIDBUS_ROUTES", str(ROOT / "routes"))
    for var, value in {**ROUTE_ENV, **ADMIN_URLS}.items():
        monkeypatch.setenv(var, value)
    recording = RecordingAdmin()
    monkeypatch.setattr("bus.broker_admin.BrokerAdmin", lambda *_args: recording)
    return recording


def test_every_bus_process_gets_its_role_s_user_and_no_stand_in_does(admin, tmp_path):
    # When dev up makes the service users
    envs = dev_cli._service_user_envs(dict(ADMIN_URLS))
    # Then every process of the bus (not the stand-ins) has a role
    stand_ins = {name for name, *_rest in devstack.STAND_INS}
    assert set(envs) == set(dev_cli.SERVICES) - stand_ins
    for service, env in envs.items():
        role = dev_cli.SERVICE_ROLES[service]
        password = (tmp_path / "secrets" / f"gridbus-{role}").read_text().strip()
        # and connects to every node as gridbus-<role>, with the password kept in the secrets folder
        for address in broker_addresses(env["GRIDBUS_BROKER_URL"]):
            assert (address.userid, address.password) == (f"gridbus-{role}", password)
        assert len(broker_addresses(env["GRIDBUS_BROKER_URL"])) == 2
        assert "guest" not in env["GRIDBUS_BROKER_URL"] + env["GRIDBUS_MANAGEMENT_URL"]
    assert stat.S_IMODE((tmp_path / "secrets").stat().st_mode) == 0o700
    # and the users were made through the administrator's management API
    assert {c[1] for c in admin.calls if c[0] == "put_user"} == {f"gridbus-{r}" for r in set(
        dev_cli.SERVICE_ROLES.values())}


def test_a_second_dev_up_keeps_the_passwords(admin, tmp_path):
    first = dev_cli._service_user_envs(dict(ADMIN_URLS))
    assert dev_cli._service_user_envs(dict(ADMIN_URLS)) == first
