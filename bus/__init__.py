"""gridbus core: envelope, route model, topology, publisher, Celery app and CLI.

This package never imports ``connectors`` or ``transformers``; it finds them by
name through ``bus.registry``.
"""
__version__ = "0.1.0"
