"""Compare the topology the routes want with the live broker; change nothing."""
from __future__ import annotations

from dataclasses import dataclass, field

from bus import naming
from bus.broker_admin import BrokerAdmin
from bus.topology.model import BindingSpec, Topology


@dataclass
class Plan:
    missing_exchanges: list[str] = field(default_factory=list)
    missing_queues: list[str] = field(default_factory=list)
    missing_bindings: list[BindingSpec] = field(default_factory=list)
    extra_exchanges: list[str] = field(default_factory=list)
    extra_queues: list[str] = field(default_factory=list)
    extra_bindings: list[BindingSpec] = field(default_factory=list)
    changed_exchanges: list[tuple[str, str]] = field(default_factory=list)
    changed_queues: list[tuple[str, str]] = field(default_factory=list)

    @property
    def to_declare(self) -> int:
        return len(self.missing_exchanges) + len(self.missing_queues) + len(self.missing_bindings)

    @property
    def in_sync(self) -> bool:
        return not any(vars(self).values())

    def lines(self) -> list[str]:
        out = [f"+ exchange {n}" for n in self.missing_exchanges]
        out += [f"+ queue {n}" for n in self.missing_queues]
        out += [f"+ binding {_binding(b)}" for b in self.missing_bindings]
        out += [f"~ exchange {n}: {why}" for n, why in self.changed_exchanges]
        out += [f"~ queue {n}: {why}" for n, why in self.changed_queues]
        out += [f"- exchange {n} (on the broker, in no route)" for n in self.extra_exchanges]
        out += [f"- queue {n} (on the broker, in no route)" for n in self.extra_queues]
        out += [f"- binding {_binding(b)} (on the broker, in no route)" for b in self.extra_bindings]
        return out


def _binding(b: BindingSpec) -> str:
    return f"{b.source} -> {b.destination_type} {b.destination} [{b.routing_key}]"


def _diff_args(want: dict, have: dict) -> str:
    keys = sorted(set(want) | set(have))
    return ", ".join(f"{k}: live {have.get(k)!r} != routes {want.get(k)!r}"
                     for k in keys if want.get(k) != have.get(k))


def make_plan(topology: Topology, admin: BrokerAdmin) -> Plan:
    plan = Plan()
    # ours, and the objects of other systems the routes declare for them (an amqp destination's
    # exchange and queue): compared when the routes want them, never listed as extra
    live_x = {x["name"]: x for x in admin.exchanges()
              if naming.is_owned(x["name"]) or x["name"] in topology.exchanges}
    live_q = {q["name"]: q for q in admin.queues() if naming.is_owned(q["name"]) or q["name"] in topology.queues}
    live_b = {BindingSpec(b["source"], b["destination"], b["routing_key"], b["destination_type"])
              for b in admin.bindings() if b["source"] and (naming.is_owned(b["source"])
                                                            or b["source"] in topology.exchanges)}
    for name, spec in sorted(topology.exchanges.items()):
        if name not in live_x:
            plan.missing_exchanges.append(name)
            continue
        live = live_x[name]
        why = _diff_args(spec.args, live.get("arguments") or {})
        if live["type"] != spec.type:
            why = f"type live {live['type']} != routes {spec.type}" + (f", {why}" if why else "")
        if why:
            plan.changed_exchanges.append((name, why))
    for name, spec in sorted(topology.queues.items()):
        if name not in live_q:
            plan.missing_queues.append(name)
            continue
        why = _diff_args(spec.args, live_q[name].get("arguments") or {})
        if why:
            plan.changed_queues.append((name, why))
    plan.missing_bindings = sorted(topology.bindings - live_b, key=_binding)
    plan.extra_exchanges = sorted(set(live_x) - set(topology.exchanges))
    # a transient queue no route wants belongs to a connection, not to the routes (the network
    # publisher's lease, gridbus.network.publisher, exclusive): it goes with its connection
    plan.extra_queues = sorted(n for n in set(live_q) - set(topology.queues) if live_q[n].get("durable", True))
    # on another system's exchange only what is bound to a gridbus object is the routes' business
    plan.extra_bindings = sorted((b for b in live_b - topology.bindings if b.source not in plan.extra_exchanges
                                  and (naming.is_owned(b.source) or naming.is_owned(b.destination))),
                                 key=_binding)
    return plan
