"""Stand-in systems for tests, the demo and benchmarks: real processes on loopback.

``simulators`` never imports ``bus``, ``connectors`` or ``transformers``; the bus
reaches a simulator only over the wire (HTTP, files) or as a subprocess
(``python -m simulators.mdms``, ``python -m simulators.hes_files``).
"""
