"""DynamoDB's item operations (and EventBridge's PutEvents) on the wire, without botocore's
per-request machinery.

Every write of the ingest and the rollout engine is one small DynamoDB request, and
botocore spends about 0.75 ms of CPU on each besides the network (measured on this
project's 2-core machine: 0.96 ms a conditional UpdateItem through pynamodb and botocore,
0.23 ms the same request built, signed and sent here; BENCHMARKS.md, "Fleet"): its event
hooks, its request model, its parser, a user agent and an invocation id per call. In a
Lambda that is billed time; on the local stack it is most of the control plane's CPU.

``WireClient`` stands where pynamodb calls botocore's client (``_make_api_call``) and sends
the item operations (``DYNAMODB.operations``) itself, as DynamoDB's JSON protocol defines them:
pynamodb already builds each request in that protocol's shape, so the body is its JSON
(binary values in base64), POSTed with ``X-Amz-Target``, signed by botocore's own SigV4
signer with the client's credentials (refreshed as botocore refreshes them). Everything else
(tables, TTL, descriptions) goes to the botocore client it wraps. What stays botocore's:

- errors are botocore's ``ClientError`` with the answer's code, message, HTTP status and
  modeled fields (``CancellationReasons``, ``Item``), so pynamodb and
  ``chalicelib.availability`` read them as they read botocore's; a connection refused,
  reset or timed out is botocore's ``EndpointConnectionError``, ``ConnectionClosedError``
  or ``ReadTimeoutError``;
- retries: the client's ``total_max_attempts``, for throttling, 5xx and lost connections,
  with botocore's standard backoff (random, up to 2^attempt s, at most 20 s);
- HTTPS to AWS verifies the endpoint against botocore's CA bundle; connections are kept
  alive, up to the client's ``max_pool_connections`` idle, shared by the threads;
- conditions go without the parentheses that change nothing (``store_expressions``: the
  local store parses nested groups slowly);
- with client-side monitoring on (``AWS_CSM_ENABLED``), each attempt is reported as
  botocore reports it (the local stack counts requests that way).

EventBridge speaks the same JSON protocol (``EVENTBRIDGE``): the ingest puts a batch of
events after most batches it stores, and botocore's machinery cost a fifth of the ingest's
CPU while a fleet registered (BENCHMARKS.md, "Fleet").

``EDGEPLANE_STORE_CLIENT=botocore`` turns this off (``settings``): tests that run moto
inside their process need botocore, whose sending moto intercepts.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)

from chalicelib.availability import NOT_NOW
from chalicelib.store_expressions import plain


@dataclass(frozen=True)
class JsonProtocol:
    """What one AWS service's JSON protocol needs on the wire: the operations sent there
    (any other goes to botocore), the ``X-Amz-Target`` prefix, the content type, the name
    requests are signed for and the name client-side monitoring reports."""

    operations: frozenset[str]
    target_prefix: str
    content_type: str
    signing_name: str
    monitoring_name: str
    item_values: bool  # DynamoDB's attribute values: binary ones in base64, conditions


DYNAMODB = JsonProtocol(
    operations=frozenset({
        "GetItem", "PutItem", "UpdateItem", "DeleteItem", "BatchGetItem", "BatchWriteItem",
        "Query", "Scan", "TransactGetItems", "TransactWriteItems",
    }),
    target_prefix="DynamoDB_20120810.", content_type="application/x-amz-json-1.0",
    signing_name="dynamodb", monitoring_name="DynamoDB", item_values=True)
EVENTBRIDGE = JsonProtocol(
    operations=frozenset({"PutEvents"}), target_prefix="AWSEvents.",
    content_type="application/x-amz-json-1.1", signing_name="events",
    monitoring_name="EventBridge", item_values=False)
# Answers worth another attempt: the store's "not now", and what botocore's standard retry
# mode also tries again.
RETRY_CODES = NOT_NOW | {"TransactionInProgressException", "RequestTimeout",
                         "RequestTimeoutException", "PriorRequestNotComplete"}
MAX_BACKOFF_S = 20.0
MAX_ANSWER_BYTES = 32 << 20  # a 1 MB page, or 100 items of 400 KB, and room to spare
# A connection idle this long is not reused: servers close idle ones (node's HTTP server,
# the local store's, after 5 s), and a request sent on one already closed is lost.
MAX_IDLE_S = 4.0


class WireClient:
    """A botocore client's ``_make_api_call`` (where pynamodb, and ``events``, call it), the
    ``protocol``'s operations sent directly.

    Any other attribute is the wrapped client's, so pynamodb's checks of its client (its
    credentials, its endpoint) see botocore's."""

    def __init__(self, botocore_client: Any, protocol: JsonProtocol = DYNAMODB) -> None:
        self._botocore = botocore_client
        self._protocol = protocol
        meta = botocore_client.meta
        self.endpoint_url: str = meta.endpoint_url
        parts = urlsplit(self.endpoint_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        default_port = self._port == (443 if self._https else 80)
        self._host_header = self._host if default_port else f"{self._host}:{self._port}"
        self._path = parts.path or "/"
        self._region: str = meta.region_name
        config = meta.config
        self._connect_timeout = float(config.connect_timeout or 60)
        self._read_timeout = float(config.read_timeout or 60)
        retries = config.retries or {}
        self._attempts = max(1, int(retries.get("total_max_attempts")
                                    or retries.get("max_attempts", 2) + 1))
        self._tls = _tls_context() if self._https else None
        self._pool_size = int(config.max_pool_connections or 10)
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []  # newest last
        self._lock = threading.Lock()
        self._monitor = _Monitor.from_environment(protocol.monitoring_name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._botocore, name)

    def _make_api_call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        if operation not in self._protocol.operations:
            answer: dict[str, Any] = self._botocore._make_api_call(operation, params)
            return answer
        item_values = self._protocol.item_values
        body = json.dumps(_plain_conditions(params) if item_values else params,
                          separators=(",", ":"), default=_binary).encode()
        attempt = 0
        while True:
            attempt += 1
            try:
                status, headers, raw = self._send(operation, body)
            except (EndpointConnectionError, HTTPClientError):
                if attempt >= self._attempts:
                    raise
            else:
                if status == 200:
                    return _decode(raw, self.endpoint_url, item_values)
                error = _client_error(operation, status, headers, raw)
                code = error.response["Error"]["Code"]
                if attempt >= self._attempts or not (code in RETRY_CODES or status >= 500):
                    raise error
            time.sleep(random.random() * min(MAX_BACKOFF_S, 2.0 ** (attempt - 1)))  # noqa: S311

    def _send(self, operation: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One attempt: (status, headers in lower case, body). A kept-alive connection the
        server closed meanwhile is opened again once before the attempt counts as lost."""
        headers = self._signed_headers(operation, body)
        self._monitor.attempt(operation)
        for stale_allowed in (True, False):
            connection, fresh = self._take_connection(reuse=stale_allowed)
            try:
                connection.request("POST", self._path, body=body, headers=headers)
                response = connection.getresponse()
                raw = response.read(MAX_ANSWER_BYTES + 1)
            except TimeoutError as exc:
                connection.close()
                raise ReadTimeoutError(endpoint_url=self.endpoint_url, error=exc) from exc
            except (http.client.HTTPException, OSError) as exc:
                connection.close()
                if stale_allowed and not fresh:
                    continue  # the server closed it while it was idle: a new one
                raise ConnectionClosedError(endpoint_url=self.endpoint_url) from exc
            if len(raw) > MAX_ANSWER_BYTES:
                connection.close()
                raise HTTPClientError(error=f"{self.endpoint_url} answered more than "
                                      f"{MAX_ANSWER_BYTES} bytes")
            if response.will_close:
                connection.close()
            else:
                self._give_back(connection)
            return response.status, {k.lower(): v for k, v in response.getheaders()}, raw
        raise AssertionError("unreachable")  # pragma: no cover

    def _signed_headers(self, operation: str, body: bytes) -> dict[str, str]:
        protocol = self._protocol
        request = AWSRequest("POST", self.endpoint_url, data=body, headers={
            "Content-Type": protocol.content_type,
            "X-Amz-Target": protocol.target_prefix + operation, "Host": self._host_header})
        credentials = self._botocore._request_signer._credentials
        SigV4Auth(credentials and credentials.get_frozen_credentials(), protocol.signing_name,
                  self._region).add_auth(request)
        return dict(request.headers.items())

    def _take_connection(self, reuse: bool = True) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to the endpoint (unless not ``reuse``), or a new one:
        (connection, whether new). Connections are shared by the threads (ingest makes new
        writer threads for each batch), as botocore's pool shares them; one idle longer
        than ``MAX_IDLE_S`` is closed rather than reused (the server may have closed it)."""
        stale: list[tuple[http.client.HTTPConnection, float]] = []
        with self._lock:
            if reuse and self._idle:
                if time.monotonic() - self._idle[-1][1] < MAX_IDLE_S:
                    return self._idle.pop()[0], False
                stale, self._idle = self._idle, []  # the newest is too old: all are
        for old, _ in stale:
            old.close()
        connection: http.client.HTTPConnection
        if self._tls is not None:
            connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=self._tls)
        else:
            connection = http.client.HTTPConnection(
                self._host, self._port, timeout=self._connect_timeout)
        try:
            connection.connect()
        except OSError as exc:  # refused, unreachable, timed out, a certificate refused
            connection.close()
            raise EndpointConnectionError(endpoint_url=self.endpoint_url, error=exc) from exc
        assert connection.sock is not None
        connection.sock.settimeout(self._read_timeout)
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, True

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._pool_size:
                self._idle.append((connection, time.monotonic()))
                return
        connection.close()


def _plain_conditions(params: dict[str, Any]) -> dict[str, Any]:
    """The request with its conditions' needless parentheses left out (see
    ``store_expressions``); the caller's dict is left as it was."""
    changed = {}
    for name in ("ConditionExpression", "FilterExpression"):
        expression = params.get(name)
        if isinstance(expression, str):
            written = plain(expression)
            if written != expression:
                changed[name] = written
    return {**params, **changed} if changed else params


def _tls_context() -> ssl.SSLContext:
    """Verify DynamoDB's certificate against the CA bundle botocore would use."""
    from botocore.httpsession import get_cert_path

    return ssl.create_default_context(cafile=get_cert_path(True))


def _binary(value: object) -> str:
    """JSON for what json cannot write itself: binary attribute values, as base64."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"a {type(value).__name__} is not a DynamoDB value")


def _attribute_value(data: dict[str, Any]) -> Any:
    """A binary attribute value's base64 as bytes (``B``, ``BS``), as botocore gives them.
    Only an attribute value is a one-key object whose ``B`` is a string."""
    if len(data) == 1:
        if isinstance(data.get("B"), str):
            return {"B": base64.b64decode(data["B"])}
        values = data.get("BS")
        if isinstance(values, list) and all(isinstance(v, str) for v in values):
            return {"BS": [base64.b64decode(v) for v in values]}
    return data


def _decode(raw: bytes, endpoint_url: str, item_values: bool = True) -> dict[str, Any]:
    """An answer's JSON object; anything else is no answer (botocore's HTTPClientError)."""
    if not raw:
        return {}
    hook = _attribute_value if item_values and b'"B' in raw else None
    try:
        data = json.loads(raw, object_hook=hook)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise HTTPClientError(error=f"{endpoint_url} answered no JSON object")
    return data


def _client_error(operation: str, status: int, headers: dict[str, str],
                  raw: bytes) -> ClientError:
    """The answer as botocore's ClientError: code, message, status, modeled fields."""
    try:
        data = _decode(raw, "")
    except HTTPClientError:
        data = {}
    code = str(data.pop("__type", "") or status).rsplit("#", 1)[-1]
    message = data.pop("message", None) or data.pop("Message", None) or \
        raw[:200].decode(errors="replace")
    response: dict[str, Any] = {
        **data,
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers,
                             "RequestId": headers.get("x-amzn-requestid", "")},
    }
    return ClientError(response, operation)


class _Monitor:
    """Client-side monitoring's ApiCallAttempt datagrams, as botocore sends them."""

    def __init__(self, address: tuple[str, int] | None, service: str = "DynamoDB") -> None:
        self._address = address
        self._service = service
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if address else None

    @classmethod
    def from_environment(cls, service: str) -> _Monitor:
        if os.environ.get("AWS_CSM_ENABLED", "").lower() != "true":
            return cls(None)
        return cls((os.environ.get("AWS_CSM_HOST", "127.0.0.1"),
                    int(os.environ.get("AWS_CSM_PORT", "31000"))), service)

    def attempt(self, operation: str) -> None:
        if self._socket is None or self._address is None:
            return
        event = {"Version": 1, "ClientId": os.environ.get("AWS_CSM_CLIENT_ID", ""),
                 "Type": "ApiCallAttempt", "Service": self._service, "Api": operation,
                 "Timestamp": int(time.time() * 1000)}
        try:
            self._socket.sendto(json.dumps(event).encode(), self._address)
        except OSError:
            pass  # monitoring never fails a request
