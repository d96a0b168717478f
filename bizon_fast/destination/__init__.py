from bizon_fast.destination.base import Destination, DestinationContext

__all__ = ["Destination", "DestinationContext"]
