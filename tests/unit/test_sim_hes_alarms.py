"""The HES alarm generator: vendor-JSON alarms from a feeder/DT/meter network,
deterministic for a seed, in the shape the bus's alarm decoder reads."""
from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bus.transform import TransformContext
from simulators.control import BackgroundServer, JsonRequestHandler
from simulators.hes_alarms import Network, burst, codes_by_class, feeder_trip, main, mixed, send
from transformers.catalogue import is15959_events
from transformers.hes_alarm_json import HesAlarmJsonDecoder

REPO = Path(__file__).resolve().parents[2]
AT = dt.datetime(2026, 11, 1, 10, 15, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))


@pytest.fixture(scope="module")
def network():
    return Network.build(feeders=4, dts_per_feeder=3, meters_per_dt=5, seed=7, first_meter=100)


def decode(alarms, hes="hes-a"):
    context = TransformContext("uc5-hes-a-alarms", hes, "msg-1", "corr-1")
    return HesAlarmJsonDecoder()(alarms, context), context


def test_the_network_is_regular_and_answers_where_a_meter_hangs(network):
    # Given 4 feeders x 3 DTs x 5 meters numbered from 100
    # Then meters are consecutive and each knows its DT and feeder
    assert len(network) == 60 and network.meters[0] == "UPM00000100" and network.meters[-1] == "UPM00000159"
    assert list(network.feeders) == ["F01", "F02", "F03", "F04"]
    assert network.dts_of_feeder("F02") == ["F02-DT001", "F02-DT002", "F02-DT003"]
    assert network.meters_of_feeder("F02") == [f"UPM{n:08d}" for n in range(115, 130)]
    assert network.dt_of("UPM00000121") == "F02-DT002" and network.feeder_of("UPM00000121") == "F02"
    with pytest.raises(KeyError):
        network.feeder_of("UPM99999999")


def test_the_network_round_trips_through_json(network, tmp_path):
    # When saved and loaded, or passed through to_json/from_json
    network.save(tmp_path / "net.json")
    loaded = Network.load(tmp_path / "net.json")

    # Then it is the same network, seed included
    assert loaded == network == Network.from_json(network.to_json())
    assert loaded.seed == 7 and loaded.dt_of("UPM00000159") == "F04-DT003"
    # and a file where one meter hangs under two DTs is refused
    doc = json.loads(network.to_json())
    doc["feeders"]["F01"]["F01-DT001"].append("UPM00000159")
    with pytest.raises(ValueError, match="more than one DT"):
        Network.from_json(doc)


def test_a_feeder_trip_is_a_last_gasp_from_exactly_the_meters_of_that_feeder(network):
    # When feeder F03 trips and is restored after 10 minutes
    alarms = feeder_trip(network, "F03", AT, spread_s=5, restore_after_s=600)

    # Then each of its meters sends one 101 and one 102, and no other meter sends anything
    gasps = [a for a in alarms if a["code"] == 101]
    restores = [a for a in alarms if a["code"] == 102]
    assert sorted(a["meter"] for a in gasps) == network.meters_of_feeder("F03")
    assert sorted(a["meter"] for a in restores) == network.meters_of_feeder("F03")
    assert len(alarms) == 30

    # And times are IST, gasps within the spread, received a little after they occurred
    for a in gasps:
        occurred = dt.datetime.fromisoformat(a["occurred_at"])
        received = dt.datetime.fromisoformat(a["received_at"])
        assert a["occurred_at"].endswith("+05:30")
        assert AT <= occurred < AT + dt.timedelta(seconds=5)
        assert dt.timedelta(seconds=1) <= received - occurred <= dt.timedelta(seconds=4)
    assert min(dt.datetime.fromisoformat(a["occurred_at"]) for a in restores) >= AT + dt.timedelta(seconds=600)
    # in arrival order, as a HES forwards them
    assert [a["received_at"] for a in alarms] == sorted(a["received_at"] for a in alarms)


def test_generation_is_deterministic_for_a_seed(network):
    # Given the same network and seed twice, When a trip and a mix are generated
    # Then the alarms are identical; another seed gives other times
    assert feeder_trip(network, ["F01", "F02"], AT) == feeder_trip(network, ["F01", "F02"], AT)
    assert mixed(network, 200, AT, rng=random.Random(3)) == mixed(network, 200, AT, rng=random.Random(3))
    assert mixed(network, 200, AT, rng=random.Random(3)) != mixed(network, 200, AT, rng=random.Random(4))


def test_a_burst_has_exactly_the_count_asked_with_unique_ids(network):
    # When bursts of several sizes are generated
    for count in (0, 1, 14, 15, 16, 37, 60):
        alarms = burst(network, count, AT)

        # Then exactly that many last gasps, one per meter, whole feeders first, ids unique
        assert len(alarms) == count
        assert {a["code"] for a in alarms} <= {101}
        assert sorted(a["meter"] for a in alarms) == network.meters[:count]
        assert len({a["alarm_id"] for a in alarms}) == count
    with pytest.raises(ValueError):
        burst(network, 61, AT)


