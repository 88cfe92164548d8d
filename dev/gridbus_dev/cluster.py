"""A RabbitMQ cluster of N project-local nodes on this machine (dev stack, tests, benchmarks).

Each node is a node of its own as ``devstack.start_rabbitmq`` makes one (node name, AMQP,
management and distribution ports, data folder, ``$HOME``), and they share one Erlang cookie.

How they cluster.  A new cluster: node 1 boots first, then nodes 2..N boot side by side and join
it during that one boot by classic-config peer discovery (node 1 their only peer).  Serial,
because 3.10's classic config takes no lock: nodes that all boot blank at once may each form a
cluster of one.  Peer discovery rather than ``stop_app`` / ``join_cluster`` / ``start_app``
after a standalone boot, because that boots each node twice (about 20 s a node here).  Then a
check: a node not in node 1's cluster (its discovery gave up) is joined explicitly, which fails
loudly, naming the node.  An existing cluster (data folders there): every node starts at once,
since a node restarted after a full stop waits for the peers that stopped after it.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import requests

from bus.errors import GridbusError
from gridbus_dev import devstack
from gridbus_dev.pids import alive, descendants, wait_gone

START_TIMEOUT_S = 120
CTL_TIMEOUT_S = 60
# the dev stack's cluster; apart from the single dev node (5679/15679/25679) and from the random
# ports pytest-rabbitmq and the tests' clusters take
DEV_AMQP_PORTS = (5691, 5692, 5693)
DEV_MANAGEMENT_PORTS = (15691, 15692, 15693)
DEV_DIST_PORTS = (25691, 25692, 25693)
NORMAL_MEMORY_WATERMARK = 0.4
NORMAL_DISK_FREE_LIMIT = 200_000_000  # as devstack's rabbitmq.conf (disk_free_limit.absolute = 200MB)


@dataclass
class Node:
    index: int  # 1-based, as the node names
    name: str
    amqp_port: int
    management_port: int
    dist_port: int
    base: Path
    pid: int | None = None  # the beam process, once started
    seed: str | None = None  # the node a blank node joins at its first boot (node 1)

    @property
    def log_file(self) -> Path:
        return self.base / "log" / f"{self.name}.log"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def env(self) -> dict[str, str]:
        # a RABBITMQ_* of the caller (pytest-rabbitmq sets some) must not leak into this node
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env = devstack.rabbit_env(self.base, self.amqp_port, self.management_port, self.dist_port, self.name)
        env = {**clean, **{k: v for k, v in env.items() if k.startswith("RABBITMQ_") or k == "HOME"}}
        # our own config file, not the rabbitmq.conf rabbit_env writes: a cluster node also
        # needs its peer discovery
        env["RABBITMQ_CONFIG_FILE"] = str(self._write_config())
        # the distribution listens on loopback only, as AMQP and management do
        env["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] = "-kernel inet_dist_use_interface {127,0,0,1}"
        return env

    @property
    def is_blank(self) -> bool:
        return not (self.base / "mnesia" / self.name).exists()

    def _write_config(self) -> Path:
        lines = [f"management.tcp.port = {self.management_port}", "management.tcp.ip = 127.0.0.1",
                 "loopback_users = none", "disk_free_limit.absolute = 200MB"]
        if self.seed:  # read by a blank node only (its first boot); a clustered node ignores it
            lines += ["cluster_formation.peer_discovery_backend = classic_config",
                      f"cluster_formation.classic_config.nodes.1 = {self.seed}"]
        config = self.base / "cluster.conf"
        config.write_text("\n".join(lines) + "\n")
        return config.with_suffix("")  # RabbitMQ adds .conf itself


@dataclass(frozen=True)
class QueueMembers:
    name: str
    leader: str | None
    members: tuple[str, ...]
    online: tuple[str, ...]

    @property
    def offline(self) -> tuple[str, ...]:
        return tuple(m for m in self.members if m not in self.online)


@dataclass(frozen=True)
class NodeState:
    node: Node
    running: bool
    alarms: tuple[str, ...]  # "memory", "disk"


@dataclass
class Cluster:
    nodes: list[Node]
    cookie: str
    _wrappers: dict[int, subprocess.Popen] = field(default_factory=dict)

    # -- addresses ---------------------------------------------------------------------------
    def broker_url(self, vhost: str = "/", user: str = "guest", password: str = "guest") -> str:
        """The ``;``-separated setting every gridbus process reads (bus/messaging/addresses.py)."""
        path = "/" if vhost == "/" else quote(vhost, safe="")
        return ";".join(f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{n.amqp_port}/{path}"
                        for n in self.nodes)

    def node(self, i: int) -> Node:
        return self.nodes[i - 1]

    # -- processes ---------------------------------------------------------------------------
    def _launch(self, node: Node) -> None:
        if not self.cookie:
            self.cookie = _cookie(node.base.parent)
        _write_cookie(node.base, self.cookie)
        env = node.env()
        out = open(node.base / "server.out", "ab")
        self._wrappers[node.index] = subprocess.Popen(
            [str(devstack.RABBIT_BIN / "rabbitmq-server")], env=env, stdout=out, stderr=out,
            stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()

    def _wait_booted(self, node: Node, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        wrapper = self._wrappers.get(node.index)
        while not (devstack.port_open(node.amqp_port) and devstack.port_open(node.management_port)):
            if wrapper is not None and wrapper.poll() is not None:
                raise GridbusError(f"RabbitMQ node {node.name} exited with {wrapper.returncode} while starting; "
                                   f"see {node.log_file} and {node.base / 'server.out'}")
            if time.monotonic() > deadline:
                raise GridbusError(f"RabbitMQ node {node.name} did not open AMQP {node.amqp_port} and management "
                                   f"{node.management_port} within {timeout_s:.0f}s; see {node.log_file}")
            time.sleep(0.2)
        node.pid = _beam_pid(node, wrapper)

    def ctl(self, node: Node, *args: str, timeout_s: float = CTL_TIMEOUT_S, tool: str = "rabbitmqctl") -> str:
        """``rabbitmqctl`` (or another CLI tool) against ``node``; a failure is a GridbusError
        naming the node and its log."""
        argv = [str(devstack.RABBIT_BIN / tool), "-n", node.name, *args]
        what = f"{tool} {' '.join(args)} on {node.name}"
        try:
            done = subprocess.run(argv, env=node.env(), capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise GridbusError(f"{what} took over {timeout_s:.0f}s; see {node.log_file}") from exc
        if done.returncode != 0:
            raise GridbusError(f"{what} failed: {(done.stderr or done.stdout).strip()[:300]}; see {node.log_file}")
        return done.stdout

    @staticmethod
    def _retrying(call, timeout_s: float):
        """``call()``, tried again while it fails for up to ``timeout_s``: a node that has just
        booted (or joined) may refuse a CLI connection for a moment."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return call()
            except GridbusError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def running_nodes(self, via: Node) -> list[str]:
        status = json.loads(self.ctl(via, "cluster_status", "--formatter", "json"))
        return list(status.get("running_nodes", []))

    def wait_all_running(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every node is booted and ``cluster_status`` on each running one lists all N."""
        want = {n.name for n in self.nodes}
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                with ThreadPoolExecutor(len(self.nodes)) as pool:  # each rabbitmqctl boots a VM: ~1 s
                    seen = [set(r) for r in pool.map(self.running_nodes, self.nodes)]
                if all(s == want for s in seen):
                    return
                last = f"running_nodes: {[sorted(s) for s in seen]}"
            except GridbusError as exc:
                last = str(exc)
            time.sleep(0.5)
        raise GridbusError(f"the cluster of {', '.join(sorted(want))} did not show all nodes running within "
                           f"{timeout_s:.0f}s ({last}); logs: {', '.join(str(n.log_file) for n in self.nodes)}")

    def join(self, node: Node, seed: Node, timeout_s: float = 30) -> None:
        if seed.name in self._retrying(lambda: self.running_nodes(node), timeout_s):
            return  # joined by peer discovery, or clustered before (a restart of an existing cluster)
        self.ctl(node, "stop_app")
        self.ctl(node, "join_cluster", seed.name)
        self.ctl(node, "start_app")

    def start(self, i: int, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start node ``i`` again (after ``kill`` or ``stop``) and wait until it rejoined."""
        node = self.node(i)
        if node.pid and alive(node.pid):
            return
        self._launch(node)
        self._wait_booted(node, timeout_s)
        self.wait_all_running(timeout_s)

    def stop(self, i: int, timeout_s: float = CTL_TIMEOUT_S) -> None:
        """Stop node ``i`` gracefully (``rabbitmqctl stop``: it hands its quorum leaderships over)."""
        node = self.node(i)
        if node.pid and alive(node.pid):
            self.ctl(node, "stop", timeout_s=timeout_s)
            wait_gone(node.pid, 15)
        self._reap(node)

    def kill(self, i: int) -> None:
        """kill -9 node ``i``'s beam and its children, as a crash or a lost host would."""
        node = self.node(i)
        pids = [p for p in (node.pid, *(descendants(node.pid) if node.pid else ())) if p]
        wrapper = self._wrappers.get(node.index)
        for pid in [*pids, *([wrapper.pid] if wrapper else [])]:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if node.pid:
            wait_gone(node.pid, 10)
        self._reap(node)

    def _reap(self, node: Node) -> None:
        wrapper = self._wrappers.pop(node.index, None)
        if wrapper is not None:
            try:
                wrapper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                wrapper.kill()
        node.pid = None

    def stop_all(self, graceful: bool = True) -> None:
        """Every node down: gracefully (else kill -9: a test's throw-away cluster), and kill -9
        where a graceful stop fails, so a teardown never hangs."""
        for node in reversed(self.nodes):
            try:
                if not graceful:
                    raise GridbusError("not graceful")
                self.stop(node.index, timeout_s=30)
            except GridbusError:
                self.kill(node.index)
            if node.pid is None:
                # a node found running from an earlier process (its beam is not our child)
                leftover = _pid_from_file(node)
                if leftover:
                    node.pid = leftover
                    self.kill(node.index)

    # -- what the cluster holds --------------------------------------------------------------
    def _management(self, path: str) -> list | dict:
        errors = []
        for node in self.nodes:  # any running node answers for the whole cluster
            try:
                response = requests.get(f"http://127.0.0.1:{node.management_port}/api/{path}",
                                        auth=("guest", "guest"), timeout=10)
            except requests.RequestException as exc:
                errors.append(f"{node.name}: {exc.__class__.__name__}")
                continue
            if response.ok:
                return response.json()
            errors.append(f"{node.name}: HTTP {response.status_code}")
        raise GridbusError(f"no node's management API answered /api/{path} ({'; '.join(errors)})")

    def queues(self, vhost: str = "/") -> list[dict]:
        """Every queue of ``vhost``: name, type and depth."""
        return self._management(f"queues/{quote(vhost, safe='')}?columns=name,type,messages")

    def queue_members(self, vhost: str = "/") -> list[QueueMembers]:
        """Each quorum queue's leader, members and online members."""
        queues = self._management(f"queues/{quote(vhost, safe='')}?columns=name,type,leader,members,online")
        return sorted((QueueMembers(q["name"], q.get("leader"), tuple(q.get("members") or ()),
                                    tuple(q.get("online") or ()))
                       for q in queues if q.get("type") == "quorum"), key=lambda q: q.name)

    def node_states(self) -> list[NodeState]:
        """Per node: running or not, and its resource alarms, from ``cluster_status`` of the
        first node that answers (the management API's alarm flags lag by a stats interval)."""
        errors = []
        for via in self.nodes:
            if not devstack.port_open(via.dist_port):
                continue
            try:
                status = json.loads(self.ctl(via, "cluster_status", "--formatter", "json", timeout_s=20))
            except (GridbusError, ValueError) as exc:
                errors.append(str(exc))
                continue
            running = set(status.get("running_nodes", []))
            alarms = [(a.get("node"), a.get("resource")) for a in status.get("alarms", [])]
            return [NodeState(n, n.name in running, tuple(r for node, r in alarms if node == n.name))
                    for n in self.nodes]
        if errors:
            raise GridbusError("no node answered cluster_status: " + "; ".join(errors))
        return [NodeState(n, False, ()) for n in self.nodes]

    def rebalance(self) -> None:
        """Spread the quorum queues' leaders over the running nodes.  A queue's leader is first the
        node its declaring client was connected to (node 1 for a whole topology applied at
        once), so one lost node would otherwise cost every queue an election at once."""
        node = next((n for n in self.nodes if n.pid and alive(n.pid)), self.nodes[0])
        self.ctl(node, "rebalance", "quorum", tool="rabbitmq-queues")

    def set_memory_alarm(self, i: int, on: bool) -> None:
        # a watermark far below what the node uses trips the alarm at once; publishers block
        self.ctl(self.node(i), "set_vm_memory_high_watermark", "0.0000001" if on else str(NORMAL_MEMORY_WATERMARK))

    def set_disk_alarm(self, i: int, on: bool) -> None:
        # a free-space limit no disk has (1 PB) trips it at once; setting it re-checks the disk
        self.ctl(self.node(i), "set_disk_free_limit", str(10 ** 15 if on else NORMAL_DISK_FREE_LIMIT))


# Ports below the ephemeral range (32768+), so no client socket takes one between the pick and the
# node's bind; and below 25535, since rabbitmqctl listens on its node's distribution port + 10000.
FREE_PORT_RANGE = (21000, 25400)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports in FREE_PORT_RANGE, none of the dev stack's."""
    dev = {5679, 15679, 25679, *DEV_AMQP_PORTS, *DEV_MANAGEMENT_PORTS, *DEV_DIST_PORTS}
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(*FREE_PORT_RANGE)
        if port in chosen or port in dev:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


def plan_nodes(base: Path, n: int, amqp_ports, management_ports, dist_ports, prefix: str = "gridbus-dev") -> list[Node]:
    if not 1 <= n <= len(amqp_ports) == len(management_ports) == len(dist_ports):
        raise GridbusError(f"a cluster of {n} nodes needs {n} AMQP, management and distribution ports each")
    names = [f"{prefix}-{i}@localhost" for i in range(1, n + 1)]
    return [Node(i, names[i - 1], amqp_ports[i - 1], management_ports[i - 1], dist_ports[i - 1],
                 base / f"node-{i}", seed=names[0] if i > 1 else None) for i in range(1, n + 1)]


def start_cluster(base: Path, n: int = 3, amqp_ports=DEV_AMQP_PORTS, management_ports=DEV_MANAGEMENT_PORTS,
                  dist_ports=DEV_DIST_PORTS, prefix: str = "gridbus-dev", log=lambda _line: None) -> Cluster:
    """Start (or find running) ``n`` nodes under ``base`` and cluster them; returns once
    ``cluster_status`` shows all ``n`` running.  The cookie is made once and kept in ``base``."""
    devstack.ensure_rabbitmq_installed()
    base.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(plan_nodes(base, n, amqp_ports, management_ports, dist_ports, prefix), _cookie(base))
    to_start = []
    for node in cluster.nodes:
        node.base.mkdir(parents=True, exist_ok=True)
        running = _pid_from_file(node)
        if running and devstack.port_open(node.amqp_port):
            node.pid = running
            log(f"rabbitmq   {node.name} already running (pid {running})")
            continue
        for port in (node.amqp_port, node.management_port, node.dist_port):
            if devstack.port_open(port):
                raise GridbusError(f"port {port} of RabbitMQ node {node.name} is taken by another process")
        to_start.append(node)
    seed = cluster.nodes[0]
    try:
        if seed in to_start and seed.is_blank:  # a new cluster: its seed first (see the module's doc)
            cluster._launch(seed)
            cluster._wait_booted(seed)
            to_start.remove(seed)
        for node in to_start:
            cluster._launch(node)
        for node in to_start:
            cluster._wait_booted(node)
        for node in cluster.nodes[1:]:
            cluster.join(node, seed)
        cluster.wait_all_running()
    except BaseException:
        cluster.stop_all(graceful=False)  # never leave half a cluster behind
        raise
    for node in cluster.nodes:
        log(f"rabbitmq   {node.name}  amqp://127.0.0.1:{node.amqp_port}  management "
            f"http://127.0.0.1:{node.management_port}  pid {node.pid}")
    return cluster


def attach(base: Path, n: int, amqp_ports=DEV_AMQP_PORTS, management_ports=DEV_MANAGEMENT_PORTS,
           dist_ports=DEV_DIST_PORTS, prefix: str = "gridbus-dev") -> Cluster:
    """The cluster under ``base`` as a running one left it (for `dev status` and `dev down`);
    nothing is written, and a folder never used is a cluster of nodes not running."""
    cookie = (base / "cookie").read_text().strip() if (base / "cookie").exists() else ""
    cluster = Cluster(plan_nodes(base, n, amqp_ports, management_ports, dist_ports, prefix), cookie)
    for node in cluster.nodes:
        node.pid = _pid_from_file(node)
    return cluster


# -- helpers ---------------------------------------------------------------------------------
def _cookie(base: Path) -> str:
    path = base / "cookie"
    if not path.exists():
        path.write_text(os.urandom(20).hex().upper())
        path.chmod(0o600)
    return path.read_text().strip()


def _write_cookie(home: Path, cookie: str) -> None:
    # Erlang refuses a cookie readable by others; one written earlier is 0400, so chmod first
    path = home / ".erlang.cookie"
    if path.exists():
        if path.read_text() == cookie:
            return
        path.chmod(0o600)
    path.write_text(cookie)
    path.chmod(0o400)


def _pid_from_file(node: Node) -> int | None:
    """The node's beam pid from its pid file (RABBITMQ_PID_FILE), if that process still runs a beam."""
    try:
        pid = int((node.base / "rabbit.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # a reused pid is not our node: its command line names the node's own folder
    return pid if alive(pid) and b"\x00-home\x00" + str(node.base).encode() + b"\x00" in cmdline else None


def _beam_pid(node: Node, wrapper: subprocess.Popen | None) -> int | None:
    # rabbitmq-server is a shell script running erl in the background: the beam is its child
    pid = _pid_from_file(node)
    if pid or wrapper is None:
        return pid
    for child in descendants(wrapper.pid):
        try:
            if Path(f"/proc/{child}/comm").read_text().startswith("beam"):
                return child
        except OSError:
            continue
    return None
