"""Inventory: what the machine is made of."""

from __future__ import annotations

import abc
from typing import Any


class InventoryInterface(abc.ABC):
    """The full inventory (``Capability.INVENTORY``); the short identity every driver gives
    is ``Driver.describe``."""

    @abc.abstractmethod
    def collect_inventory(self) -> dict[str, Any]:
        """The inventory as JSON-ready data (a read): system, processors, memory, nics (with
        MACs), storage, bmc (firmware); IPMI: fru and device id. Missing parts are left
        out."""
