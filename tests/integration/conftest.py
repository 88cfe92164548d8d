"""The use-case-1 stack as real processes: MDMS stand-in, gridbus worker and ingress."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from bus.broker_admin import BrokerAdmin
from tests.integration.request_stack import RequestStack
from tests.support import Mdms, Proc, ROOT, gridbus, wait_for

ROUTES = ROOT / "routes" / "uc1-meter-data-files.yaml"  # the use-case-1 routes only


class Uc1Stack:
    def __init__(self, env: dict, tmp: Path):
        self.env = env
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.mdms = Mdms(env, self.logs)
        self.env["MDMS_1_URL"] = self.mdms.url
        self.env["GRIDBUS_ROUTES"] = str(ROUTES)
        self.inbox = Path(env["GRIDBUS_INBOX"])
        self.mdms2_inbox = Path(env["GRIDBUS_OUTBOX"]) / "mdms-2"
        self.admin = BrokerAdmin(env["GRIDBUS_MANAGEMENT_URL"], env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1])
        self.worker = self.start_worker()
        self.ingress = Proc("ingress", gridbus("ingress"), env, self.logs).start()
        self.wait_consumers()

    def start_worker(self) -> Proc:
        return Proc("worker", gridbus("worker", "-c", "2"), self.env, self.logs).start()

    def wait_consumers(self, timeout_s: float = 60) -> None:
        def consumed():
            try:
                return all(self.admin.queue(f"gridbus.route.{r}").get("consumers", 0) > 0
                           for r in ("hes-a-csv-to-mdms-1", "hes-a-xml-to-mdms-1", "hes-b-csv-to-mdms-2"))
            except Exception:
                return False
        wait_for(consumed, timeout_s, f"worker consumers (worker log: {self.worker.log()[-2000:]})")

    def generate(self, *args: str, seed: int = 1) -> dict:
        """Run the HES file generator into a staging folder; returns its summary."""
        staging = self.tmp / "staging"
        done = subprocess.run([sys.executable, "-m", "simulators.hes_files", "--out", str(staging),
                               "--seed", str(seed), *args], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def drop(self, path: Path, folder: str = "hes-a", name: str | None = None) -> Path:
        """Write-then-rename into the inbox, as an HES would."""
        target_dir = self.inbox / folder
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / (name or path.name)
        tmp = target_dir / f".{target.name}.part"
        shutil.copyfile(path, tmp)
        tmp.replace(target)
        return target

    def report(self, name: str, folder: str = "hes-a", timeout_s: float = 60) -> dict:
        archive = self.inbox / folder / "archive"

        def found():
            hits = list(archive.rglob(f"{name}.report.json")) if archive.exists() else []
            return json.loads(hits[0].read_text()) if hits else None
        return wait_for(found, timeout_s, f"the reconciliation report of {name} "
                        f"(ingress log: {self.ingress.log()[-1500:]}; worker log: {self.worker.log()[-1500:]})")

    def rejected(self, name: str, folder: str = "hes-a", timeout_s: float = 30) -> str:
        reason = self.inbox / folder / "rejected" / f"{name}.reason"
        wait_for(reason.exists, timeout_s, f"{name} in rejected/ (ingress log: {self.ingress.log()[-1500:]})")
        return reason.read_text()

    def stop(self) -> None:
        for proc in (self.ingress, self.worker):
            proc.stop()
        self.mdms.stop()


@pytest.fixture
def uc1(bus_env, tmp_path):
    stack = Uc1Stack(dict(bus_env), tmp_path)
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def shared_request_stack(rabbitmq_proc, management_url, tmp_path_factory):
    """One request stack for the session's request tests (12-15 s to build), in a vhost and home
    of its own: test_request_faults.py and test_requests.py run one after the other."""
    auth, vhosts = ("guest", "guest"), []

    def new_env() -> tuple[dict, Path]:
        # as the bus_env fixture, once per stack rather than per test
        name = f"rr-{uuid.uuid4().hex[:10]}"
        requests.put(f"{management_url}/api/vhosts/{name}", auth=auth, timeout=10).raise_for_status()
        requests.put(f"{management_url}/api/permissions/{name}/guest", auth=auth, timeout=10,
                     json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        vhosts.append(name)
        tmp = tmp_path_factory.mktemp("request-stack")
        (tmp / "home").mkdir()
        return {**os.environ,
                "GRIDBUS_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{rabbitmq_proc.port}/{name}",
                "GRIDBUS_MANAGEMENT_URL": management_url.replace("http://", "http://guest:guest@"),
                "GRIDBUS_HOME": str(tmp / "home"), "GRIDBUS_ENV_FILE": str(tmp / "home" / "none.env"),
                "GRIDBUS_INBOX": str(tmp / "inbox"), "GRIDBUS_OUTBOX": str(tmp / "outbox"),
                "PYTHONUNBUFFERED": "1"}, tmp
    stack = RequestStack(new_env)
    yield stack
    stack.stop()
    for name in vhosts:
        requests.delete(f"{management_url}/api/vhosts/{name}", auth=auth, timeout=30)


@pytest.fixture
def rr(shared_request_stack):
    """The request stack of use cases 6-8 (tests/integration/request_stack.py), shared by the
    request tests: before each, what the last one killed is restarted, what it left in flight
    is waited for, and the stand-ins and operator accounts are reset."""
    shared_request_stack.prepare()
    return shared_request_stack
