"""requests' HTTPS transport to BMCs, with answers read through a small buffer.

http.client gives every answer an 8 KiB read buffer, allocated when the answer is awaited.
A site works on all its machines at once and each waits on one answer most of the time, so
those buffers add up (see BENCHMARKS.md, "Memory"). A BMC's status line and headers fit in
``READ_BUFFER``; a body is read in reads as large as it is, which pass the buffer by.
"""

from __future__ import annotations

import http.client
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPSConnectionPool

READ_BUFFER = 2048


class _SmallReads:
    """The socket as http.client's answer sees it: it only asks for a file to read."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def makefile(self, mode: str, buffering: int | None = None, **kwargs: Any) -> Any:
        return self._sock.makefile(mode, READ_BUFFER, **kwargs)


class _Answer(http.client.HTTPResponse):
    def __init__(self, sock: Any, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None) -> None:
        super().__init__(_SmallReads(sock), debuglevel, method, url)  # type: ignore[arg-type]


class _Connection(HTTPSConnection):
    response_class = _Answer


class _Pool(HTTPSConnectionPool):
    ConnectionCls = _Connection


class BmcAdapter(HTTPAdapter):
    """requests' adapter whose HTTPS pools read answers through ``READ_BUFFER``."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            **self.poolmanager.pool_classes_by_scheme, "https": _Pool}
