"""Runtime settings from the environment, with one optional env file.

Secrets and addresses live here (or in the environment), never in route files.
Precedence: the process environment, then ``$GRIDBUS_ENV_FILE`` (default
``$GRIDBUS_HOME/dev.env``, written by ``gridbus dev up``), then defaults.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from bus.errors import ConfigError

DEV_AMQP_PORT = 5679
DEV_MANAGEMENT_PORT = 15679


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ConfigError("expected NAME=value", str(path), number)
        name, value = line.split("=", 1)
        values[name.strip()] = value.strip()
    return values


def environment() -> dict[str, str]:
    """The variables route files may refer to as ``${NAME}``."""
    home = Path(os.environ.get("GRIDBUS_HOME", ".gridbus")).absolute()
    env_file = Path(os.environ.get("GRIDBUS_ENV_FILE", home / "dev.env"))
    merged = {"GRIDBUS_HOME": str(home), "GRIDBUS_INBOX": str(home / "inbox"),
              "GRIDBUS_OUTBOX": str(home / "outbox")}
    merged.update(_read_env_file(env_file))
    merged.update(os.environ)
    return merged


@dataclass(frozen=True)
class Settings:
    home: Path
    broker_url: str
    management_url: str
    routes_path: Path
    state_dir: Path

    @property
    def vhost(self) -> str:
        """The virtual host of the broker URL ('/' when the URL names none).  A setting that
        names several nodes (``;``-separated, for failover) must name one vhost on all of them."""
        from bus.messaging.addresses import broker_urls

        vhosts = set()
        for url in broker_urls(self.broker_url):
            path = url.split("://", 1)[-1].partition("/")[2]
            vhosts.add(unquote(path) if path and path != "/" else "/")
        if len(vhosts) > 1:
            raise ConfigError(f"GRIDBUS_BROKER_URL names several virtual hosts ({', '.join(sorted(vhosts))}); "
                              "the nodes of one bus share one")
        return vhosts.pop()

    @classmethod
    def load(cls) -> "Settings":
        env = environment()
        home = Path(env["GRIDBUS_HOME"])
        return cls(
            home=home,
            broker_url=env.get("GRIDBUS_BROKER_URL", f"amqp://guest:guest@127.0.0.1:{DEV_AMQP_PORT}//"),
            management_url=env.get("GRIDBUS_MANAGEMENT_URL",
                                   f"http://guest:guest@127.0.0.1:{DEV_MANAGEMENT_PORT}"),
            routes_path=Path(env.get("GRIDBUS_ROUTES", "routes")),
            state_dir=Path(env.get("GRIDBUS_STATE", home / "state")),
        )
