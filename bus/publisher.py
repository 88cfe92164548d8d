"""Old import path of ``bus.messaging.publisher``, kept for ``bus/cli`` until it imports the new one."""
from bus.messaging.publisher import ConfirmingPublisher

__all__ = ["ConfirmingPublisher"]
