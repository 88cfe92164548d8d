"""`gridbus bench ingest`: file drop → MDMS stored every read, gridbus beside the baseline.

Both pipelines run in the same invocation, on the same generated file, against
the same MDMS stand-in (reset between them) and the same RabbitMQ node (each in
a throw-away virtual host), so the ratio means something on a noisy machine.

Each run also counts the CPU seconds every process involved spent from the drop
(or the baseline's first publish) until the MDMS stored the last read, as
``bench rpc`` does per request (``procs.CpuMeter``): where a row's cost goes.
Processes started before that moment are counted from it (their start-up is not
part of the run), except the baseline publisher, which starts with the run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import requests

from bus.broker_admin import BrokerAdmin
from bus.settings import Settings
from gridbus_dev.bench.procs import CpuMeter, PeakRss, broker_pid, free_port, spawn, terminate, wait_http

ROUTE_ID = "bench-ingest"


@dataclass
class Run:
    pipeline: str
    reads: int          # interval rows in the file
    readings: int       # values the MDMS stored (6 per valid row)
    seconds: float
    peak_rss_mb: float | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)  # process → CPU seconds spent in the run

    @property
    def reads_per_s(self) -> float:
        return self.reads / self.seconds

    def cpu_s_per_1000_rows(self) -> dict[str, float]:
        return {name: 1000 * s / self.reads for name, s in self.cpu_s.items()} if self.reads else {}

    def summary(self) -> dict:
        """The run as the JSON output of ``gridbus bench ingest --json`` gives it."""
        return {"pipeline": self.pipeline, "reads": self.reads, "readings": self.readings,
                "seconds": round(self.seconds, 3), "reads_per_s": round(self.reads_per_s, 1),
                "peak_rss_mb": round(self.peak_rss_mb, 1) if self.peak_rss_mb else None,
                "cpu_s": {n: round(v, 3) for n, v in self.cpu_s.items()},
                "cpu_s_per_1000_rows": {n: round(v, 4) for n, v in self.cpu_s_per_1000_rows().items()}}


def _vhost_url(broker_url: str, vhost: str) -> str:
    """The broker URL setting with ``vhost`` on each of its addresses (a cluster's are ``;``-separated)."""
    from bus.messaging.addresses import broker_urls

    def one(url: str) -> str:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}/{vhost}"

    return ";".join(one(url) for url in broker_urls(broker_url))


def _wait_readings(mdms_url: str, expected: int, timeout_s: float, progress) -> None:
    deadline = time.monotonic() + timeout_s
    last = -1
    while time.monotonic() < deadline:
        stored = requests.get(f"{mdms_url}/stats", timeout=10).json()["readings"]
        if stored >= expected:
            return
        if progress and stored != last:
            progress(stored, expected)
            last = stored
        time.sleep(0.1)
    raise RuntimeError(f"MDMS stored {last} of {expected} readings within {timeout_s:.0f}s")


# the shipped HES-A route (routes/ of this checkout): its declarative mapping is what csv_readings runs
SHIPPED_ROUTES = Path(__file__).resolve().parents[3] / "routes" / "uc1-meter-data-files.yaml"
DECODERS = ("csv_readings", "hes_a_csv")


