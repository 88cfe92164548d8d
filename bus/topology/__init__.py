"""Route table → exchanges, queues and bindings; plan against and apply to a live broker."""
from bus.topology.compile import compile_topology
from bus.topology.model import BindingSpec, ExchangeSpec, QueueSpec, Topology

__all__ = ["compile_topology", "BindingSpec", "ExchangeSpec", "QueueSpec", "Topology"]
