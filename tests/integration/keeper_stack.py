"""A dead-letter keeper on one route, as a real process, and the store it writes (the keeper tests):
a SQLite file in its home, or, with ``state_url``, the PostgreSQL state store (emptied first)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import requests

from bus import naming
from bus.messaging.connect import connect
from bus.deadletters.store import DeadLetter, DeadLetterStore
from tests.keeper_state import DEAD_LETTER_TABLES, clean
from tests.support import Mdms, Proc, gridbus, run_cli, wait_for

ROUTE = "keeper-route"


class KeeperStack:
    """One route with its topology applied, the keeper as a process, and the store file it writes."""

    def __init__(self, env: dict, tmp: Path, refusing_destination: bool = False, route: str = ROUTE,
                 state_url: str = ""):
        self.route, self.state_url = route, state_url
        if state_url:
            clean(state_url, *DEAD_LETTER_TABLES)
            env = {**env, "GRIDBUS_STATE_STORE": state_url}
        self.tmp, self.logs = tmp, tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.mdms = self.worker = self.keeper = None
        destination_url = "http://127.0.0.1:9/messages"  # no batch is sent unless there is a worker
        if refusing_destination:
            self.mdms = Mdms(env, self.logs)
            self.mdms.control(mode="error", status=400)
            destination_url = f"{self.mdms.url}/messages"
        routes = tmp / "routes"
        routes.mkdir(exist_ok=True)
        (routes / "keeper.yaml").write_text(textwrap.dedent(f"""\
            use_case: 1
            routes:
              - id: {route}
                source: {{system: hes-t, connector: file-drop, path: "{tmp / 'inbox'}", pattern: "*.csv"}}
                method: file-batch
                transform: ["hes_a_csv", "to_mdms_json"]
                destinations:
                  - {{system: mdms-t, connector: rest, url: "{destination_url}", timeout_s: 2}}
                retry: {{attempts: 1, first_delay_s: 1, max_delay_s: 1, jitter: 0}}
            """))
        self.env = {**env, "GRIDBUS_ROUTES": str(routes)}
        applied = run_cli(self.env, "routes", "apply")
        assert applied.returncode == 0, applied.stderr
        self.store_path = Path(env["GRIDBUS_HOME"]) / "state" / "dead-letters.sqlite"
        self._store: DeadLetterStore | None = None

    def start_keeper(self, *args: str) -> Proc:
        self.keeper = Proc("keeper", gridbus("keeper", *args), self.env, self.logs).start()
        wait_for(lambda: self.queue(naming.dead_letter_queue_name(self.route)).get("consumers", 0) > 0, 30,
                 f"the keeper to consume the dead-letter queue (log: {self.keeper.log()[-2000:]})")
        return self.keeper

    def stop_keeper(self) -> int:
        """SIGTERM, as a supervisor stops it; returns its exit code."""
        self.keeper.stop()
        return self.keeper.popen.returncode

    def start_worker(self) -> Proc:
        self.worker = Proc("worker", gridbus("worker", "-c", "2"), self.env, self.logs).start()
        wait_for(lambda: self.queue(naming.route_queue_name(self.route)).get("consumers", 0) > 0, 60,
                 f"the worker to consume (log: {self.worker.log()[-2000:]})")
        return self.worker

    def send(self, text: str, name: str) -> str:
        path = self.tmp / name
        path.write_text(text)
        done = run_cli(self.env, "send", self.route, str(path))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def queue(self, name: str) -> dict:
        """The queue as the management API sees it (its counts lag; used for consumers only)."""
        vhost = self.env["GRIDBUS_BROKER_URL"].rsplit("/", 1)[1]
        api = self.env["GRIDBUS_MANAGEMENT_URL"].replace("guest:guest@", "")
        r = requests.get(f"{api}/api/queues/{vhost}/{name}", auth=("guest", "guest"), timeout=5)
        return r.json() if r.ok else {}

    def ready(self) -> int:
        """Dead letters ready in the dead-letter queue now, from the broker itself.  With no
        keeper running, that is every dead letter a keeper took but did not ack."""
        conn = connect(self.env["GRIDBUS_BROKER_URL"], "test-keeper-count")
        try:
            return conn.channel().queue_declare(naming.dead_letter_queue_name(self.route), passive=True).message_count
        finally:
            conn.close()

    def _opened(self) -> DeadLetterStore | None:
        # only once the keeper made the file: opening it here first would create it
        if self._store is None and (self.state_url or self.store_path.exists()):
            self._store = DeadLetterStore(self.store_path, url=self.state_url)
        return self._store

    def stored(self) -> list[DeadLetter]:
        """Every row of the store file, whatever its state."""
        store = self._opened()
        return store.select(states=("dead", "replaying", "replayed")) if store else []

    def count(self) -> int:
        """How many dead letters the store holds (no dead letter here is replayed); cheap to poll."""
        store = self._opened()
        return sum(g["count"] for g in store.summary()) if store else 0

    def stop(self) -> None:
        for proc in (self.keeper, self.worker, self.mdms):
            if proc is not None:
                proc.stop()
        if self._store is not None:
            self._store.close()
