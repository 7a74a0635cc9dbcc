"""A site's cache as the gateway runs it: the store, its LAN server, and the URLs BMCs get.

``local_url`` is what a step hands a BMC instead of the origin's URL, once ``ensure`` has
the artifact: ``http://<advertise>:<port>/a/<sha256>[/<name>]`` (https with a
certificate), short and without a query string; ``machine_url`` names the copy after one
machine (``/a/<sha256>/<tag>.iso``), so ``reads`` tells when that machine's BMC read it.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
from dataclasses import asdict
from pathlib import Path

from edge_gateway.cache.artifact import Artifact, CacheError
from edge_gateway.cache.reads import ReadLog
from edge_gateway.cache.server import LanServer, ProvisionRoutes
from edge_gateway.cache.settings import CacheSettings
from edge_gateway.cache.store import ArtifactStore, CacheStats
from edgeplane.protocol import CacheStatus

LOG = logging.getLogger(__name__)


class SiteCache:
    def __init__(self, settings: CacheSettings, store: ArtifactStore | None = None,
                 provisioning: ProvisionRoutes | None = None) -> None:
        self.settings = settings
        self.store = store or ArtifactStore(settings.directory, settings.max_bytes)
        self.reads = ReadLog()
        # The site's provisioning (edge_gateway.provision.site), whose routes it serves.
        self.provisioning = provisioning
        self._server: LanServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.settings.port

    def start(self) -> None:
        """Listen on the site LAN (CacheError if the address cannot be bound)."""
        tls = None
        if self.settings.tls_cert and self.settings.tls_key:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        try:
            self._server = LanServer((self.settings.listen, self.settings.port), self.store,
                                     self.settings.max_clients, tls, self.reads,
                                     self.provisioning)
        except OSError as exc:
            raise CacheError(f"artifact cache: cannot listen on {self.settings.listen}:"
                             f"{self.settings.port}: {exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="artifact-cache-lan", daemon=True)
        self._thread.start()
        LOG.info("artifact cache %s (%d bytes at most) serves the site on %s",
                 self.settings.directory, self.settings.max_bytes, self.base_url)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.store.flush()

    @property
    def base_url(self) -> str:
        scheme = "https" if self.settings.tls_cert else "http"
        host = self.settings.advertise
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    def local_url(self, artifact: Artifact) -> str:
        name = artifact.name
        return f"{self.base_url}/a/{artifact.sha256}" + (f"/{name}" if name else "")

    def machine_url(self, artifact: Artifact, machine: str) -> str:
        """The LAN URL of ``artifact`` under ``machine_name(artifact, machine)``."""
        return f"{self.base_url}/a/{artifact.sha256}/{machine_name(artifact, machine)}"

    def ensure(self, artifact: Artifact) -> Path:
        return self.store.ensure(artifact)

    def stats(self) -> CacheStats:
        return self.store.stats()

    def status(self, site: str) -> CacheStatus:
        """The ``cache`` message the gateway reports to the cloud."""
        return CacheStatus(site=site, **asdict(self.store.stats()))


def machine_name(artifact: Artifact, machine: str) -> str:
    """A short name of ``artifact`` for one machine: 12 hex digits of the machine id's
    digest, with the origin's extension (``.iso`` if it has none)."""
    tag = hashlib.sha256(machine.encode()).hexdigest()[:12]
    stem, dot, suffix = (artifact.name or "").rpartition(".")
    if not (stem and dot and suffix.isalnum() and len(suffix) <= 8):
        suffix = "iso"
    return f"{tag}.{suffix.lower()}"
