"""The bus's own network model: substation → feeder → DT → consumer (one per consumer meter),
effective-dated, with a transactional outbox of consumer-path updates for the billing systems.

    model.py    what a change is: parsing, limits, reason codes, outcomes (pure, no database)
    schema.py   tables and the two SQL dialects (SQLite file, PostgreSQL by URL)
    store.py    NetworkStore: queries as of T, the outbox, open_store()
    apply.py    one document of changes, validated change by change, in one transaction
    export.py   the consumer-indexing snapshot CSV of the store as of T
    cim.py      IEC 61968-9 MasterDataLinkageConfig → changes

The data contract is docs/network-formats.md.
"""
from bus.network.model import ApplyResult, Change, Outcome, Reason
from bus.network.store import NetworkStore, open_store

__all__ = ["ApplyResult", "Change", "NetworkStore", "Outcome", "Reason", "open_store"]
