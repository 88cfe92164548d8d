"""`gridbus bench`: end-to-end measurements beside a minimal hand-written baseline."""