def hes_a_mapping() -> dict:
    """The ``options`` of the shipped HES-A CSV route (its csv_readings mapping)."""
    import yaml

    try:
        doc = yaml.safe_load(SHIPPED_ROUTES.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuntimeError(f"bench ingest reads the HES-A mapping from {SHIPPED_ROUTES}: {exc}") from exc
    return next(r for r in doc["routes"] if r["id"] == "hes-a-csv-to-mdms-1")["options"]


def _route_file(path: Path, inbox: Path, mdms_url: str, batch_size: int, decoder: str = "csv_readings") -> None:
    """``decoder``: csv_readings with the shipped HES-A mapping, or the Python hes_a_csv it replaced."""
    path.write_text(json.dumps({  # JSON is YAML: no templating needed
        "use_case": 1, "routes": [{
            "id": ROUTE_ID, "method": "file-batch",
            "source": {"system": "hes-bench", "connector": "file-drop", "path": str(inbox),
                       "pattern": "*.csv", "settle_s": 0.1},
            "transform": [decoder, "to_mdms_json"],
            **({"options": hes_a_mapping()} if decoder == "csv_readings" else {}),
            "destinations": [{"system": "mdms-bench", "connector": "rest", "url": f"{mdms_url}/messages"}],
            "queue": {"batch_size": batch_size}}]}))


def generate(out: Path, reads: int, log, *extra: str) -> dict:
    argv = [sys.executable, "-m", "simulators.hes_files", "--out", str(out), "--rows", str(reads),
            "--profile", "block-load", "--format", "csv", "--seed", "7", "--file-name", "bench.csv", *extra]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def bench_ingest(reads: int, batch_size: int, concurrency: int, work: Path, baseline: bool,
                 echo=print, progress=None, tracing_modes: tuple[bool, ...] = (True,),
                 decoders: tuple[str, ...] = ("csv_readings",)) -> list[Run]:
    """One gridbus run per (decoder, tracing mode), in the order given (a decoder may repeat, to
    alternate on a noisy machine), then the baseline."""
    settings = Settings.load()
    admin = BrokerAdmin(settings.management_url)
    vhost = f"gridbus-bench-{os.getpid()}"
    admin.create_vhost(vhost)
    url = _vhost_url(settings.broker_url, vhost)
    staging, inbox, home = work / "staging", work / "inbox", work / "home"
    for d in (staging, inbox, home):
        d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GRIDBUS_BROKER_URL": url, "GRIDBUS_HOME": str(home),
           "GRIDBUS_ENV_FILE": str(home / "none.env"), "GRIDBUS_ROUTES": str(work / "routes.yaml")}
    procs = []
    runs: list[Run] = []
    source = None
    try:
        port = free_port()
        mdms_url = f"http://127.0.0.1:{port}"
        mdms = spawn([sys.executable, "-m", "simulators.mdms", "--port", str(port), "--name", "mdms-bench"],
                     env, work / "mdms.log")
        procs.append(mdms)
        wait_http(f"{mdms_url}/health")
        shared = {"rabbitmq": broker_pid(urlparse(settings.broker_url).port or 5672), "MDMS stand-in": mdms.pid}
        shared = {name: pid for name, pid in shared.items() if pid}  # rabbitmq: unless on another host
        echo(f"generating {reads:,} block-load rows ...")
        summary = generate(staging, reads, echo)
        expected = summary["expected_readings"]
        source = Path(summary["path"])
        timeout = max(120.0, reads / 2000)

        admin_v = BrokerAdmin(settings.management_url, vhost)
        archived = None
        variants = [(d, t) for d in decoders for t in tracing_modes]
        for number, (decoder, tracing) in enumerate(variants):
            _route_file(work / "routes.yaml", inbox, mdms_url, batch_size, decoder)
            label = "gridbus" + ({True: " (tracing on)", False: " (tracing off)"}[tracing]
                                 if len(tracing_modes) > 1 else "") + (f" [{decoder}]" if len(decoders) > 1 else "")
            run_home = work / f"home-{number}-{'traced' if tracing else 'untraced'}"
            run_env = {**env, "GRIDBUS_HOME": str(run_home), "GRIDBUS_TRACING": "on" if tracing else "off"}
            run_procs = []
            try:
                worker = spawn([sys.executable, "-m", "bus.cli.main", "worker", "-c", str(concurrency),
                                "--loglevel", "WARNING"], run_env, work / f"worker-{tracing}.log")
                run_procs.append(worker)
                ingress = spawn([sys.executable, "-m", "bus.cli.main", "ingress", "--loglevel", "WARNING"],
                                run_env, work / f"ingress-{tracing}.log")
                run_procs.append(ingress)
                # the worker's tree: Celery's main process and its forked pool children
                pids = {"ingress": ingress.pid, "worker": worker.pid}
                if tracing:  # the recorder shares the machine: its CPU is part of what tracing costs
                    recorder = spawn([sys.executable, "-m", "bus.cli.main", "recorder", "--loglevel",
                                      "WARNING"], run_env, work / "recorder.log")
                    run_procs.append(recorder)
                    pids["recorder"] = recorder.pid
                _wait_consumers(admin_v, f"gridbus.route.{ROUTE_ID}", 60)
                time.sleep(1.0)  # let the pool children finish importing
                requests.post(f"{mdms_url}/_reset", timeout=10).raise_for_status()
                echo(f"{label}: dropping the file ...")
                cpu = CpuMeter({**pids, **shared})
                started = time.perf_counter()
                before = cpu.snapshot()
                with PeakRss(worker.pid) as rss:
                    os.replace(source, inbox / source.name)
                    _wait_readings(mdms_url, expected, timeout, progress)
                    seconds = time.perf_counter() - started
                cpu_s = cpu.delta(before, cpu.snapshot())
                runs.append(Run(label, summary["rows_written"], expected, seconds, rss.peak / 2 ** 20, cpu_s))
            finally:
                for p in reversed(run_procs):
                    terminate(p)
            [archived] = list((inbox / "archive").rglob("bench.csv"))
            os.replace(archived, source)  # the same file again for the next run (new home: new ledger)
            shutil.rmtree(inbox / "archive", ignore_errors=True)
        archived = source
        if baseline:
            requests.post(f"{mdms_url}/_reset", timeout=10).raise_for_status()
            queue = "baseline.reads"
            consumers = [spawn([sys.executable, "-m", "gridbus_dev.bench.baseline", "consume", url, queue, mdms_url],
                               env, work / f"baseline-consumer-{i}.log") for i in range(concurrency)]
            procs.extend(consumers)
            time.sleep(1.0)
            echo("baseline: publishing ...")
            cpu = CpuMeter({"baseline consumers": tuple(c.pid for c in consumers), **shared})
            started = time.perf_counter()
            before = cpu.snapshot()
            with PeakRss(consumers[0].pid) as rss:
                publisher = spawn([sys.executable, "-m", "gridbus_dev.bench.baseline", "publish", url, queue,
                                   str(archived), str(batch_size), str(concurrency)], env,
                                  work / "baseline-publisher.log")
                procs.append(publisher)
                # counted from its start (nothing before it); its CPU stays readable once it has
                # exited, until terminate() below waits for it
                cpu.pids["baseline publisher"] = publisher.pid
                _wait_readings(mdms_url, expected, timeout, progress)
                seconds = time.perf_counter() - started
            cpu_s = cpu.delta(before, cpu.snapshot())
            runs.append(Run("baseline (pika)", summary["rows_written"], expected, seconds,
                            rss.peak / 2 ** 20, cpu_s))
    finally:
        for p in reversed(procs):
            terminate(p)
        admin.delete_vhost(vhost)
    return runs


def _wait_consumers(admin: BrokerAdmin, queue: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if admin.queue(queue).get("consumers", 0) > 0:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no worker consumed {queue} within {timeout_s}s")
