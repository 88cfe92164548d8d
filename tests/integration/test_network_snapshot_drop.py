"""Use case 9, the snapshot by file drop end to end: a real `gridbus ingress` process (and a real
RabbitMQ for its topology) takes GIS snapshot CSVs from its inbox into the network store."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bus.network import open_store
from simulators.network import NetworkModel
from tests.support import ROOT, Proc, gridbus, wait_for

pytestmark = pytest.mark.broker
CONSUMERS = 2_000


def _drop(source: Path, inbox: Path) -> None:
    """Write-then-rename, as the GIS's export job does."""
    inbox.mkdir(parents=True, exist_ok=True)
    part = inbox / f".{source.name}.part"
    shutil.copyfile(source, part)
    part.replace(inbox / source.name)


def _report(inbox: Path, name: str, ingress: Proc) -> dict:
    def found():
        hits = list((inbox / "archive").glob(f"*-{name}.report.json")) if (inbox / "archive").exists() else []
        return json.loads(hits[0].read_text()) if hits else None
    return wait_for(found, 60, f"the report of {name} (ingress log: {ingress.log()[-1500:]})")


def test_snapshots_dropped_into_the_inbox_are_diffed_applied_or_held(bus_env, tmp_path):
    # Given a store holding the generated network and the ingress serving the snapshot route
    env = {**bus_env, "GRIDBUS_ROUTES": str(ROOT / "routes" / "uc9-network.yaml"),
           "GRIDBUS_NETWORK_STORE": str(tmp_path / "network.sqlite")}
    model = NetworkModel.generate(CONSUMERS, seed=11)
    store = open_store(env["GRIDBUS_NETWORK_STORE"])
    assert not store.apply(model.creates()).refused
    (tmp_path / "logs").mkdir()
    ingress = Proc("ingress", gridbus("ingress"), env, tmp_path / "logs").start()
    inbox = Path(env["GRIDBUS_INBOX"]) / "gis-snapshots"
    try:
        # When the GIS drops a snapshot with 1 % of the consumers changed
        drifted = model.copy()
        truth = drifted.drift(0.01)
        drifted.write_snapshot(tmp_path / "gis-2026-11-03.csv")
        _drop(tmp_path / "gis-2026-11-03.csv", inbox)
        report = _report(inbox, "gis-2026-11-03.csv", ingress)
        # Then exactly those changes are applied, the file is archived and gone from the inbox
        assert report["status"] == "applied" and report["rowsRead"] == CONSUMERS and report["rowsRejected"] == 0
        assert report["changes"] == len(truth) and report["apply"]["applied"] == len(truth)
        assert not (inbox / "gis-2026-11-03.csv").exists()
        moved = next(c for c in truth if c["kind"] == "move")
        assert store.element(moved["mrid"])["parent"] == moved["parent"]
        # When a truncated export (half the rows) is dropped
        drifted.write_snapshot(tmp_path / "gis-2026-11-04.csv", fraction=0.5)
        _drop(tmp_path / "gis-2026-11-04.csv", inbox)
        report = _report(inbox, "gis-2026-11-04.csv", ingress)
        # Then it is held, nothing is retired, and `gridbus network held` lists it
        assert report["status"] == "held" and store.counts()["consumer"] == CONSUMERS
        listed = subprocess.run(gridbus("network", "held", "--json"), env=env, capture_output=True, text=True)
        assert [d["id"] for d in json.loads(listed.stdout)] == [report["heldId"]], listed.stderr
    finally:
        ingress.stop()
