"""Read the live broker through the RabbitMQ management HTTP API (for plan and dlq list).

requests' exceptions are translated to BrokerError here and nowhere else.
"""
from __future__ import annotations

from urllib.parse import quote, urlsplit

import requests

from bus.errors import BrokerError


class BrokerAdmin:
    def __init__(self, management_url: str, vhost: str = "/"):
        parts = urlsplit(management_url)
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api"
        self.auth = (parts.username or "guest", parts.password or "guest")
        self.vhost = quote(vhost, safe="")
        self.session = requests.Session()

    def _get(self, path: str, **params) -> list | dict:
        url = f"{self.base}/{path}"
        try:
            response = self.session.get(url, auth=self.auth, params=params, timeout=10)
        except requests.RequestException as exc:
            raise BrokerError(f"management API at {self.base} unreachable: {exc}") from exc
        if response.status_code != 200:
            raise BrokerError(f"management API {url} answered {response.status_code}: {response.text[:200]}")
        return response.json()

    def exchanges(self) -> list[dict]:
        return self._get(f"exchanges/{self.vhost}", columns="name,type,durable,arguments")

    def queues(self) -> list[dict]:
        return self._get(f"queues/{self.vhost}", columns="name,durable,arguments,messages,messages_ready")

    def bindings(self) -> list[dict]:
        return self._get(f"bindings/{self.vhost}")

    def queue(self, name: str) -> dict:
        return self._get(f"queues/{self.vhost}/{quote(name, safe='')}")

    # -- virtual hosts (benchmarks and tests isolate themselves in one) ----
    def _send(self, method: str, path: str, json_body: dict | None = None) -> None:
        url = f"{self.base}/{path}"
        try:
            response = self.session.request(method, url, auth=self.auth, json=json_body, timeout=30)
        except requests.RequestException as exc:
            raise BrokerError(f"management API at {self.base} unreachable: {exc}") from exc
        if response.status_code >= 300 and not (method == "DELETE" and response.status_code == 404):
            raise BrokerError(f"{method} {url} answered {response.status_code}: {response.text[:200]}")

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
