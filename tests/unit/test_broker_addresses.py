"""The broker URL setting read as a list of brokers (kombu's ``;`` for failover)."""
from __future__ import annotations

import pytest

from bus.errors import ConfigError
from bus.messaging import broker_addresses


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
