"""The request stack of use cases 6-8 as real processes, for the tests that need it.

billing → gateway → MDMS → gateway → HES: a real gateway and request worker on the
shipped request routes, an MDMS and two HES stand-ins, the meter assignment table
(meters 1-200: odd ones on HES-A, even ones on HES-B).  Building it takes 12-15 s, so the
request tests share one (``RequestStack``, the ``rr`` fixture of tests/integration/conftest.py),
made as good as new before each test.
"""
from __future__ import annotations

import datetime as dt
import sqlite3
import warnings
from pathlib import Path

import requests
import yaml

from bus.broker_admin import BrokerAdmin
from bus.requests.store import requests_path
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


class RequestStack(dict):
    """The stack, built once and shared by the request tests (the ``rr`` fixture).

    A dict, as the tests have always used it: ``url``, ``keys``, ``env``, ``mdms``, ``hes-a``,
    ``hes-b``, ``logs``, ``tmp`` and ``procs`` (``procs[0]`` the gateway, ``procs[1]`` the request
    worker; a test appends what it starts and may replace ``mdms``).  ``prepare()`` runs before
    every test and gives it what a fresh stack would have been, for what a test can observe:
    every process alive and consuming, no request in flight anywhere, the stand-ins empty and
    without faults, no operator accounts.  What a test leaves behind in the gateway's request
    store (its requests and commands, by their own ids) stays: tests use ids of their own
    (test_request_faults.py and test_requests.py share one stack: ids unique across both).
    """

    def __init__(self, new_env):
        super().__init__()
        self._new_env = new_env  # () -> (environment with a vhost of its own, an empty folder)
        self._build()

    # -- building --------------------------------------------------------------------------
    def _build(self) -> None:
        bus_env, tmp_path = self._new_env()
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
        self.update(url=gateway, keys=keys, env=env, mdms=mdms, logs=logs, tmp=tmp_path, **hes)
        self._port = port
        self._admin = BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1])
        self._standins = {name: self[name] for name in STAND_INS}  # the ones the stack started or adopted
        self["procs"] = [self._gateway(), self._worker()]
        wait_for(self._ready, 60, "the gateway and the request worker")

    def _gateway(self) -> Proc:
        return Proc("gateway", gridbus("gateway", "--port", str(self._port)), self["env"], self["logs"]).start()

    def _worker(self) -> Proc:
        return Proc("worker-requests", gridbus("worker", "--pool", "asyncio", "--routes", WAITING_ROUTES),
                    self["env"], self["logs"]).start()

    def _consumers(self) -> list[int]:
        return [self._admin.queue(f"gridbus.route.{r}").get("consumers", 0) for r in WAITING_ROUTES.split(",")]

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self['url']}/health", timeout=1).ok and all(self._consumers())
        except Exception:
            return False

    # -- between tests ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Restore what the last test damaged, wait for what it left in flight, then reset."""
        try:
            self._restore()
        except (AssertionError, requests.RequestException) as exc:
            # not settled in time, or a process not answering: start over with a new stack rather
            # than hand the next test one in an unknown state (warned, so that it is noticed)
            warnings.warn(f"the request stack did not settle after the last test; built anew: {exc}")
            self.stop()
            self.clear()
            self._build()
        self._reset()

    def _restore(self) -> None:
        procs = self["procs"]
        base, extras = procs[:2], procs[2:]
        # A stand-in a test restarted on its port with the same command line (the MDMS killed
        # with SIGKILL and started again) is adopted; any other process a test started is stopped.
        adopted = set()
        for name in STAND_INS:
            started = self[name]
            if started is not self._standins[name] and _alive(started.proc) \
                    and started.proc.argv == self._standins[name].proc.argv:
                self._standins[name] = started
                adopted.add(id(started.proc))
            elif started is not self._standins[name]:
                started.stop()
        # So is a gateway or request worker a test started in place of the one it killed, if it
        # runs with the stack's command line (not a gateway with another retention, say).
        for i, proc in enumerate(base):
            if not _alive(proc):
                twin = next((p for p in extras if _alive(p) and p.argv == proc.argv and id(p) not in adopted), None)
                if twin is not None:
                    base[i] = twin
                    adopted.add(id(twin))
        for proc in extras:
            if id(proc) not in adopted:
                proc.stop()
        # The stand-ins: faults cleared first (a stand-in told to drop connections fails /health),
        # then one that is dead or not answering is started again on its port.
        for name in STAND_INS:
            standin = self[name] = self._standins[name]
            try:
                self._clear_faults(name)
            except requests.RequestException:
                standin.proc.kill9()
                self[name] = self._standins[name] = _standin_again(standin, self["env"])
        # The gateway and the request worker: one that is dead is started again.
        if not _alive(base[0]):
            base[0] = self._gateway()
        if not _alive(base[1]):
            # the broker's consumer counts lag: wait until the dead worker's consumers are gone,
            # so that the counts seen next are the new worker's
            wait_for(lambda: not any(self._consumers()), 30, "the killed request worker's consumers to go")
            base[1] = self._worker()
        procs[:] = base
        wait_for(self._ready, 60, "the gateway and the request worker to consume again")
        # Nothing in flight: no HES still working on a request (a latency the last test set),
        # no request of the gateway's still waiting for its reply.
        wait_for(self._quiet, 60, "no request in flight (HES busy, or requests not replied)")

    def _clear_faults(self, name: str) -> None:
        standin = self[name]
        requests.post(f"{standin.url}/_control", json={"mode": "healthy"}, timeout=5).raise_for_status()
        if name != "mdms":
            requests.post(f"{standin.url}/_meters", json={"unreachable": [], "timeout": [], "latency_ms": 0},
                          timeout=5).raise_for_status()
        if not standin._healthy():
            raise requests.ConnectionError(f"{name} does not answer /health")

    def _quiet(self):
        in_flight = {}
        for name in ("hes-a", "hes-b"):
            s = self[name].stats()
            busy = s["arrivals"] - s["posts"] - s["rejected_posts"] - s["refused_posts"]
            if busy:
                in_flight[name] = busy
        store = requests_path(Path(self["env"]["GRIDBUS_HOME"]) / "state")
        if store.exists():
            db = sqlite3.connect(str(store), timeout=10)
            try:
                waiting = dict(db.execute("SELECT state, count(*) FROM requests WHERE state IN "
                                          "('requested', 'sent', 'unknown') GROUP BY state").fetchall())
            finally:
                db.close()
            if waiting:
                in_flight["gateway"] = waiting
        return True if not in_flight else _Busy(in_flight)

    def _reset(self) -> None:
        for name in STAND_INS:
            requests.post(f"{self[name].url}/_reset", timeout=5).raise_for_status()
        # operator accounts live beside the request store; only `gridbus operators` reads them
        state = Path(self["env"]["GRIDBUS_HOME"]) / "state"
        for suffix in ("", "-wal", "-shm", "-journal"):
            (state / f"operators.sqlite{suffix}").unlink(missing_ok=True)

    def stop(self) -> None:
        for p in self.get("procs", ()):
            p.stop()
        for name in STAND_INS:
            for s in {id(s): s for s in (self.get(name), self._standins.get(name)) if s is not None}.values():
                s.stop()


STAND_INS = ("hes-a", "hes-b", "mdms")


class _Busy(dict):
    """What is still in flight: false for ``wait_for``, shown in its message when it times out."""

    def __bool__(self) -> bool:
        return False


def _alive(proc: Proc) -> bool:
    return proc.popen is not None and proc.popen.poll() is None


def _standin_again(old: Mdms, env: dict) -> Mdms:
    """The stand-in started again on its port (the routes and the MDMS name that address)."""
    again = Mdms.__new__(Mdms)
    again.port, again.url = old.port, old.url
    again.proc = Proc(old.proc.name, list(old.proc.argv), env, old.proc.log_path.parent).start()
    wait_for(again._healthy, 20, f"{old.proc.name} to listen again")
    return again


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
