"""The BMC itself: Manager.Reset."""

from __future__ import annotations

import logging

from edge_gateway.drivers.interfaces import BmcInterface
from edge_gateway.drivers.redfish.documents import Document
from edge_gateway.drivers.redfish.service import RedfishService, Refusal
from edge_gateway.drivers.redfish.tables import BMC_RESETS

LOG = logging.getLogger(__name__)

_RESET = "#Manager.Reset"


class RedfishBmc(BmcInterface):
    """Manager.Reset of the first manager of the system that offers it."""

    _service: RedfishService

    def reset_bmc(self) -> None:
        """GracefulRestart if the manager offers it, else ForceRestart. Not idempotent.

        The connection is dropped afterwards: the BMC forgets its sessions when it restarts,
        and the next call connects afresh (and fails as unreachable until it is back).
        """
        with self._service.call("reset BMC"):
            path = _resettable(self._service, self._service.system().json)
            if path is None:
                raise Refusal("no manager of the system offers Manager.Reset")
            manager = self._service.root().get_manager(path)
            allowed = manager.get_allowed_reset_manager_values()  # all if none advertised
            for reset in BMC_RESETS:
                if reset in allowed:
                    break
            else:
                names = ", ".join(sorted(v.value for v in allowed)) or "none"
                raise Refusal(f"the manager offers neither "
                              f"{' nor '.join(r.value for r in BMC_RESETS)}; it offers {names}")
            LOG.info("BMC %s: reset manager %s by %s", self._service.address, path, reset.value)
            manager.reset_manager(reset)
        self._service.forget()


def offered(service: RedfishService, system: Document) -> bool:
    return _resettable(service, system) is not None


def _resettable(service: RedfishService, system: Document) -> str | None:
    """The first manager of the system that advertises Manager.Reset."""
    for path in service.manager_paths(system):
        document = service.optional_json(path)
        if document and _RESET in (document.get("Actions") or {}):
            return path
    return None
