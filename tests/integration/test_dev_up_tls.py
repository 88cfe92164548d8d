"""`gridbus dev up --tls`: the local stack on a TLS-only node, every process connected over TLS.

A real stack on the dev stack's fixed ports (skipped when another stack holds them).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bus.broker_admin import BrokerAdmin
from gridbus_dev import devstack
from tests.support import run_cli

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PORTS = [5679, 15679, devstack.DEV_DIST_PORT, devstack.GATEWAY_PORT, devstack.METRICS_PORT,
         *(port for _n, _m, port, _v in devstack.STAND_INS)]


def _env_file(home: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (home / "dev.env").read_text().splitlines()
                if "=" in line and not line.startswith("#"))


def test_dev_up_tls_connects_every_process_over_tls_with_its_certificate(tmp_path, monkeypatch):
    taken = [p for p in PORTS if devstack.port_open(p)]
    if taken:
        pytest.skip(f"another dev stack holds ports {taken}: `gridbus dev up` has fixed ports")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRIDBUS_", "RABBITMQ_"))}
    env.update(GRIDBUS_HOME=str(home), PYTHONUNBUFFERED="1")
    try:
        # When the stack is brought up with --tls
        up = run_cli(env, "dev", "up", "-c", "1", "--tls", timeout=600)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "amqps://127.0.0.1:5679" in up.stdout and "(TLS only)" in up.stdout
        # Then dev.env names the TLS addresses and the certificates, which only their owner may read
        values = _env_file(home)
        assert values["GRIDBUS_BROKER_URL"].startswith("amqps://")
        assert values["GRIDBUS_MANAGEMENT_URL"].startswith("https://")
        assert values["ADMS_AMQP_URL"].startswith("amqps://adms:")
        for var in ("GRIDBUS_TLS_CA", "GRIDBUS_TLS_CERT", "GRIDBUS_TLS_KEY"):
            assert stat.S_IMODE(Path(values[var]).stat().st_mode) == 0o600
        assert stat.S_IMODE((home / "tls").stat().st_mode) == 0o700
        # (this test reads the management API as the processes do, with the stack's CA)
        for var in ("GRIDBUS_ENV_FILE", "GRIDBUS_TLS_CA", "GRIDBUS_TLS_CERT", "GRIDBUS_TLS_KEY"):
            monkeypatch.setenv(var, values.get(var, str(home / "dev.env")))
        connections = BrokerAdmin(values["GRIDBUS_MANAGEMENT_URL"])._get("connections")
        # and every connection of every process it started (workers, ingress, gateway, recorder,
        # keeper, network, outages, the ADMS stand-in) is TLS with a client certificate of its CA
        assert len(connections) >= 10, [c.get("client_properties", {}).get("connection_name") for c in connections]
        plain = [c.get("client_properties", {}).get("connection_name") for c in connections
                 if not c.get("ssl") or not c.get("peer_cert_subject")]
        assert plain == []
        # and each bus process logs in as its role's service user, over TLS too; none as the administrator
        from gridbus_dev.cli.dev import SERVICE_ROLES
        users = {c["user"] for c in connections}
        roles = {f"gridbus-{role}" for role in SERVICE_ROLES.values()}
        assert "guest" not in users and roles <= users <= roles | {"adms"}, users
        # and `dev status` reads the broker over HTTPS
        status = run_cli(env, "dev", "status", timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "gridbus.route." in status.stdout
    finally:
        run_cli(env, "dev", "down", timeout=300)
