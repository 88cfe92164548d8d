"""Read the live broker through the RabbitMQ management HTTP API (for plan and dlq list).

requests' exceptions are translated to BrokerError here and nowhere else.  An ``https://``
management URL is verified against ``GRIDBUS_TLS_CA`` (unset: requests' CA bundle), never
left unverified; the client certificate (``GRIDBUS_TLS_CERT``/``KEY``), when set, is shown too.
"""
from __future__ import annotations

from urllib.parse import quote, urlsplit

import requests

from bus.errors import BrokerError


def _tls_reason(exc: BaseException) -> str:
    from bus.messaging.errors import tls_refusal

    return tls_refusal(exc) or str(exc)


class BrokerAdmin:
    """The management API of the first node that answers.  ``management_url`` may name several
    nodes, ``;``-separated as the broker URL does, so that `routes plan` or `dlq list` still work
    when the node named first is the one that died; a node that does not answer is skipped, one
    that answers with an error is believed (the cluster shares its definitions)."""

    def __init__(self, management_url: str, vhost: str = "/"):
        self.bases: list[str] = []
        self.auths: list[tuple[str, str]] = []
        for url in (part.strip() for part in management_url.split(";")):
            if url:
                parts = urlsplit(url)
                self.bases.append(f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api")
                self.auths.append((parts.username or "guest", parts.password or "guest"))
        if not self.bases:
            raise BrokerError("the management URL names no node")
        self.base, self.auth = self.bases[0], self.auths[0]
        self.vhost = quote(vhost, safe="")
        self.session = requests.Session()
        self.tls: dict = self._tls() if any(base.startswith("https://") for base in self.bases) else {}

    @staticmethod
    def _tls() -> dict:
        """``verify`` and ``cert`` for every request: given per request, since a session's own are
        overridden by $REQUESTS_CA_BUNDLE (requests merges the environment over the session)."""
        from bus.messaging import tls as broker_tls

        settings = broker_tls.read_settings()  # files checked: ConfigError naming the variable
        tls: dict = {"verify": settings.ca or True}
        if settings.cert:
            tls["cert"] = (settings.cert, settings.key) if settings.key else settings.cert
        return tls

    def _request(self, method: str, path: str, timeout: float, **kwargs) -> requests.Response:
        """The answer of the first node that answers; the one that did becomes the first asked next."""
        failures = []
        for base, auth in zip(list(self.bases), list(self.auths)):
            try:
                response = self.session.request(method, f"{base}/{path}", auth=auth, timeout=timeout,
                                                **self.tls, **kwargs)
            except requests.exceptions.SSLError as exc:
                failures.append(f"{base}: TLS: {_tls_reason(exc)}")
                continue
            except requests.RequestException as exc:
                failures.append(f"{base}: {exc}")
                continue
            if base != self.bases[0]:
                i = self.bases.index(base)
                self.bases.insert(0, self.bases.pop(i))
                self.auths.insert(0, self.auths.pop(i))
                self.base, self.auth = self.bases[0], self.auths[0]
            return response
        raise BrokerError(f"management API unreachable: {'; '.join(failures)}")

    def _get(self, path: str, **params) -> list | dict:
        response = self._request("GET", path, 10, params=params)
        if response.status_code != 200:
            raise BrokerError(f"management API {response.url} answered {response.status_code}: {response.text[:200]}")
        return response.json()

    def exchanges(self) -> list[dict]:
        return self._get(f"exchanges/{self.vhost}", columns="name,type,durable,arguments")

    def queues(self) -> list[dict]:
        return self._get(f"queues/{self.vhost}", columns="name,durable,arguments,messages,messages_ready")

    def consumer_counts(self) -> dict[str, int]:
        """Queue name → consumers now, for every queue of the vhost (one call)."""
        return {q["name"]: q.get("consumers", 0) for q in self._get(f"queues/{self.vhost}", columns="name,consumers")}

    def bindings(self) -> list[dict]:
        return self._get(f"bindings/{self.vhost}")

    def queue(self, name: str) -> dict:
        return self._get(f"queues/{self.vhost}/{quote(name, safe='')}")

    # -- virtual hosts (benchmarks and tests isolate themselves in one) ----
    def _send(self, method: str, path: str, json_body: dict | None = None) -> None:
        response = self._request(method, path, 30, json=json_body)
        if response.status_code >= 300 and not (method == "DELETE" and response.status_code == 404):
            raise BrokerError(f"{method} {response.url} answered {response.status_code}: {response.text[:200]}")

    def create_vhost(self, name: str, user: str = "guest") -> None:
        self._send("PUT", f"vhosts/{quote(name, safe='')}")
        self._send("PUT", f"permissions/{quote(name, safe='')}/{user}",
                   {"configure": ".*", "write": ".*", "read": ".*"})

    def delete_vhost(self, name: str) -> None:
        self._send("DELETE", f"vhosts/{quote(name, safe='')}")

    # -- users of source systems (bus.broker_users) ------------------------
    def users(self) -> list[dict]:
        return self._get("users")

    def put_user(self, name: str, password: str, tags: str) -> None:
        # the broker keeps only a salted hash of the password
        self._send("PUT", f"users/{quote(name, safe='')}", {"password": password, "tags": tags})

    def delete_user(self, name: str) -> None:
        self._send("DELETE", f"users/{quote(name, safe='')}")

    def set_permissions(self, user: str, configure: str, write: str, read: str) -> None:
        self._send("PUT", f"permissions/{self.vhost}/{quote(user, safe='')}",
                   {"configure": configure, "write": write, "read": read})

    def set_topic_permissions(self, user: str, exchange: str, write: str, read: str) -> None:
        self._send("PUT", f"topic-permissions/{self.vhost}/{quote(user, safe='')}",
                   {"exchange": exchange, "write": write, "read": read})

    def clear_topic_permissions(self, user: str) -> None:
        self._send("DELETE", f"topic-permissions/{self.vhost}/{quote(user, safe='')}")

    def permissions_of(self, user: str) -> dict:
        try:
            return self._get(f"permissions/{self.vhost}/{quote(user, safe='')}")
        except BrokerError:
            return {}

    def topic_permissions_of(self, user: str) -> list[dict]:
        try:
            return self._get(f"topic-permissions/{self.vhost}/{quote(user, safe='')}")
        except BrokerError:
            return []

    def broker_version(self) -> str:
        """The RabbitMQ version of the node that answers (``''`` when it does not say)."""
        return str(self._get("overview", columns="rabbitmq_version").get("rabbitmq_version", ""))
