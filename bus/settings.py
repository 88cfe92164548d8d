"""Runtime settings from the environment, with one optional env file.

Secrets and addresses live here (or in the environment), never in route files.
Precedence: the process environment, then ``$GRIDBUS_ENV_FILE`` (default
``$GRIDBUS_HOME/dev.env``, written by ``gridbus dev up``), then defaults.

Any ``GRIDBUS_<NAME>_FILE`` gives ``GRIDBUS_<NAME>`` the content of that file (the Docker
secrets convention, ``/run/secrets/...``): a secret then lives in a file only its service
can read, never in the environment of ``docker inspect`` nor in a file of the repository.
``GRIDBUS_BROKER_USER`` / ``GRIDBUS_BROKER_PASSWORD`` (and ``GRIDBUS_MANAGEMENT_USER`` /
``_PASSWORD``) fill in the user and password of the addresses that name none, so one URL
(hosts, vhost) serves every role and only the role's user and secret differ.  The default account ``guest`` is refused for a broker that is not
on this machine, and anywhere when ``GRIDBUS_DEPLOYMENT=production`` (docs/security.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

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


def _from_files(values: dict[str, str]) -> dict[str, str]:
    """``GRIDBUS_X`` from the file ``GRIDBUS_X_FILE`` names, where ``GRIDBUS_X`` itself is unset
    (set both and the value wins: the file is the fallback, as in the official images)."""
    found = {}
    for name, path in values.items():
        if not (name.startswith("GRIDBUS_") and name.endswith("_FILE")) or name == "GRIDBUS_ENV_FILE":
            continue
        target = name[:-len("_FILE")]
        if values.get(target):
            continue
        try:
            found[target] = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}={path}: cannot read it ({exc.strerror or exc})") from None
        if not found[target]:
            raise ConfigError(f"{name}={path} is empty")
    return found


def environment() -> dict[str, str]:
    """The variables route files may refer to as ``${NAME}``."""
    home = Path(os.environ.get("GRIDBUS_HOME", ".gridbus")).absolute()
    env_file = Path(os.environ.get("GRIDBUS_ENV_FILE", home / "dev.env"))
    merged = {"GRIDBUS_HOME": str(home), "GRIDBUS_INBOX": str(home / "inbox"),
              "GRIDBUS_OUTBOX": str(home / "outbox")}
    merged.update(_read_env_file(env_file))
    merged.update(os.environ)
    merged.update(_from_files(merged))
    return merged


LOOPBACK = {"127.0.0.1", "::1", "localhost"}
DEFAULT_USER = "guest"


def with_credentials(url_setting: str, user: str | None, password: str | None) -> str:
    """Each ``;``-separated URL of the setting, with ``user`` where it names no user and
    ``password`` where it names a user and no password (percent-encoded: a generated password
    may hold any character).  What a URL says itself wins."""
    if not user and not password:
        return url_setting
    filled = []
    for url in (part.strip() for part in url_setting.split(";")):
        scheme, sep, rest = url.partition("://")
        userinfo, at, hostpart = rest.partition("@")
        if sep and not at and user:  # no userinfo at all
            userinfo, hostpart, at = quote(user, safe=""), rest, "@"
        if sep and at and ":" not in userinfo and password:
            userinfo = f"{userinfo}:{quote(password, safe='')}"
        filled.append(f"{scheme}://{userinfo}@{hostpart}" if sep and at else url)
    return ";".join(u for u in filled if u)


def refuse_default_account(name: str, url_setting: str, production: bool) -> None:
    """The default account (``guest:guest``, an administrator on a fresh node) is for a broker
    on this machine, as RabbitMQ itself allows it; a deployment beyond it runs as its own users."""
    for url in url_setting.split(";"):
        if not url.strip():
            continue
        parts = urlsplit(url.strip())
        user = unquote(parts.username) if parts.username is not None else DEFAULT_USER
        if user != DEFAULT_USER:
            continue
        where = "" if production else f" on {parts.hostname}"
        if production or (parts.hostname or "127.0.0.1") not in LOOPBACK:
            raise ConfigError(
                f"{name} uses the default account {DEFAULT_USER!r}{where}: "
                + ("GRIDBUS_DEPLOYMENT=production" if production else "a broker beyond this machine")
                + " needs its own users (`gridbus broker users sync` makes one per role; docs/security.md)")


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
        deployment = env.get("GRIDBUS_DEPLOYMENT", "").strip().lower()
        if deployment not in ("", "dev", "production"):
            raise ConfigError(f"GRIDBUS_DEPLOYMENT={deployment!r}: expected dev or production")
        broker_url = with_credentials(
            env.get("GRIDBUS_BROKER_URL", f"amqp://guest:guest@127.0.0.1:{DEV_AMQP_PORT}//"),
            env.get("GRIDBUS_BROKER_USER"), env.get("GRIDBUS_BROKER_PASSWORD"))
        management_url = with_credentials(
            env.get("GRIDBUS_MANAGEMENT_URL", f"http://guest:guest@127.0.0.1:{DEV_MANAGEMENT_PORT}"),
            env.get("GRIDBUS_MANAGEMENT_USER"), env.get("GRIDBUS_MANAGEMENT_PASSWORD"))
        refuse_default_account("GRIDBUS_BROKER_URL", broker_url, deployment == "production")
        if "GRIDBUS_MANAGEMENT_URL" in env:  # processes that never call the API need not set it
            refuse_default_account("GRIDBUS_MANAGEMENT_URL", management_url, deployment == "production")
        return cls(
            home=home,
            broker_url=broker_url,
            management_url=management_url,
            routes_path=Path(env.get("GRIDBUS_ROUTES", "routes")),
            state_dir=Path(env.get("GRIDBUS_STATE", home / "state")),
        )
