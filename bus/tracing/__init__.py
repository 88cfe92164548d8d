"""Message tracing: trace events on every hop, sent over the bus to a recorder and a store.

    data path ──hooks.emit──► TraceEmitter (bounded buffer, background thread, no waiting)
              ──► gridbus.trace (exchange) ──► gridbus.trace (quorum, bounded) ──► recorder ──► store
"""
