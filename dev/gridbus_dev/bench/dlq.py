"""`gridbus bench dlq`: list and bulk-replay N dead letters, through the real command line.

N real dead letters are made the real way: an N-row file on a route with
batch size 1 into an MDMS stand-in that answers 400.  Then, each as a separate
`gridbus` process, timed from start to exit: `dlq list --group` (the first run
also moves the dead letters from the queue into the store), `dlq list --group`
again (store only), `dlq replay --all` with the MDMS fixed, and the time until
the MDMS has stored every replayed reading.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from gridbus_dev.bench.ingest import _vhost_url, _wait_consumers, generate
from gridbus_dev.bench.procs import free_port, spawn, terminate, wait_http
from bus.broker_admin import BrokerAdmin
from bus.settings import Settings

ROUTE_ID = "bench-dlq"


def _timed(argv: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv[3:])} failed: {done.stderr[-2000:]}")
    return elapsed, done


def bench_dlq(count: int, work: Path, echo=print) -> dict:
    settings = Settings.load()
    admin = BrokerAdmin(settings.management_url)
    vhost = f"gridbus-bench-dlq-{os.getpid()}"
    admin.create_vhost(vhost)
    vadmin = BrokerAdmin(settings.management_url, vhost)
    staging, inbox, home = work / "staging", work / "inbox", work / "home"
    for d in (staging, inbox, home):
        d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GRIDBUS_BROKER_URL": _vhost_url(settings.broker_url, vhost),
           "GRIDBUS_HOME": str(home), "GRIDBUS_ENV_FILE": str(home / "none.env"),
           "GRIDBUS_ROUTES": str(work / "routes.yaml")}
    gridbus = [sys.executable, "-m", "bus.cli.main"]
    procs = []
    try:
        port = free_port()
        mdms = f"http://127.0.0.1:{port}"
        procs.append(spawn([sys.executable, "-m", "simulators.mdms", "--port", str(port)], env, work / "mdms.log"))
        wait_http(f"{mdms}/health")
        requests.post(f"{mdms}/_control", json={"mode": "error", "status": 400}, timeout=5).raise_for_status()
        (work / "routes.yaml").write_text(json.dumps({"use_case": 1, "routes": [{
            "id": ROUTE_ID, "method": "file-batch",
            "source": {"system": "hes-bench", "connector": "file-drop", "path": str(inbox), "pattern": "*.csv",
                       "settle_s": 0.1},
            "transform": ["hes_a_csv", "to_mdms_json"],
            "destinations": [{"system": "mdms-bench", "connector": "rest", "url": f"{mdms}/messages"}],
            "retry": {"attempts": 1}, "queue": {"batch_size": 1}}]}))
        summary = generate(staging, count, echo, "--malformed-rows", "0")
        procs.append(spawn(gridbus + ["worker", "-c", "2", "--loglevel", "WARNING"], env, work / "worker.log"))
        procs.append(spawn(gridbus + ["ingress", "--loglevel", "WARNING"], env, work / "ingress.log"))
        _wait_consumers(vadmin, f"gridbus.route.{ROUTE_ID}", 60)
        echo(f"making {summary['rows_written']:,} dead letters (one per row, MDMS answers 400) ...")
        made = time.perf_counter()
        source = Path(summary["path"])
        os.replace(source, inbox / source.name)
        dlq = f"gridbus.dlq.{ROUTE_ID}"
        expected = summary["rows_written"] - len(summary["malformed_lines"])
        while vadmin.queue(dlq).get("messages", 0) < expected:
            if time.perf_counter() - made > 600:
                raise RuntimeError("dead letters were not all made within 600 s")
            time.sleep(0.5)
        made_s = time.perf_counter() - made
        # wait for the worker to go quiet so the timings below measure only the dlq tools
        while vadmin.queue(f"gridbus.route.{ROUTE_ID}").get("messages", 1):
            time.sleep(0.5)
        dead = vadmin.queue(dlq)["messages"]
        echo(f"{dead:,} dead letters in {made_s:.1f}s; timing the operator's commands ...")
        first_list_s, listed = _timed(gridbus + ["dlq", "list", "--group"], env)
        second_list_s, _ = _timed(gridbus + ["dlq", "list", "--group"], env)
        requests.post(f"{mdms}/_control", json={"mode": "healthy"}, timeout=5).raise_for_status()
        requests.post(f"{mdms}/_reset", timeout=5).raise_for_status()
        replay_s, _ = _timed(gridbus + ["dlq", "replay", "--all"], env)
        target = summary["expected_readings"]
        started = time.perf_counter() - replay_s
        while requests.get(f"{mdms}/stats", timeout=5).json()["readings"] < target:
            if time.perf_counter() - started > 600:
                raise RuntimeError("replayed dead letters not delivered within 600 s")
            time.sleep(0.2)
        delivered_s = time.perf_counter() - started
        return {"dead_letters": dead, "made_s": made_s, "list_first_s": first_list_s,
                "list_again_s": second_list_s, "replay_s": replay_s, "replay_delivered_s": delivered_s,
                "list_output": listed.stdout}
    finally:
        for p in reversed(procs):
            terminate(p)
        admin.delete_vhost(vhost)
