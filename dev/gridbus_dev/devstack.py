"""`gridbus dev up|down|status`: a project-local stack that never touches a system-wide node.

Everything lives under ``$GRIDBUS_HOME`` (default ``.gridbus/``): the RabbitMQ
node's data, logs and Erlang cookie, each process's pid file and log, and
``dev.env`` with the addresses the route files refer to.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bus.errors import GridbusError
from bus.settings import DEV_AMQP_PORT, DEV_MANAGEMENT_PORT

RABBIT_BIN = Path(os.environ.get("GRIDBUS_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
DEV_DIST_PORT = 25679
MDMS_1_PORT = 18101
# the other stand-ins: (name, module, port, the route files' variable for its address)
STAND_INS = (("mdms-1", "simulators.mdms", MDMS_1_PORT, "MDMS_1_URL"),
             ("wfm", "simulators.wfm", 18102, "WFM_URL"),
             ("fms", "simulators.fms", 18103, "FMS_URL"),
             ("adms", "simulators.adms", 18104, "ADMS_URL"),
             ("hes-a", "simulators.hes", 18105, "HES_A_URL"),
             ("hes-b", "simulators.hes", 18106, "HES_B_URL"),
             # use case 9: the GIS, and the two billing systems that take consumer paths
             ("gis", "simulators.gis", 18107, "GIS_URL"),
             ("billing-1", "simulators.billing_network", 18108, "BILLING_1_URL"),
             ("billing-2", "simulators.billing_network", 18109, "BILLING_2_URL"))
# The network every stand-in of the dev stack generates (simulators.network shared_recipe, read
# from GRIDBUS_DEV_NETWORK_*; the environment of `dev up` may override each): 2,000 consumers
# under 20 DTs, 4 feeders and 2 substations, meters UPM00010000..UPM00011999, so the demo's
# meters (HES files, requests, alarms) are the network's, and the demo can load it whole in seconds.
DEV_NETWORK = {"consumers": 2000, "seed": 1, "dts_per_feeder": 5, "feeders_per_substation": 2,
               "first_meter": 10_000}
GATEWAY_PORT = 18080
METRICS_PORT = 18190  # the recorder's Prometheus metrics
METRICS_URL = f"http://127.0.0.1:{METRICS_PORT}/metrics"
NODE_NAME = "gridbus-dev@localhost"


@dataclass(frozen=True)
class TlsNode:
    """A node that speaks TLS only (`dev up --tls`, the TLS tests): AMQP on the TLS listener alone
    (no plain one), the management API over HTTPS alone, both on 127.0.0.1.  Clients'
    certificates are verified against ``ca`` when shown (``verify_peer``), and required with
    ``require_client_cert``; ``cert_login`` enables SASL EXTERNAL (rabbitmq_auth_mechanism_ssl,
    the user named by the certificate's common name) beside passwords."""
    ca: Path
    cert: Path
    key: Path
    require_client_cert: bool = False
    cert_login: bool = False

    def config_lines(self, amqp_port: int, management_port: int) -> list[str]:
        files = [f"cacertfile = {self.ca}", f"certfile = {self.cert}", f"keyfile = {self.key}"]
        lines = ["listeners.tcp = none", f"listeners.ssl.default = 127.0.0.1:{amqp_port}",
                 *(f"ssl_options.{f}" for f in files), "ssl_options.verify = verify_peer",
                 f"ssl_options.fail_if_no_peer_cert = {'true' if self.require_client_cert else 'false'}",
                 f"management.ssl.port = {management_port}", "management.ssl.ip = 127.0.0.1",
                 *(f"management.ssl.{f}" for f in files)]
        if self.cert_login:
            lines += ["auth_mechanisms.1 = PLAIN", "auth_mechanisms.2 = AMQPLAIN", "auth_mechanisms.3 = EXTERNAL",
                      "ssl_cert_login_from = common_name"]
        return lines


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    port: int | None = None


def home() -> Path:
    return Path(os.environ.get("GRIDBUS_HOME", ".gridbus")).absolute()


def rabbit_env(base: Path, amqp_port: int, management_port: int, dist_port: int, node: str,
               tls: TlsNode | None = None) -> dict:
    """Environment for rabbitmq-server/rabbitmqctl of a node living in ``base`` (``tls``: TLS only)."""
    base.mkdir(parents=True, exist_ok=True)
    plugins = base / "enabled_plugins"
    plugins.write_text("[rabbitmq_management, rabbitmq_auth_mechanism_ssl].\n" if tls and tls.cert_login
                       else "[rabbitmq_management].\n")
    if tls is not None:
        # RABBITMQ_NODE_PORT / _IP_ADDRESS would open a plain listener beside the TLS one
        env = {k: v for k, v in os.environ.items() if k not in ("RABBITMQ_NODE_PORT", "RABBITMQ_NODE_IP_ADDRESS")}
        return {**env, "HOME": str(base), "RABBITMQ_NODENAME": node, "RABBITMQ_DIST_PORT": str(dist_port),
                # the distribution on loopback too, as the listeners
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
                "RABBITMQ_CONFIG_FILE": str(_write_config(base, management_port, tls.config_lines(amqp_port,
                                                                                                   management_port))),
                "RABBITMQ_PID_FILE": str(base / "rabbit.pid")}
    return {
        **os.environ,
        "HOME": str(base),  # the Erlang cookie lives in $HOME
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_CONFIG_FILE": str(_write_config(base, management_port)),
        "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
    }


def _write_config(base: Path, management_port: int, tls_lines: list[str] | None = None) -> Path:
    config = base / "rabbitmq.conf"
    listeners = (f"management.tcp.port = {management_port}\n"
                 "management.tcp.ip = 127.0.0.1\n") if tls_lines is None else "".join(f"{x}\n" for x in tls_lines)
    config.write_text(
        listeners +
        "loopback_users = none\n"
        # quorum queues fsync; the dev node is on a laptop-sized disk
        "disk_free_limit.absolute = 200MB\n")
    return config.with_suffix("")  # RabbitMQ adds .conf itself


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(port):
            return
        time.sleep(0.2)
    raise GridbusError(f"{what} did not open port {port} within {timeout_s:.0f}s")


def ensure_rabbitmq_installed() -> None:
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        raise GridbusError(f"rabbitmq-server not found in {RABBIT_BIN}: run `make setup` "
                           "(installs Debian's rabbitmq-server) or set GRIDBUS_RABBITMQ_BIN")


def start_rabbitmq(base: Path, amqp_port: int = DEV_AMQP_PORT,
                   management_port: int = DEV_MANAGEMENT_PORT, dist_port: int = DEV_DIST_PORT,
                   node: str = NODE_NAME, log=print, tls: TlsNode | None = None) -> None:
    ensure_rabbitmq_installed()
    mode = base / "listens"  # "tls" or "tcp": what the running node was started to speak
    if port_open(amqp_port) and port_open(management_port):
        running = mode.read_text().strip() if mode.exists() else "tcp"
        if running != ("tls" if tls else "tcp"):
            raise GridbusError(f"the dev node on {amqp_port} runs {'with' if running == 'tls' else 'without'} TLS; "
                               "`gridbus dev down` first, then `gridbus dev up` as wanted")
        log(f"rabbitmq   already listening on {amqp_port}")
        return
    env = rabbit_env(base, amqp_port, management_port, dist_port, node, tls)
    mode.write_text("tls" if tls else "tcp")
    out = open(base / "server.out", "ab")
    proc = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=env, stdout=out, stderr=out,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    (base.parent / "run").mkdir(exist_ok=True)
    (base.parent / "run" / "rabbitmq.pid").write_text(str(proc.pid))
    wait_for_port(amqp_port, 90, "rabbitmq-server")
    wait_for_port(management_port, 60, "rabbitmq management")
    log(f"rabbitmq   amqp{'s' if tls else ''}://127.0.0.1:{amqp_port}  management "
        f"http{'s' if tls else ''}://127.0.0.1:{management_port}{'  (TLS only)' if tls else ''}")


def stop_rabbitmq(base: Path, node: str = NODE_NAME) -> None:
    if not (base / "mnesia").exists():
        return
    env = rabbit_env(base, DEV_AMQP_PORT, DEV_MANAGEMENT_PORT, DEV_DIST_PORT, node)
    subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "stop"], env=env, capture_output=True, timeout=60)


