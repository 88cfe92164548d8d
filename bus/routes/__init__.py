"""Route files (YAML) → a validated RouteTable."""
from bus.routes.loader import load_routes
from bus.routes.model import Endpoint, QueueOptions, RetryPolicy, Route, RouteTable

__all__ = ["load_routes", "Endpoint", "QueueOptions", "RetryPolicy", "Route", "RouteTable"]
