"""The request stack of use cases 6-8 as real processes, for the tests that need it.

billing → gateway → MDMS → gateway → HES: a real gateway and request worker on the
shipped request routes, an MDMS and two HES stand-ins, the meter assignment table
(meters 1-200: odd ones on HES-A, even ones on HES-B).  The ``rr`` fixture
(tests/integration/conftest.py) yields the dict ``request_stack`` builds.
"""
from __future__ import annotations

import datetime as dt

import requests
import yaml

from bus.broker_admin import BrokerAdmin
from tests.support import Mdms, Proc, ROOT, free_port, gridbus, run_cli, wait_for

REQUEST_ROUTES = ROOT / "routes" / "uc6-7-8-requests.yaml"
UC1_ROUTES = ROOT / "routes" / "uc1-meter-data-files.yaml"
WAITING_ROUTES = ("billing-1-determinants,billing-1-reads,billing-1-commands,billing-2-commands,"
                  "mdms-1-reads-to-hes,mdms-1-commands-to-hes,reply-callbacks")
KWH_IMP, KWH_EXP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
KVAH_IMP = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.71.0"
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def meter(n: int) -> str:
    return f"UPM{n:08d}"


def request_stack(bus_env, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    # meters 1-200: odd ones on HES-A, even ones on HES-B (the assignment table)
    assignment = tmp_path / "assignment.csv"
    assignment.write_text("meter,hes\n" + "".join(f"{meter(n)},{'hes-a' if n % 2 else 'hes-b'}\n"
                                                  for n in range(1, 201)))
    # the shipped request routes, with the sync wait of on-demand reads shortened to 3 s
    doc = yaml.safe_load(REQUEST_ROUTES.read_text())
    for route in doc["routes"]:
        if route["id"] == "billing-1-reads":
            route["source"]["timeout_s"] = 3
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / REQUEST_ROUTES.name).write_text(yaml.safe_dump(doc))
    (routes / UC1_ROUTES.name).write_text(UC1_ROUTES.read_text())
    env = {**bus_env, "GRIDBUS_ROUTES": str(routes), "GRIDBUS_METER_ASSIGNMENT": str(assignment)}
    keys = {s: run_cli(env, "gateway", "keys", "add", s).stdout.strip()
            for s in ("billing-1", "mdms-1", "hes-a")}
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    hes = {name: Mdms(env, logs, name, "simulators.hes") for name in ("hes-a", "hes-b")}
    mdms = Mdms(env, logs, "mdms-1", args=("--bus-url", f"{gateway}/v1/requests/mdms-1",
                                           "--bus-key", keys["mdms-1"]))
    env.update({"MDMS_1_URL": mdms.url, "HES_A_URL": hes["hes-a"].url, "HES_B_URL": hes["hes-b"].url})
    procs = [Proc("gateway", gridbus("gateway", "--port", str(port)), env, logs).start(),
             Proc("worker-requests", gridbus("worker", "--pool", "asyncio", "--routes", WAITING_ROUTES),
                  env, logs).start()]
    admin = BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1])

    def ready():
        try:
            return requests.get(f"{gateway}/health", timeout=1).ok and all(
                admin.queue(f"gridbus.route.{r}").get("consumers", 0) > 0 for r in WAITING_ROUTES.split(","))
        except Exception:
            return False
    wait_for(ready, 60, "the gateway and the request worker")
    stack = {"url": gateway, "keys": keys, "env": env, "mdms": mdms, "logs": logs, "procs": procs, "tmp": tmp_path,
             **hes}
    yield stack
    for p in stack["procs"]:
        p.stop()
    for s in (mdms, *hes.values()):
        s.stop()


def ask(rr, path: str, request: dict, system: str = "billing-1", header: dict | None = None, user: str = "alice"):
    return requests.post(f"{rr['url']}/v1/requests/{path}", timeout=30,
                         json={"Header": header or {}, "Request": request},
                         headers={"X-API-Key": rr["keys"][system], "X-User": user})


def status(rr, request_id: str, system: str = "billing-1") -> dict:
    return requests.get(f"{rr['url']}/v1/requests/{request_id}", timeout=10,
                        headers={"X-API-Key": rr["keys"][system]}).json()


def hes_asked(rr) -> int:
    """Requests the two HES have received, answered or not."""
    return sum(requests.get(f"{rr[h].url}/stats", timeout=5).json()["arrivals"] for h in ("hes-a", "hes-b"))


def hes_control(hes, **faults) -> None:
    requests.post(f"{hes.url}/_meters", json=faults, timeout=5).raise_for_status()


def command(command_id: str, action: str, meters: list[str], **extra) -> dict:
    return {"commandId": command_id, "action": action, "meters": meters, **extra}