class ProcessSet:
    """Background processes with pid files and logs under ``$GRIDBUS_HOME/run``."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self._started: dict[str, subprocess.Popen] = {}

    def pid(self, name: str) -> int | None:
        path = self.run_dir / f"{name}.pid"
        if not path.exists():
            return None
        pid = int(path.read_text().strip() or 0)
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return None
        # a zombie child of ours counts as gone
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return None
        except OSError:
            return None
        return pid

    def start(self, service: Service, env: dict | None = None, wait: bool = True) -> int:
        """Start ``service`` unless it runs; with ``wait``, return once it listens on its port
        (else call ``wait_listening`` later: stand-ins start side by side, not one after another)."""
        running = self.pid(service.name)
        if running:
            return running
        log = open(self.run_dir / f"{service.name}.log", "ab")
        proc = subprocess.Popen(service.argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                env=env or os.environ.copy(), start_new_session=True)
        (self.run_dir / f"{service.name}.pid").write_text(str(proc.pid))
        self._started[service.name] = proc
        if wait:
            self.wait_listening(service)
        return proc.pid

    def wait_listening(self, service: Service, timeout_s: float = 60) -> None:
        """Until ``service`` (started by this set, or already running) listens on its port."""
        if not service.port:
            return
        proc = self._started.get(service.name)
        deadline = time.monotonic() + timeout_s
        while not port_open(service.port):
            if proc is not None and proc.poll() is not None:
                raise GridbusError(f"{service.name} exited with {proc.returncode}; "
                                   f"see {self.run_dir / service.name}.log")
            if time.monotonic() > deadline:
                raise GridbusError(f"{service.name} did not listen on {service.port}")
            time.sleep(0.1)

    def stop(self, name: str, timeout_s: float = 15) -> bool:
        pid = self.pid(name)
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        if not pid:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True


def python() -> str:
    return sys.executable


def gridbus_argv(*args: str) -> list[str]:
    return [python(), "-m", "bus.cli.main", *args]


def which(name: str) -> str | None:
    return shutil.which(name)
