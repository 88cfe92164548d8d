"""The broker URL setting read as a list of brokers (kombu's ``;`` for failover)."""
from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.messaging import broker_addresses
from bus.settings import Settings


def test_a_setting_with_several_brokers_is_read_in_order_with_kombus_vhost_rules():
    # Given two brokers, the first with the default vhost spelled '//', the second with one named
    setting = "amqp://u:p@node1:5672//; amqp://u:p@node2:5673/grid"
    # When read
    first, second = broker_addresses(setting)
    # Then both are there, in order, and their text names host and port but never the password
    assert (first.host, first.port, first.virtual_host, first.userid) == ("node1", 5672, "/", "u")
    assert (second.host, second.port, second.virtual_host) == ("node2", 5673, "grid")
    assert str(second) == "node2:5673"


def test_a_setting_that_names_no_broker_is_a_config_error():
    with pytest.raises(ConfigError):
        broker_addresses(" ; ")


def _settings(broker_url: str) -> Settings:
    return Settings(home=Path("."), broker_url=broker_url, management_url="", routes_path=Path("."),
                    state_dir=Path("."))


def test_the_vhost_of_a_setting_with_several_brokers_is_theirs_and_must_be_one():
    # Given three nodes of one bus, each URL naming the vhost 'grid'
    nodes = "amqp://u:p@n1:5672/grid;amqp://u:p@n2:5672/grid;amqp://u:p@n3:5672/grid"
    # When the settings are asked for the vhost  Then it is 'grid', not the text after the first '/'
    assert _settings(nodes).vhost == "grid"
    assert _settings("amqp://u:p@n1:5672//").vhost == "/"
    # and nodes naming different vhosts are a configuration error
    with pytest.raises(ConfigError, match="several virtual hosts"):
        _settings("amqp://u:p@n1:5672/grid;amqp://u:p@n2:5672/other").vhost