def test_a_benchmark_burst_of_50000_is_exact():
    alarms = burst(Network.build(), 50_000, AT)
    assert len(alarms) == 50_000 == len({a["alarm_id"] for a in alarms})


def test_mixed_alarms_use_codes_of_the_catalogue_in_the_asked_classes(network):
    # Given the bus's catalogue of IS 15959 codes
    catalogue = is15959_events()

    # Then the generator's class table is the catalogue's
    for code, spec in catalogue.items():
        assert {c for c, codes in codes_by_class().items() if code in codes} == (set(spec.classes) or {"none"})

    # When a mix of fraud only and a default mix are generated
    fraud = mixed(network, 300, AT, mix={"fraud": 1.0})
    default = mixed(network, 500, AT)

    # Then every code exists, fraud-only alarms are all fraud, ids are unique
    assert all("fraud" in catalogue[a["code"]].classes for a in fraud)
    assert all(a["code"] in catalogue for a in default)
    assert {c for a in default for c in catalogue[a["code"]].classes} == {"critical", "health", "fraud", "outage"}
    assert len({a["alarm_id"] for a in default}) == 500
    with pytest.raises(ValueError):
        mixed(network, 10, AT, mix={"tamper": 1.0})


def test_the_bus_decoder_accepts_every_generated_alarm(network):
    # Given a trip with restoration and a mixed set, as one HES sends them
    alarms = feeder_trip(network, "F01", AT, restore_after_s=60) + mixed(network, 300, AT, window_s=600)

    # When the bus's vendor JSON decoder reads them
    doc, context = decode({"hes": "hes-a", "alarms": alarms})

    # Then none is rejected and none is taken for a HES retry of another
    assert context.rejections == []
    assert len(doc["EndDeviceEvent"]) == len(alarms)
    gasp = next(e for e in doc["EndDeviceEvent"] if e["isCode"] == 101)
    assert gasp["createdDateTime"].endswith("Z") and gasp["alarmId"].startswith("hes-a-UPM")


def test_the_command_line_writes_a_network_and_a_burst(tmp_path):
    # When the CLI writes a network and a burst from it (in-process: fast, same code path)
    assert main(["network", "--feeders", "2", "--dts", "2", "--meters", "3",
                 "--out", str(tmp_path / "net.json")]) == 0
    assert main(["burst", "--count", "10", "--network", str(tmp_path / "net.json"),
                 "--out", str(tmp_path / "alarms.json")]) == 0

    # Then the file is a JSON array of exactly 10 alarms
    alarms = json.loads((tmp_path / "alarms.json").read_text())
    assert isinstance(alarms, list) and len(alarms) == 10
    assert Network.load(tmp_path / "net.json").meters_of_feeder("F02") == [
        f"UPM{n:08d}" for n in range(7, 13)]


class _GatewayHandler(JsonRequestHandler):
    """A gateway's push endpoint reduced to what ``send`` meets: 202, then 503 once full."""

    def do_POST(self) -> None:
        batch = json.loads(self.read_body())
        seen = self.server.app
        seen.append((self.path, self.headers.get("X-API-Key"), len(batch)))
        self.send_json(202 if len(seen) <= 2 else 503, {"Reply": {"Result": "OK"}})


def test_send_posts_batches_with_the_key_and_counts_answers_by_status(network, tmp_path):
    # Given an alarm file of 25 and a gateway that takes two POSTs then answers 503
    (tmp_path / "alarms.json").write_text(json.dumps(burst(network, 25, AT)))
    with BackgroundServer(_GatewayHandler, []) as gateway:
        # When the CLI sends the file in batches of 10 with a key
        done = subprocess.run([sys.executable, "-m", "simulators.hes_alarms", "send", str(tmp_path / "alarms.json"),
                               "--url", f"{gateway.url}/v1/push/hes-a/alarms", "--key", "k-1", "--batch", "10"],
                              cwd=REPO, capture_output=True, text=True, timeout=30)

        # Then three POSTs of 10, 10 and 5 alarms with the key, reported per status, exit 1
        assert gateway.app == [("/v1/push/hes-a/alarms", "k-1", 10), ("/v1/push/hes-a/alarms", "k-1", 10),
                               ("/v1/push/hes-a/alarms", "k-1", 5)]
        summary = json.loads(done.stdout)
        assert done.returncode == 1, done.stderr
        assert (summary["alarms"], summary["batches"], summary["status"]) == (25, 3, {"202": 2, "503": 1})
        assert "sent 25/25 alarms" in done.stderr

    # And a gateway that is gone counts as a connection error
    gone = send([{"meter": "UPM1"}], f"{gateway.url}/v1/push/hes-a/alarms", "k-1", timeout_s=2)
    assert gone.status == {"connection-error": 1} and not gone.ok
