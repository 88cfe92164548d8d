"""The use-case-3 step of `gridbus demo` against real processes, wired as `gridbus dev up` wires
them: the dev stack's shared generated network in the network store, a real gateway and worker
with the shipped HES-A alarm route, the shipped routes/uc3-outages.yaml (production thresholds),
`gridbus outages run`, the request worker for the verification reads, the HES stand-ins with
their fleets, and the ADMS stand-in consuming adms.outages over AMQP as its own broker user
(`gridbus broker users add adms`).  The demo's own checks are the assertions (one feeder outage,
no DT outage, the nested outage of exactly the meters left out): run_outages raises
GridbusError when one fails."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import requests
import yaml

from bus.network.store import open_store
from bus.outages.store import open_outage_store
from gridbus_dev import devstack
from gridbus_dev.cli.demo_outages import run_outages
from simulators.network import NetworkModel, shared_env
from tests.support import ROOT, Proc, free_port, gridbus, run_cli, serving, start_gateway, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]  # about 90 s: the route's restore_wait_s is 60 s


class OutageDemoStack:
    def __init__(self, bus_env: dict, tmp: Path):
        self.logs = tmp / "logs"
        self.logs.mkdir()
        routes = tmp / "routes"
        routes.mkdir()
        # HES-A's alarm route as shipped (the trip goes through it), and use case 3 as shipped
        shipped = yaml.safe_load((ROOT / "routes" / "uc2-4-5-alarms.yaml").read_text())
        shipped["routes"] = [r for r in shipped["routes"] if r["id"] == "hes-a-alarms"]
        (routes / "hes-a-alarms.yaml").write_text(yaml.safe_dump(shipped))
        shutil.copy(ROOT / "routes" / "uc3-outages.yaml", routes)
        home = Path(bus_env["GRIDBUS_HOME"])
        self.env = {**bus_env, "GRIDBUS_ROUTES": str(routes), **shared_env(devstack.DEV_NETWORK),
                    "GRIDBUS_METER_ASSIGNMENT": str(home / "meter-assignment.csv")}
        model = NetworkModel.generate(**devstack.DEV_NETWORK)
        model.write_meter_assignment(self.env["GRIDBUS_METER_ASSIGNMENT"])
        open_store(home / "state" / "network.sqlite").apply(model.creates())  # as the network step leaves it
        self.procs: list[Proc] = []
        self.urls: dict[str, str] = {}
        for name in ("hes-a", "hes-b"):
            self.serve(name, "simulators.hes")
        self.env.update(HES_A_URL=self.urls["hes-a"], HES_B_URL=self.urls["hes-b"])
        applied = run_cli(self.env, "routes", "apply")
        assert applied.returncode == 0, applied.stderr
        # the ADMS's least-privilege user, as dev up makes it
        added = run_cli(self.env, "broker", "users", "add", "adms")
        assert added.returncode == 0, added.stderr
        vhost = self.env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
        self.adms_url = f"amqp://adms:{added.stdout.strip()}@{self.env['GRIDBUS_BROKER_URL'].split('@')[1].split('/')[0]}/{vhost}"
        self.serve("adms", "simulators.adms", env={"ADMS_AMQP_URL": self.adms_url, "ADMS_AMQP_QUEUE": "adms.outages"})
        gateway, self.gateway = start_gateway(self.env, self.logs, "--rate-per-system", "0")
        self.procs.append(gateway)
        for name, argv in (("worker", ("worker", "-c", "1", "--kind", "deliveries")),
                           ("worker-requests", ("worker", "--pool", "asyncio", "--kind", "requests")),
                           ("outages", ("outages", "run"))):
            self.procs.append(Proc(name, gridbus(*argv), self.env, self.logs).start())
        wait_for(lambda: requests.get(f"{self.urls['adms']}/stats", timeout=5).json()["amqp"]["connected"], 30,
                 f"the ADMS consuming adms.outages ({self.logs_text()})")
        wait_for(self.correlating, 60, f"the correlator consuming its queues ({self.logs_text()})")

    def correlating(self) -> bool:
        from bus import naming
        from bus.broker_admin import BrokerAdmin

        admin = BrokerAdmin(self.env["GRIDBUS_MANAGEMENT_URL"], self.env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1])
        queues = [naming.route_queue_name("outages-to-adms")] + [f"gridbus.outages.outages-to-adms.{p}"
                                                                   for p in range(4)]
        try:
            return all(admin.queue(q).get("consumers", 0) > 0 for q in queues)
        except Exception:  # noqa: BLE001 - not declared yet
            return False

    def serve(self, name: str, module: str, env: dict | None = None) -> None:
        port = free_port()
        self.urls[name] = f"http://127.0.0.1:{port}"
        proc = Proc(name, [sys.executable, "-m", module, "--port", str(port), "--name", name],
                    {**self.env, **(env or {})}, self.logs).start()
        self.procs.append(proc)
        wait_for(lambda: serving(f"{self.urls[name]}/health"), 30, f"{name} to listen ({proc.log()[-500:]})")

    def demo_env(self) -> dict:
        return {**{k: v for k, v in self.env.items() if k.startswith("GRIDBUS_DEV_NETWORK_")},
                "GRIDBUS_GATEWAY_URL": self.gateway, "ADMS_URL": self.urls["adms"],
                "HES_A_URL": self.urls["hes-a"], "HES_B_URL": self.urls["hes-b"]}

    def logs_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-1500:]}" for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture
def stack(bus_env, tmp_path, monkeypatch):
    s = OutageDemoStack(bus_env, tmp_path)
    # the demo reads the network and outage stores and the gateway's keys of $GRIDBUS_HOME, as in a dev stack
    for var in ("GRIDBUS_HOME", "GRIDBUS_ENV_FILE", "GRIDBUS_ROUTES", "GRIDBUS_BROKER_URL", "GRIDBUS_MANAGEMENT_URL"):
        monkeypatch.setenv(var, s.env[var])
    yield s
    s.stop()


def test_the_demo_trips_a_feeder_and_the_adms_gets_one_outage_then_its_close_and_the_nested_one(stack, capsys):
    # Given the processes of a dev stack for use case 3 and the network loaded
    # When the demo's outage step runs (its checks raise when the ADMS gets anything else)
    try:
        run_outages(stack.demo_env(), 60)
    except Exception:
        print(stack.logs_text())
        raise
    out = capsys.readouterr().out
    # Then it told the story: the trip, one feeder outage over AMQP, verified, shown, closed, nested
    assert "trips: " in out and "ADMS (AMQP, queue adms.outages)" in out and "verified" in out
    assert "$ gridbus outages show OUT-FDR-" in out and "timeline:" in out
    assert "(one feeder outage, not one per DT)" in out
    # and the ADMS, which read its queue as user adms, holds them closed: the feeder outage
    # restored, and its nested outage of the 5 meters left out closed when they came back
    held = requests.get(f"{stack.urls['adms']}/outages", timeout=5).json()["outages"]
    kinds = sorted((o["Outage"]["kind"], o["verb"], o["Outage"].get("closedReason")) for o in held)
    assert kinds == [("feeder", "closed", "restored"), ("nested", "closed", "restored")], kinds
    nested = next(o for o in held if o["Outage"]["kind"] == "nested")
    feeder = next(o for o in held if o["Outage"]["kind"] == "feeder")
    assert nested["Outage"]["parentOutage"] == feeder["mRID"] and len(nested["Outage"]["meters"]) == 5
    assert [m["verb"] for m in feeder["messages"]] == ["created", "changed", "closed"]
    # and the outage store behind `gridbus outages list` agrees, with nothing left unsent
    store = open_outage_store(Path(stack.env["GRIDBUS_HOME"]) / "state" / "outages.sqlite")
    assert store.counts() == {"closed": 2, "unsent_messages": 0}
    # and the HES stand-ins have every meter back
    for hes in ("hes-a", "hes-b"):
        assert requests.get(f"{stack.urls[hes]}/_outages", timeout=5).json()["count"] == 0
