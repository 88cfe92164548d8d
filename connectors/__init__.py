"""Source and destination adapters, registered as entry points ``gridbus.connectors``."""
