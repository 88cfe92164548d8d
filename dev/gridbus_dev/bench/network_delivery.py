"""The delivery leg of use case 9 (issue 18): a feeder reconfiguration moving 100 DTs, from the
GIS's POST to the last consumer stored at both billing systems, beside a hand-written baseline in
the same run.  ``gridbus bench network`` runs it after the import figures (on the store those
built, 1,000,000 consumers); ``gridbus bench network --only delivery`` runs it alone on a store of
``--consumers`` it builds first.

    python -m gridbus_dev.bench.network_delivery [--consumers 100000] [--dts 100] [--json]

Every process is a throw-away one on loopback: a RabbitMQ node of its own in the work folder
(``devstack.rabbit_env`` on free ports), the gateway with the
GIS push route, one `gridbus network publish`, two `gridbus network deliver` on the shipped
billing routes, and the two billing stand-ins (billing-1 JSON, billing-2 XML).

* **Before the clock**: the network's creates are in the store and marked published (billing
  already has the network), and both stand-ins hold version 1 of every consumer about to move
  (posted directly), so each moved consumer's new version replaces an older one, as in billing.
* **gridbus**: one change document moving ``dts`` DTs (whole feeders' worth: the 20 DTs of one
  feeder onto the next feeder) POSTed to the gateway; the clock runs from the POST until both
  stand-ins have stored every moved consumer's new version (their ``/stats``, polled every 50 ms).
  Then: zero 409s at both, and every moved consumer at its last outbox version with the new DT
  and feeder at both.
* **baseline**: the stand-ins reset and given version 1 again, then the same new paths (read
  from the outbox) POSTed straight to both by a minimal client: per stand-in as many threads as
  the routes have partitions (4: the parallelism gridbus has), each POSTing its share one batch
  after another in the routes' batch sizes, encoded by the same two transformers gridbus uses (the
  same bytes), a keep-alive session each.  No broker, no store, no outbox, no order bookkeeping:
  what encoding, HTTP and the stand-ins cost, so the difference is what the bus adds.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import requests

import bus
from bus.network.path_body import path_of
from gridbus_dev.bench.procs import CpuMeter, free_port, spawn, terminate, wait_http

ROOT = Path(bus.__file__).resolve().parents[1]
GIS_ROUTES = ROOT / "routes" / "uc9-network.yaml"
GIS_PATH = "gis/network"
TARGET_S = 10.0
POLL_S = 0.05
# the baseline's batch sizes: the shipped routes' batch_max
BASELINE_BATCH = {"billing-1": 500, "billing-2": 200}


def _gridbus(*args: str) -> list[str]:
    return [sys.executable, "-m", "bus.cli.main", *args]


def billing_routes_file() -> Path:
    """The shipped billing routes file (the delivery processes' default), as an absolute path."""
    from bus.network.delivery_routes import DEFAULT_FILE

    return DEFAULT_FILE if DEFAULT_FILE.is_absolute() else ROOT / DEFAULT_FILE


# -- a broker -------------------------------------------------------------------------------
@contextmanager
def broker(work: Path, say) -> Iterator[tuple[str, int | None]]:
    """(AMQP URL, the node's pid): a RabbitMQ node of our own in ``work`` on free loopback ports,
    stopped afterwards.  Not the dev stack's node: on a shared machine another session's `gridbus
    dev down` must not end the run, and nothing else queues on this one."""
    from gridbus_dev import devstack

    devstack.ensure_rabbitmq_installed()
    base = work / "rabbitmq"
    amqp_port, management_port, dist_port = free_port(), free_port(), free_port()
    env = devstack.rabbit_env(base, amqp_port, management_port, dist_port,
                              f"gridbus-bench-{uuid.uuid4().hex[:8]}@localhost")
    (base / "enabled_plugins").write_text("[].\n")  # no management: nothing here reads it
    say(f"broker: a RabbitMQ node of its own on port {amqp_port} ({base})")
    node = spawn([str(devstack.RABBIT_BIN / "rabbitmq-server")], env, base / "server.out")
    try:
        devstack.wait_for_port(amqp_port, 120, "rabbitmq-server")
        yield f"amqp://guest:guest@127.0.0.1:{amqp_port}/%2F", _beam_pid(node.pid)
    finally:
        subprocess.run([str(devstack.RABBIT_BIN / "rabbitmqctl"), "stop"], env=env, capture_output=True,
                       timeout=60, check=False)
        terminate(node, 30)


def _beam_pid(pid: int) -> int:
    """The Erlang VM under rabbitmq-server's shell script (for CPU accounting)."""
    import psutil

    try:
        for child in psutil.Process(pid).children(recursive=True):
            if child.name().startswith("beam"):
                return child.pid
    except psutil.Error:
        pass
    return pid


# -- the network ----------------------------------------------------------------------------
def build_store(path: Path, consumers: int, say) -> None:
    """The regular network of ``consumers`` (bench/network.py's ``creates``) into a new store."""
    from bus.network.store import open_store
    from gridbus_dev.bench.network import creates

    say(f"building a network of {consumers:,} consumers")
    start = time.perf_counter()
    open_store(path).apply(creates(consumers), document_id="bench-network")
    say(f"  built in {time.perf_counter() - start:.1f} s")


def mark_all_published(path: Path) -> int:
    """Billing already has the network: its creates' outbox rows are not this leg's to deliver."""
    db = sqlite3.connect(str(path), timeout=60)
    try:
        with db:
            return db.execute("UPDATE outbox SET published_at = ? WHERE published_at IS NULL",
                              (time.time(),)).rowcount
    finally:
        db.close()


def moving_dts(path: Path, dts: int) -> list[tuple[str, str, str]]:
    """(DT, its feeder, the feeder it moves to): the DTs of the first feeders in mRID order, the
    first feeder's onto the second, the third's onto the fourth, ..., ``dts`` in all."""
    from bus.network.store import open_store

    store = open_store(path)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        feeders = [f for (f,) in db.execute("SELECT DISTINCT mrid FROM elements WHERE type = 'feeder' ORDER BY mrid")]
    finally:
        db.close()
    out: list[tuple[str, str, str]] = []
    for source, target in zip(feeders[0::2], feeders[1::2]):  # each even feeder's DTs onto the next
        for dt in store.children(source):
            if len(out) < dts:
                out.append((dt, source, target))
    return out


def move_document(store_path: Path, moves: list[tuple[str, str, str]]) -> dict:
    from bus.network.store import open_store

    seq = open_store(store_path).last_sequence()
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    tag = uuid.uuid4().hex[:6]
    changes = [{"changeId": f"reconf-{tag}-{i}", "sequence": seq + i + 1, "effectiveFrom": now, "kind": "move",
                "type": "dt", "mrid": dt, "parent": to, "attributes": {}}
               for i, (dt, _from, to) in enumerate(moves)]
    return {"Header": {"Verb": "changed", "Noun": "NetworkChanges", "MessageID": f"reconf-{tag}"},
            "Payload": {"changes": changes}}


def consumers_under(store_path: Path, dts: list[str]) -> list[str]:
    from bus.network.store import open_store

    store = open_store(store_path)
    out: list[str] = []
    for dt in dts:
        out += sorted(c for c in store.children(dt))
    return out


def last_paths(store_path: Path, consumers: list[str]) -> dict[str, dict]:
    """Each consumer's newest outbox update body (what billing must end up holding)."""
    db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    out: dict[str, dict] = {}
    try:
        for i in range(0, len(consumers), 500):
            part = consumers[i:i + 500]
            for c, v, change_id, body in db.execute(
                    f"SELECT consumer, version, change_id, body FROM outbox WHERE consumer IN "
                    f"({','.join('?' * len(part))}) ORDER BY consumer, version", part):
                out[c] = path_of(body, c, v, change_id)
    finally:
        db.close()
    return out


def outbox_pending(store_path: Path) -> int:
    db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").fetchone()[0]
    except sqlite3.OperationalError:
        return -1
    finally:
        db.close()


# -- the baseline client --------------------------------------------------------------------
def post_direct(url: str, fmt: str, paths: list[dict], batch: int) -> int:
    """POST ``paths`` to a billing stand-in in batches, one after another; returns the POSTs."""
    from bus.transform import TransformContext
    from transformers.billing_network_json import BillingNetworkJson
    from transformers.billing_network_xml import BillingNetworkXml

    encode = BillingNetworkJson() if fmt == "json" else BillingNetworkXml()
    session = requests.Session()
    posts = 0
    for i in range(0, len(paths), batch):
        context = TransformContext(route_id="direct", source_system="direct", message_id=f"direct-{i}",
                                   correlation_id=f"direct-{i}")
        out = encode(paths[i:i + batch], context)
        answer = session.post(f"{url}/consumers/updates", data=out.body, headers={"Content-Type": out.content_type},
                              timeout=60)
        if answer.status_code != 200:
            raise RuntimeError(f"{url} answered {answer.status_code} to the direct client: {answer.text[:300]}")
        posts += 1
    session.close()
    return posts


def post_both(billing: dict[str, tuple[str, str]], paths: list[dict], connections: int = 1
              ) -> tuple[float, dict[str, float]]:
    """Both stand-ins at once, ``connections`` threads each (thread k takes the k-th share of the
    paths): (seconds until both answered their last POST, each one's)."""
    done: dict[str, float] = {}
    errors: list[BaseException] = []
    start = time.perf_counter()

    def one(name: str, url: str, fmt: str, share: list[dict]) -> None:
        try:
            post_direct(url, fmt, share, BASELINE_BATCH[name])
            done[name] = max(done.get(name, 0.0), time.perf_counter() - start)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    size = -(-len(paths) // connections)
    threads = [threading.Thread(target=one, args=(n, u, f, paths[k * size:(k + 1) * size]))
               for n, (u, f) in billing.items() for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return max(done.values()), done


# -- the stand-ins ----------------------------------------------------------------------------
def stats(url: str) -> dict:
    return requests.get(f"{url}/stats", timeout=10).json()


def held_versions(url: str) -> dict[str, dict]:
    return requests.get(f"{url}/consumers", timeout=60).json()["consumers"]


def reset(url: str) -> None:
    requests.post(f"{url}/_reset", timeout=10).raise_for_status()


def _wait_consuming(broker_url: str, queues: list[str], logs: list[Path], timeout_s: float) -> None:
    """Until each queue has a consumer and every delivery process has subscribed (its log says so)."""
    from bus.messaging import connect

    deadline = time.monotonic() + timeout_s
    why = ""
    while time.monotonic() < deadline:
        try:
            conn = connect(broker_url, "gridbus-bench-wait")
            try:
                ch = conn.channel()
                counts = [ch.queue_declare(q, passive=True)[2] for q in queues]
            finally:
                conn.close()
        except Exception as exc:  # noqa: BLE001 - not declared yet
            counts, why = [0], repr(exc)
        if min(counts) >= 1 and all(p.exists() and "delivering" in p.read_text(errors="replace") for p in logs):
            return
        time.sleep(0.3)
    raise RuntimeError(f"the delivery processes did not consume {queues} within {timeout_s:.0f}s {why}")


def bench_delivery(work: Path, consumers: int = 100_000, dts: int = 100, store_path: Path | None = None,
                   baseline: bool = True, routes_file: Path | None = None, say=lambda m: None) -> dict:
    """The delivery leg in one run (module doc).  ``store_path``: a store already holding the
    network (bench/network.py's document store); else one of ``consumers`` is built."""
    from bus.network.delivery_routes import load_billing_routes
    from bus.network.delivery_topology import partition_queue_name

    work.mkdir(parents=True, exist_ok=True)
    home = work / "delivery-home"
    (home / "state").mkdir(parents=True, exist_ok=True)
    if store_path is None:
        store_path = home / "state" / "network.sqlite"
        build_store(store_path, consumers, say)
    marked = mark_all_published(store_path)
    moves = moving_dts(store_path, dts)
    moved = consumers_under(store_path, [dt for dt, _, _ in moves])
    before = last_paths(store_path, moved)
    routes_file = Path(routes_file or billing_routes_file())
    out: dict = {"store": str(store_path), "dts_moved": len(moves), "consumers_moved": len(moved),
                 "feeders_from": sorted({f for _, f, _ in moves}), "feeders_to": sorted({t for _, _, t in moves}),
                 "outbox_marked_published": marked, "routes_file": str(routes_file)}
    out["network_consumers"] = _count_consumers(store_path)
    say(f"moving {len(moves)} DTs ({len(moved):,} consumers) of a network of {out['network_consumers']:,} consumers")
    procs: dict[str, subprocess.Popen] = {}
    logs = work / "delivery-logs"
    logs.mkdir(exist_ok=True)
    with broker(work, say) as (broker_url, broker_pid):
        env = {**os.environ, "GRIDBUS_BROKER_URL": broker_url, "GRIDBUS_HOME": str(home),
               "GRIDBUS_ENV_FILE": str(home / "none.env"), "GRIDBUS_NETWORK_STORE": str(store_path),
               "GRIDBUS_ROUTES": str(work / "gis-routes"), "PYTHONUNBUFFERED": "1"}
        (work / "gis-routes").mkdir(exist_ok=True)
        (work / "gis-routes" / "uc9-network.yaml").write_text(GIS_ROUTES.read_text(encoding="utf-8"))
        try:
            billing: dict[str, tuple[str, str]] = {}
            for name, fmt in (("billing-1", "json"), ("billing-2", "xml")):
                port = free_port()
                procs[name] = spawn([sys.executable, "-m", "simulators.billing_network", "--format", fmt,
                                     "--port", str(port), "--name", name], env, logs / f"{name}.log")
                billing[name] = (f"http://127.0.0.1:{port}", fmt)
            env.update(BILLING_1_URL=billing["billing-1"][0], BILLING_2_URL=billing["billing-2"][0])
            key = subprocess.run(_gridbus("gateway", "keys", "add", "gis"), env=env, check=True,
                                 capture_output=True, text=True).stdout.strip()
            gw_port = free_port()
            procs["gateway"] = spawn(_gridbus("gateway", "--port", str(gw_port), "--rate-per-system", "0",
                                              "--loglevel", "WARNING"), env, logs / "gateway.log")
            for name in ("deliver-1", "deliver-2"):
                procs[name] = spawn(_gridbus("network", "deliver", "--routes", str(routes_file)), env,
                                    logs / f"{name}.log")
            procs["publisher"] = spawn(_gridbus("network", "publish", "--routes", str(routes_file)), env,
                                       logs / "publisher.log")
            gateway = f"http://127.0.0.1:{gw_port}"
            for url in [gateway, *(u for u, _ in billing.values())]:
                wait_http(f"{url}/health", 60)
            routes = load_billing_routes(routes_file, env=env)
            _wait_consuming(broker_url, [partition_queue_name(r.id, p) for r in routes for p in range(r.partitions)],
                            [logs / "deliver-1.log", logs / "deliver-2.log"], 90)
            out["routes"] = {r.id: {"partitions": r.partitions, "batch_max": r.batch_max, "window_ms": r.window_ms}
                             for r in routes}

            # billing holds the old paths of the consumers about to move
            old = [before[c] for c in moved]
            post_both(billing, old)
            preloaded = {n: stats(u)["stored"] for n, (u, _) in billing.items()}
            document = json.dumps(move_document(store_path, moves)).encode()
            meter = CpuMeter({**{n: p.pid for n, p in procs.items()},
                              **({"rabbitmq": broker_pid} if broker_pid else {})})
            out["load_average_at_post"] = round(os.getloadavg()[0], 2)
            cpu_before = meter.snapshot()
            say(f"gridbus: POST of {len(moves)} DT moves to the gateway ...")
            start = time.perf_counter()
            answer = requests.post(f"{gateway}/v1/push/{GIS_PATH}", data=document, timeout=300,
                                   headers={"Content-Type": "application/json", "X-API-Key": key})
            out["applied_s"] = round(time.perf_counter() - start, 2)
            reply = answer.json()
            if answer.status_code != 200 or reply["Reply"]["Result"] != "OK":
                raise RuntimeError(f"the gateway answered {answer.status_code}: {answer.text[:1000]}")
            out["changes_applied"] = reply.get("summary", {}).get("applied")
            times = _wait_stored(billing, preloaded, len(moved), store_path, start, timeout_s=300)
            cpu = CpuMeter.delta(cpu_before, meter.snapshot())
            out.update(times)
            out["seconds"] = max(times["billing-1_s"], times["billing-2_s"])
            out["cpu_s"] = {n: round(v, 2) for n, v in cpu.items()}
            out["met"] = out["seconds"] <= TARGET_S

            after = last_paths(store_path, moved)
            out["checks"] = _check(billing, after, moves)
            for name, (url, _) in billing.items():
                s = stats(url)
                out[f"{name}_stats"] = {k: s[k] for k in ("stored", "posts", "stale_409", "duplicates",
                                                            "failed_422", "updates_received")}
            out["posts_preload"] = {n: -(-len(old) // BASELINE_BATCH[n]) for n in billing}

            if baseline:
                for name in ("publisher", "deliver-1", "deliver-2", "gateway"):
                    terminate(procs.pop(name))
                new = [after[c] for c in moved]
                for url, _ in billing.values():
                    reset(url)
                post_both(billing, old)
                say(f"baseline: the same {len(new):,} paths POSTed straight to both stand-ins ...")
                connections = max(r.partitions for r in routes)
                out["baseline_connections"] = connections
                out["baseline_s"], each = post_both(billing, new, connections)
                out["baseline_each_s"] = {n: round(v, 2) for n, v in each.items()}
                out["baseline_s"] = round(out["baseline_s"], 2)
                out["baseline_checks"] = _check(billing, after, moves)
        except BaseException:
            say(f"logs in {logs}")
            raise
        finally:
            for p in procs.values():
                terminate(p)
    out.update(load_average=os.getloadavg()[0], cores=os.cpu_count())
    return out


def _count_consumers(store_path: Path) -> int:
    db = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM path_versions").fetchone()[0]
    finally:
        db.close()


def _wait_stored(billing: dict[str, tuple[str, str]], preloaded: dict[str, int], expected: int, store_path: Path,
                 start: float, timeout_s: float) -> dict:
    """Seconds from ``start`` until the outbox was all published and each stand-in stored ``expected``
    new versions (beyond ``preloaded``)."""
    out: dict = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = time.perf_counter() - start
        if "published_s" not in out and outbox_pending(store_path) == 0:
            out["published_s"] = round(now, 2)
        for name, (url, _) in billing.items():
            if f"{name}_s" not in out and stats(url)["stored"] - preloaded[name] >= expected:
                out[f"{name}_s"] = round(time.perf_counter() - start, 2)
        if all(f"{n}_s" in out for n in billing):
            out.setdefault("published_s", None)
            return out
        time.sleep(POLL_S)
    raise RuntimeError(f"not every moved consumer stored within {timeout_s:.0f}s: "
                       + ", ".join(f"{n} {stats(u)}" for n, (u, _) in billing.items()))


def _check(billing: dict[str, tuple[str, str]], expected: dict[str, dict], moves) -> dict:
    """Zero 409s; every moved consumer at its last version with the new DT and feeder, at both."""
    to_feeder = {dt: to for dt, _, to in moves}
    out: dict = {}
    for name, (url, _) in billing.items():
        held = held_versions(url)
        wrong = [c for c, p in expected.items()
                 if c not in held or held[c]["version"] != p["version"]
                 or held[c]["path"]["dt"] != p["dt"] or held[c]["path"]["feeder"] != to_feeder.get(p["dt"])]
        out[name] = {"stale_409": stats(url)["stale_409"], "consumers_checked": len(expected),
                     "wrong": len(wrong), "wrong_examples": wrong[:5]}
    out["ok"] = all(v["stale_409"] == 0 and v["wrong"] == 0 for v in out.values() if isinstance(v, dict))
    return out


def table_rows(out: dict) -> list[list[str]]:
    """The leg as (measure, value) rows, for the network bench's table."""
    n = out["consumers_moved"]
    checks = out["checks"]
    rows = [
        [f"DT move: {out['dts_moved']} DTs ({n:,} consumers of {out['network_consumers']:,}) from the GIS POST "
         f"to the last consumer stored at both billing systems",
         f"{out['seconds']:.1f} s (target ≤ {TARGET_S:g}: {'met' if out['met'] else 'NOT met'})"],
        ["... gateway applied and answered / outbox all published",
         f"{out['applied_s']:.2f} s / {out['published_s'] if out['published_s'] is not None else '?'} s"],
        ["... billing-1 (JSON) / billing-2 (XML) stored all",
         f"{out['billing-1_s']:.2f} s / {out['billing-2_s']:.2f} s"],
        ["... POSTs to billing-1 / billing-2 (without the preload's)",
         f"{out['billing-1_stats']['posts'] - out['posts_preload']['billing-1']} / "
         f"{out['billing-2_stats']['posts'] - out['posts_preload']['billing-2']}"],
        ["... 409s / consumers at the wrong version or path, billing-1 + billing-2",
         f"{checks['billing-1']['stale_409'] + checks['billing-2']['stale_409']} / "
         f"{checks['billing-1']['wrong'] + checks['billing-2']['wrong']} of {2 * n:,} checked"],
        ["... CPU s by process", ", ".join(f"{k} {v:.1f}" for k, v in out["cpu_s"].items())],
        ["... load average (1 min) at the POST / at the end",
         f"{out.get('load_average_at_post', float('nan')):.1f} / {out['load_average']:.1f} on {out['cores']} cores"],
    ]
    if "baseline_s" in out:
        rows.append([f"baseline: the same {n:,} paths POSTed straight to both stand-ins "
                     f"({out.get('baseline_connections', 1)} connections each, batches of "
                     f"{BASELINE_BATCH['billing-1']} / {BASELINE_BATCH['billing-2']})",
                     f"{out['baseline_s']:.2f} s (billing-1 {out['baseline_each_s']['billing-1']:.2f}, "
                     f"billing-2 {out['baseline_each_s']['billing-2']:.2f}); "
                     f"{'checks ok' if out['baseline_checks']['ok'] else 'CHECKS FAILED'}"])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumers", type=int, default=100_000)
    parser.add_argument("--dts", type=int, default=100)
    parser.add_argument("--store", type=Path, help="A store holding the network already (else one is built).")
    parser.add_argument("--routes", type=Path, help="Billing routes file (default: the shipped one).")
    parser.add_argument("--dir", type=Path, help="Work folder (kept).")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import tempfile

    work = args.dir or Path(tempfile.mkdtemp(prefix="gridbus-bench-delivery-"))
    out = bench_delivery(work, args.consumers, args.dts, args.store, not args.no_baseline, args.routes,
                         say=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for measure, value in table_rows(out):
            print(f"{measure}: {value}")
    print(f"work folder: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
