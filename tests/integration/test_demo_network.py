"""The use-case-9 step of `gridbus demo` against real processes: the GIS stand-in on the dev
stack's shared network, a real gateway and ingress with the shipped uc9-network routes, real
`gridbus network publish|deliver` and the two billing stand-ins.  The demo's own checks (every
moved consumer's new path at both billing systems, exactly those updates, no 409) are the
assertions: run_network raises GridbusError when one fails."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import requests

from connectors.http_push.keys import KeyStore, keys_path
from gridbus_dev import devstack
from gridbus_dev.cli.demo_network import run_network
from simulators.network import shared_env
from tests.support import ROOT, Proc, free_port, gridbus, serving, start_gateway, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]  # a minute: three demo rounds

# where the billing routes are: the file is moving from routes/ordered/ into routes/
BILLING_ROUTES = next(p for p in (ROOT / "routes" / "uc9-billing.yaml",
                                  ROOT / "routes" / "ordered" / "uc9-billing.yaml") if p.exists())


class DemoStack:
    """What `gridbus dev up` runs for use case 9, each process on a free port of its own."""

    def __init__(self, bus_env: dict, tmp: Path):
        self.logs = tmp / "logs"
        self.logs.mkdir()
        routes = tmp / "routes"
        routes.mkdir()
        shutil.copy(ROOT / "routes" / "uc9-network.yaml", routes)   # the GIS's two ways in, as shipped
        self.env = {**bus_env, "GRIDBUS_ROUTES": str(routes), **shared_env(devstack.DEV_NETWORK)}
        key = KeyStore(keys_path(Path(self.env["GRIDBUS_HOME"]) / "state")).add("gis")
        self.procs: list[Proc] = []
        self.urls: dict[str, str] = {}
        for name, fmt in (("billing-1", "json"), ("billing-2", "xml")):
            self.serve(name, "simulators.billing_network", "--format", fmt)
        self.env.update(BILLING_1_URL=self.urls["billing-1"], BILLING_2_URL=self.urls["billing-2"])
        gateway, self.gateway = start_gateway(self.env, self.logs, "--rate-per-system", "0")
        self.procs.append(gateway)
        self.gis_args = ("--bus-url", f"{self.gateway}/v1/push/gis/network", "--bus-key", key,
                         "--drop-dir", f"{self.env['GRIDBUS_INBOX']}/gis-snapshots")
        self.serve("gis", "simulators.gis", *self.gis_args)
        for name, argv in (("ingress", ("ingress",)), ("publish", ("network", "publish", "--poll-s", "0.2")),
                           ("deliver", ("network", "deliver"))):
            if name != "ingress":
                argv = (*argv, "--routes", str(BILLING_ROUTES))
            self.procs.append(Proc(name, gridbus(*argv), self.env, self.logs).start())

    def serve(self, name: str, module: str, *args: str) -> None:
        port = free_port()
        self.urls[name] = f"http://127.0.0.1:{port}"
        proc = Proc(name, [sys.executable, "-m", module, "--port", str(port), "--name", name, *args],
                    self.env, self.logs).start()
        self.procs.append(proc)
        wait_for(lambda: serving(f"{self.urls[name]}/health"), 30, f"{name} to listen ({proc.log()[-500:]})")

    def restart_gis(self) -> None:
        gis = next(p for p in self.procs if p.name == "gis")
        gis.stop()
        self.procs.remove(gis)
        self.serve("gis", "simulators.gis", *self.gis_args)

    def demo_env(self) -> dict:
        return {"GIS_URL": self.urls["gis"], "BILLING_1_URL": self.urls["billing-1"],
                "BILLING_2_URL": self.urls["billing-2"], "GRIDBUS_INBOX": self.env["GRIDBUS_INBOX"]}

    def logs_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-1500:]}" for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture
def stack(bus_env, tmp_path, monkeypatch):
    s = DemoStack(bus_env, tmp_path)
    # the demo reads the network store of $GRIDBUS_HOME, as in a dev stack
    monkeypatch.setenv("GRIDBUS_HOME", s.env["GRIDBUS_HOME"])
    monkeypatch.setenv("GRIDBUS_ENV_FILE", s.env["GRIDBUS_ENV_FILE"])
    yield s
    s.stop()


def test_the_demo_loads_the_network_moves_a_dt_and_checks_both_billing_systems_again_and_again(stack, capsys):
    # Given the use-case-9 processes of a dev stack and an empty network store
    # When the demo's network step runs, Then it pushes the whole network through the gateway
    # and its checks of the DT move at both billing systems pass
    run_network(stack.demo_env(), 120)
    first = capsys.readouterr().out
    assert "GIS pushes its network (2,000 consumers, 20 DTs, 4 feeders, 2 substations)" in first, stack.logs_text()
    for billing in ("billing-1", "billing-2"):
        held = requests.get(f"{stack.urls[billing]}/stats", timeout=5).json()
        assert held["consumers"] == 2000 and held["stale_409"] == 0

    # When it runs again, Then the network goes in as a snapshot the store already equals, and
    # another DT move passes the same checks
    run_network(stack.demo_env(), 120)
    second = capsys.readouterr().out
    assert "the store has the network already" in second and "2,000 rows, 0 change(s)" in second

    # When the GIS stand-in starts again from its generated network (as after `dev down`/`dev up`)
    stack.restart_gis()
    run_network(stack.demo_env(), 120)
    third = capsys.readouterr().out
    # Then its snapshot moves back what the earlier demos moved, and its new DT move is applied
    # under new change ids (the demo told it the store's last sequence), not acknowledged as repeats
    assert "'move dt': 2" in third, third
