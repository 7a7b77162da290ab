"""The world simulator: a deterministic store — sites, catalog, stock, customers, orders,
shipments — and the ground truth the models learn from. See `models.world.core`."""

from __future__ import annotations

from models.world.core import (
    CARRIERS,
    CATEGORIES,
    METROS,
    Region,
    Shelf,
    World,
    WorldSpec,
    world_now,
)
from models.world.orders import Destination, Order, OrderLine
from models.world.people import Customer

__all__ = [
    "CARRIERS",
    "CATEGORIES",
    "METROS",
    "Customer",
    "Destination",
    "Order",
    "OrderLine",
    "Region",
    "Shelf",
    "World",
    "WorldSpec",
    "world_now",
]
