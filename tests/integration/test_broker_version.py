"""One supported broker range (bus/broker_version.py), stated in the docs and compose, and
checked here against the node CI really runs (Debian's rabbitmq-server)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bus import broker_version
from bus.broker_admin import BrokerAdmin
from tests.support import ROOT, ROUTE_ENV, run_cli

pytestmark = pytest.mark.broker


def test_the_node_ci_runs_is_in_the_supported_range_and_apply_says_nothing_about_it(bus_env, tmp_path):
    # Given the RabbitMQ node the tests run on (the system package, as CI installs it)
    version = BrokerAdmin(bus_env["GRIDBUS_MANAGEMENT_URL"]).broker_version()
    # Then it is in the range gridbus claims
    assert broker_version.is_supported(version), version
    # and `routes apply` against it gives no version warning
    env = {**bus_env, **{k: v for k, v in ROUTE_ENV.items() if k.endswith("_URL")},
           "GRIDBUS_METER_ASSIGNMENT": str(tmp_path / "assignment.csv"), "GRIDBUS_ROUTES": str(ROOT / "routes")}
    applied = run_cli(env, "routes", "apply")
    assert applied.returncode == 0, applied.stderr
    assert "supports RabbitMQ" not in applied.stderr


def test_compose_and_the_docs_state_the_same_range():
    # Given compose's RabbitMQ image and the security guide
    services = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]
    images = {s["image"] for name, s in services.items() if name.startswith("rabbitmq")}
    # Then every node runs an image of the supported minor version
    assert images and all(broker_version.is_supported(image.split(":")[1].split("-")[0] + ".0") for image in images)
    # and the docs name the range and the version tested
    security = (ROOT / "docs" / "security.md").read_text()
    assert broker_version.SUPPORTED_TEXT in security and broker_version.TESTED in security


@pytest.mark.parametrize("version,warned", [("3.10.8", False), ("3.10.25", False), ("3.13.1", True),
                                            ("4.0.5", True), ("3.9.29", True), ("", True), ("garbage", True)])
def test_a_broker_outside_the_range_is_named_with_where_to_read_more(version, warned):
    warning = broker_version.outside_range(version)
    assert bool(warning) == warned
    if warned:
        assert "RabbitMQ 3.10.x" in warning and "docs/security.md" in warning
