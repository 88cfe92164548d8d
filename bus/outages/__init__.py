"""Outage identification (issue 19, use case 3): last gasps and first breaths correlated on the
network model into CIM Outages.  This package is the pure engine; docs/outages.md."""
from bus.outages.engine import OutageEngine
from bus.outages.events import POWER_FAIL, POWER_RESTORED, MeterEvent, from_canonical
from bus.outages.rules import Options, OptionsError, partition_of
from bus.outages.topology import MemoryTopology, StoreTopology

__all__ = ["OutageEngine", "MeterEvent", "POWER_FAIL", "POWER_RESTORED", "from_canonical", "Options",
           "OptionsError", "partition_of", "MemoryTopology", "StoreTopology"]
