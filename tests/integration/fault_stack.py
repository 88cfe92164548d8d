"""The bus as real processes for the broker fault tests (alarms, a node killed).

Use case 1 (HES files → ingress → worker → MDMS-1), use cases 2/4/5 (HES alarms
pushed to the gateway → worker → MDMS-1, WFM, FMS, ADMS) and use case 7's on-demand
reads (MDMS-1 → gateway → request worker on an event loop → HES-A/HES-B → back), on
whatever broker URL the environment names: one node of the test's own, or the three
addresses of a cluster.  What the tests count is at the destinations: the stand-ins' stores.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

from bus.broker_admin import BrokerAdmin
from tests.support import Mdms, Proc, ROOT, free_port, gridbus, run_cli, serving, wait_for

ROUTE_FILES = tuple(ROOT / "routes" / name for name in
                    ("uc1-meter-data-files.yaml", "uc2-4-5-alarms.yaml", "uc6-7-8-requests.yaml"))
STAND_INS = {"mdms-1": ("simulators.mdms", "MDMS_1_URL"), "wfm": ("simulators.wfm", "WFM_URL"),
             "fms": ("simulators.fms", "FMS_URL"), "adms": ("simulators.adms", "ADMS_URL"),
             "hes-a": ("simulators.hes", "HES_A_URL"), "hes-b": ("simulators.hes", "HES_B_URL")}
CONSUMED = {"worker": ("hes-a-csv-to-mdms-1", "hes-a-alarms", "critical-to-mdms-1", "outage-to-adms"),
            "requests": ("mdms-1-reads-to-hes",)}
# gridbus processes by name: (command line, what it must consume before it counts as ready)
COMMANDS = {"worker": ("worker", "-c", "2", "--kind", "deliveries"),
            "requests": ("worker", "--pool", "asyncio", "--kind", "requests"),
            "ingress": ("ingress",), "keeper": ("keeper",), "recorder": ("recorder",)}


class FaultStack:
    """Stand-ins, then gateway, worker and ingress (``start``); stopped with ``stop``."""

    def __init__(self, env: dict, tmp: Path, management_url: str, vhost: str = "/"):
        self.tmp, self.logs = tmp, tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.inbox = tmp / "inbox"
        self.systems = {name: Mdms(env, self.logs, name, module) for name, (module, _) in STAND_INS.items()}
        routes = tmp / "routes"
        routes.mkdir(exist_ok=True)
        for path in ROUTE_FILES:
            shutil.copy(path, routes / path.name)
        # meters 1-200: odd ones on HES-A, even ones on HES-B
        assignment = tmp / "assignment.csv"
        assignment.write_text("meter,hes\n" + "".join(f"UPM{n:08d},{'hes-a' if n % 2 else 'hes-b'}\n"
                                                      for n in range(1, 201)))
        self.env = {**env, "GRIDBUS_ROUTES": str(routes), "GRIDBUS_INBOX": str(self.inbox),
                    "GRIDBUS_METER_ASSIGNMENT": str(assignment),
                    "GRIDBUS_OUTBOX": str(tmp / "outbox"), "GRIDBUS_MANAGEMENT_URL": management_url,
                    **{var: self.systems[name].url for name, (_, var) in STAND_INS.items()}}
        self.admin = BrokerAdmin(management_url, vhost)
        self.key = run_cli(self.env, "gateway", "keys", "add", "hes-a").stdout.strip()
        self.mdms_key = run_cli(self.env, "gateway", "keys", "add", "mdms-1").stdout.strip()
        self.procs: dict[str, Proc] = {}
        self.url = ""

    @property
    def mdms(self) -> Mdms:
        return self.systems["mdms-1"]

    def start(self, *names: str) -> "FaultStack":
        for name in names or ("gateway", "worker", "ingress"):
            if name == "gateway":
                port = free_port()
                self.url = f"http://127.0.0.1:{port}"
                self.procs[name] = Proc(name, gridbus("gateway", "--port", str(port)), self.env, self.logs).start()
            else:
                self.procs[name] = Proc(name, gridbus(*COMMANDS[name]), self.env, self.logs).start()
        wait_for(self._ready, 90, f"the processes and their consumers ({self.log_tails()})")
        return self

    def _ready(self) -> bool:
        try:
            if "gateway" in self.procs and not serving(f"{self.url}/health"):
                return False
            return all(self.admin.queue(f"gridbus.route.{r}").get("consumers", 0) > 0
                       for name in self.procs for r in CONSUMED.get(name, ()))
        except Exception:  # noqa: BLE001 - the topology is not there yet
            return False

    def log_tails(self, chars: int = 1500) -> str:
        return "; ".join(f"{n}: {p.log()[-chars:]}" for n, p in self.procs.items())

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        for system in self.systems.values():
            system.stop()

    # -- alarms through the gateway ------------------------------------------------------
    def push(self, alarms: list[dict], timeout_s: float = 10) -> requests.Response:
        return requests.post(f"{self.url}/v1/push/hes-a/alarms", json=alarms, timeout=timeout_s,
                             headers={"X-API-Key": self.key})

    def push_until_accepted(self, alarms: list[dict], within_s: float = 90) -> int:
        """As an HES does: send again after each 503, as Retry-After says; returns how many tries."""
        tries, deadline = 0, time.monotonic() + within_s
        while True:
            tries += 1
            try:
                answer = self.push(alarms)
            except requests.RequestException:  # the gateway itself is being restarted
                answer = None
            if answer is not None and answer.status_code == 202:
                return tries
            assert answer is None or answer.status_code == 503, answer.text
            assert time.monotonic() < deadline, f"not accepted within {within_s}s ({self.log_tails()})"
            time.sleep(min(1.0, float(answer.headers.get("Retry-After", 1)) if answer is not None else 1.0))

    # -- on-demand reads through the gateway ----------------------------------------------
    def read(self, n: int, timeout_s: float = 30) -> requests.Response:
        """MDMS-1 asks for meter ``n``'s reading now (answered by HES-A or HES-B through the bus)."""
        return requests.post(f"{self.url}/v1/requests/mdms-1/meter-readings", timeout=timeout_s,
                             json={"Header": {}, "Request": {"meters": [f"UPM{n:08d}"]}},
                             headers={"X-API-Key": self.mdms_key, "X-User": "alice"})

    # -- files through the ingress -------------------------------------------------------
    def generate(self, *args: str, seed: int = 1) -> dict:
        staging = self.tmp / "staging"
        done = subprocess.run([sys.executable, "-m", "simulators.hes_files", "--out", str(staging),
                               "--seed", str(seed), *args], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def drop(self, path: Path, folder: str = "hes-a") -> Path:
        """Write-then-rename into the inbox, as an HES would."""
        target_dir = self.inbox / folder
        target_dir.mkdir(parents=True, exist_ok=True)
        tmp = target_dir / f".{path.name}.part"
        shutil.copyfile(path, tmp)
        tmp.replace(target_dir / path.name)
        return target_dir / path.name

    def reports(self, folder: str = "hes-a") -> list[dict]:
        archive = self.inbox / folder / "archive"
        return [json.loads(p.read_text()) for p in archive.rglob("*.report.json")] if archive.exists() else []

    def rejected(self, folder: str = "hes-a") -> list[str]:
        rejected = self.inbox / folder / "rejected"
        return sorted(p.name for p in rejected.iterdir()) if rejected.exists() else []


def alarm(n: int, code: int = 101) -> dict:
    """A last gasp (IS 15959 code 101: outage and critical, so MDMS-1 and the ADMS both get it)."""
    return {"alarm_id": f"hes-a-{n:06d}-{code}", "meter": f"UPM{n:08d}", "code": code,
            "occurred_at": "2026-11-01T10:15:02+05:30", "received_at": "2026-11-01T10:15:30+05:30"}
