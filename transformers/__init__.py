"""Transformers: decoders from source formats to canonical documents, encoders back out.

Each is a class registered under the ``gridbus.transformers`` entry-point group
(see ``setup.cfg``) and follows the contract in ``bus.transform``.
"""
