"""Broker addresses: the broker URL setting may name several nodes, ``;``-separated.

``amqp://u:p@node1:5672//;amqp://u:p@node2:5672//`` is how kombu and Celery spell
failover; every gridbus client reads the same setting the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

from kombu.utils.url import parse_url

from bus.errors import ConfigError


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    userid: str
    password: str
    virtual_host: str
    url: str
    tls: bool = False  # amqps://: spoken over TLS (bus/messaging/tls.py)

    def __str__(self) -> str:  # never the password: this goes into log lines and errors
        return f"{self.host}:{self.port}"


def broker_urls(broker_url: str) -> list[str]:
    """The URLs in a broker URL setting, in the order they are tried."""
    urls = [part.strip() for part in broker_url.split(";") if part.strip()]
    if not urls:
        raise ConfigError("the broker URL names no broker")
    return urls


def broker_addresses(broker_url: str) -> list[BrokerAddress]:
    """Each broker of the setting, parsed (kombu's rules: ``//`` is the vhost ``/``)."""
    addresses = []
    for url in broker_urls(broker_url):
        parts = parse_url(url)
        tls = url.lower().startswith("amqps://")
        addresses.append(BrokerAddress(host=parts["hostname"] or "127.0.0.1",
                                       port=parts["port"] or (5671 if tls else 5672),
                                       userid=parts["userid"] or "guest", password=parts["password"] or "guest",
                                       virtual_host=parts["virtual_host"] or "/", url=url, tls=tls))
    return addresses
