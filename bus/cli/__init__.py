"""`gridbus` command line."""
