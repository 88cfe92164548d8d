"""Request-response (use cases 6, 7, 8): the requests the gateway took, their states and replies."""
