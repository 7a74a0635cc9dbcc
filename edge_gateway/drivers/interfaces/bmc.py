"""The BMC itself: its reset."""

from __future__ import annotations

import abc


class BmcInterface(abc.ABC):
    """The BMC's own reset (``Capability.BMC_RESET``)."""

    @abc.abstractmethod
    def reset_bmc(self) -> None:
        """Restart the BMC (Redfish Manager reset, IPMI cold reset); it is gone for a while
        and the driver's session with it. Not idempotent."""
