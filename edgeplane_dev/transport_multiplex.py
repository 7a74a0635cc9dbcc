"""Many MQTT sessions on one thread: a selectors (epoll) loop that drives paho clients.

paho's ``loop_start()`` gives every client a thread of its own that waits in select(),
which cannot watch file descriptors above 1,024: neither scales to the thousands of
sessions of a fleet simulator. ``MultiplexedMqtt`` is paho's "external event loop" instead:
one thread waits on every client's socket at once, calls ``loop_read()`` / ``loop_write()``
when a socket is ready and ``loop_misc()`` (keepalive) every ``misc_interval``, and
reconnects lost sessions with exponential backoff and jitter, with at most
``max_connecting`` connections waiting for their CONNACK at a time, so a broker is never
flooded with CONNECTs.

``MultiplexedTransport`` is ``MqttTransport`` (same persistent session, last will, QoS 1 and
delivery reports) with its network I/O on a shared loop instead of a thread of its own: the
gateway core takes either.

Threads: any thread may publish (the loop is woken to write). Socket work, every paho
callback and so the gateway's ``on_connect`` / ``on_message`` run on the loop thread and
must not block (the gateway core's do not). paho's ``reconnect()`` connects (TCP, and TLS if
configured) blocking, on the loop thread: instant on a nearby broker, but a slow one holds
up every session of the loop for as long as the connect takes.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from edge_gateway.config import MqttSettings
from edge_gateway.errors import GatewayError
from edge_gateway.transport import (
    ConnectHandler,
    DeliveredHandler,
    MessageHandler,
    MqttTransport,
    WillFactory,
)

LOG = logging.getLogger(__name__)

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


@dataclass(eq=False)
class Link:
    """One client attached to a loop. Its fields belong to the loop thread."""

    client: mqtt.Client
    name: str
    min_delay: float
    max_delay: float
    delay: float = 0.0  # the wait before the next reconnect (doubles on every failure)
    wanted: bool = True  # keep it connected; False once it is being detached
    fd: int | None = None  # the socket registered with the selector
    mask: int = 0
    connecting: bool = False  # CONNECT sent, no CONNACK yet
    failures: int = 0
    service_queued: bool = False
    gone: threading.Event = field(default_factory=threading.Event)  # detached, socket closed


class MultiplexedMqtt:
    """One thread, one selector, any number of paho clients."""

    def __init__(self, max_connecting: int = 64, misc_interval: float = 1.0,
                 stop_timeout: float = 10.0, name: str = "mqtt-multiplexed") -> None:
        self.max_connecting = max_connecting
        self.misc_interval = misc_interval
        self.stop_timeout = stop_timeout
        self.name = name
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for end in (self._wake_r, self._wake_w):
            end.setblocking(False)
        self._selector.register(self._wake_r, READ, None)
        self._wake_pending = False
        self._calls: deque[Callable[[], None]] = deque()  # for the loop thread, from any
        self._links: dict[mqtt.Client, Link] = {}
        self._due: list[tuple[float, int, Link]] = []  # (when, tie-break, link) to connect
        self._tie_break = itertools.count()
        self._thread: threading.Thread | None = None
        self._loop_ident: int | None = None
        self._stop_deadline: float | None = None
        # Read from any thread, written by the loop thread only.
        self.connecting = 0
        self.connected = 0

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> MultiplexedMqtt:
        """Start the loop thread (once: a stopped loop cannot start again)."""
        if self._thread is not None:
            raise GatewayError("the MQTT loop was started already")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Disconnect every session cleanly (force-close after ``stop_timeout``), end the loop."""
        thread = self._thread
        if thread is not None:
            self._call_soon(self._begin_stop)
            thread.join(self.stop_timeout + 5)
            if thread.is_alive():
                LOG.error("the MQTT loop thread did not end")
                return
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def sessions(self) -> int:
        return len(self._links)

    def __enter__(self) -> MultiplexedMqtt:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what clients ask for (any thread) -------------------------------------------

    def attach(self, client: mqtt.Client, name: str, min_delay: float = 1.0,
               max_delay: float = 60.0) -> Link:
        """Connect ``client`` (after its ``connect_async()``) and keep it connected.

        Attach a client once; again only after ``detach`` has returned.
        """
        link = Link(client, name, min_delay, max_delay, delay=min_delay)
        # Set, this callback also keeps publish() from writing on the caller's thread.
        client.on_socket_register_write = lambda _client, _userdata, _sock: self.notify(link)
        self._call_soon(lambda: self._add(link))
        return link

    def detach(self, link: Link, clean: bool = True) -> bool:
        """Disconnect and forget; True once the socket is closed.

        ``clean``: send DISCONNECT (the broker drops the last will). Otherwise the link just
        drops, as if the network went away, and the broker publishes the last will.
        """
        if not self.running:
            return True
        self._call_soon(lambda: self._begin_detach(link, clean))
        if threading.get_ident() == self._loop_ident:
            return False  # from a callback: it completes once the callback has returned
        if link.gone.wait(self.stop_timeout):
            return True
        LOG.warning("MQTT session %s: no clean disconnect in %.0f s; closing its socket",
                    link.name, self.stop_timeout)
        self._call_soon(lambda: self._force_close(link))
        return link.gone.wait(5)

    def break_connection(self, link: Link) -> None:
        """Cut the connection without DISCONNECT (the broker sends the will); it reconnects."""
        self._call_soon(lambda: self._shut_down_socket(link))

    def notify(self, link: Link) -> None:
        """The client has something to send: have the loop write it."""
        if threading.get_ident() == self._loop_ident or link.service_queued:
            return  # the loop services a client after every call it makes into it
        link.service_queued = True
        self._call_soon(lambda: self._service(link, queued=True))

    # --- the loop thread -------------------------------------------------------------

    def _call_soon(self, call: Callable[[], None]) -> None:
        self._calls.append(call)
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._wake_w.send(b"\0")
            except OSError:  # full: the loop is awake anyway; closed: the loop has ended
                pass

    def _run(self) -> None:
        self._loop_ident = threading.get_ident()
        next_misc = time.monotonic() + self.misc_interval
        while True:
            now = time.monotonic()
            if self._stop_deadline is not None and (not self._links or now > self._stop_deadline):
                for link in list(self._links.values()):
                    self._force_close(link)
                return
            timeout = next_misc - now
            if self._due and self.connecting < self.max_connecting:
                timeout = min(timeout, self._due[0][0] - now)
            try:
                for key, mask in self._selector.select(max(0.0, timeout)):
                    if key.data is None:
                        self._drain_wake()
                    elif key.fd == key.data.fd:
                        self._on_ready(key.data, mask)
                self._run_calls()
                self._start_due_connects()
                if time.monotonic() >= next_misc:
                    next_misc = time.monotonic() + self.misc_interval
                    self._misc()
            except Exception:  # a bug here must not silently stop every session
                LOG.exception("MQTT loop: unexpected error")
                time.sleep(0.1)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        self._wake_pending = False  # after draining: a wake sent from now on is seen

    def _run_calls(self) -> None:
        for _ in range(len(self._calls)):
            call = self._calls.popleft()
            try:
                call()
            except Exception:
                LOG.exception("MQTT loop: a queued call failed")

    def _guarded(self, link: Link, action: Callable[[], object]) -> None:
        """Call into paho; an exception (from a callback) must not end the loop."""
        try:
            action()
        except Exception:
            LOG.exception("MQTT session %s: error in the network loop", link.name)

    def _on_ready(self, link: Link, mask: int) -> None:
        if mask & READ:
            self._guarded(link, link.client.loop_read)
        self._service(link)

    def _service(self, link: Link, queued: bool = False) -> None:
        """Write what the client has queued, then bring the selector up to date with it."""
        if queued:
            link.service_queued = False
        client = link.client
        if link.fd is not None and client.socket() is not None and client.want_write():
            self._guarded(link, client.loop_write)
        self._refresh(link)

    def _refresh(self, link: Link) -> None:
        if link.fd is None:
            return
        client = link.client
        sock = client.socket()
        if sock is None or sock.fileno() != link.fd:  # paho closed it
            self._unregister(link)
            self._connection_ended(link)
            return
        if link.connecting and client.is_connected():
            link.connecting, link.failures, link.delay = False, 0, link.min_delay
            self.connecting -= 1
            self.connected += 1
        mask = READ | (WRITE if client.want_write() else 0)
        if mask != link.mask:
            self._selector.modify(link.fd, mask, link)
            link.mask = mask

    def _unregister(self, link: Link) -> None:
        if link.fd is None:
            return
        try:
            self._selector.unregister(link.fd)
        except (KeyError, ValueError, OSError):
            pass
        if link.connecting:
            self.connecting -= 1
        else:
            self.connected -= 1
        link.fd, link.mask, link.connecting = None, 0, False

    def _connection_ended(self, link: Link) -> None:
        if not link.wanted or self._stop_deadline is not None:
            self._forget(link)
            return
        wait = link.delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret
        link.delay = min(link.delay * 2, link.max_delay)
        link.failures += 1
        LOG.debug("MQTT session %s: reconnecting in %.1f s", link.name, wait)
        self._schedule(link, wait)

    def _schedule(self, link: Link, wait: float) -> None:
        heapq.heappush(self._due, (time.monotonic() + wait, next(self._tie_break), link))

    def _start_due_connects(self) -> None:
        now = time.monotonic()
        while self._due and self.connecting < self.max_connecting and self._due[0][0] <= now:
            link = heapq.heappop(self._due)[2]
            if link.wanted and link.fd is None and self._links.get(link.client) is link:
                self._connect(link)

    def _connect(self, link: Link) -> None:
        client = link.client
        try:
            rc = client.reconnect()
        except OSError as exc:  # refused, unreachable, timed out, TLS
            self._connect_failed(link, str(exc) or type(exc).__name__)
            return
        except Exception as exc:  # e.g. paho's ValueError for a bad host: retried all the same
            LOG.exception("MQTT session %s: connecting failed", link.name)
            self._connect_failed(link, repr(exc))
            return
        sock = client.socket()
        if rc != mqtt.MQTT_ERR_SUCCESS or sock is None:
            self._connect_failed(link, mqtt.error_string(rc))
            return
        link.fd, link.mask, link.connecting = sock.fileno(), READ | WRITE, True
        self._selector.register(link.fd, link.mask, link)
        self.connecting += 1
        self._service(link)  # the CONNECT goes out now

    def _connect_failed(self, link: Link, reason: str) -> None:
        level = logging.WARNING if link.failures == 0 else logging.DEBUG
        LOG.log(level, "MQTT session %s: cannot connect to %s:%s: %s", link.name,
                link.client.host, link.client.port, reason)
        self._connection_ended(link)

    def _misc(self) -> None:
        for link in list(self._links.values()):
            if link.fd is not None:
                self._guarded(link, link.client.loop_misc)
                self._service(link)

    def _add(self, link: Link) -> None:
        if link.client in self._links:
            LOG.error("MQTT session %s is attached already", link.name)
            return
        if self._stop_deadline is not None:
            link.gone.set()
            return
        self._links[link.client] = link
        self._schedule(link, 0.0)

    def _begin_detach(self, link: Link, clean: bool) -> None:
        link.wanted = False
        if link.fd is None:
            self._forget(link)
        elif clean:
            self._guarded(link, link.client.disconnect)  # paho closes once it is written
            self._service(link)
        else:
            self._shut_down_socket(link)

    def _shut_down_socket(self, link: Link) -> None:
        """The socket reads EOF next: paho sees the connection lost, like a network failure."""
        sock = link.client.socket()
        if link.fd is not None and sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _force_close(self, link: Link) -> None:
        sock = link.client.socket()
        self._unregister(link)
        if sock is not None:
            sock.close()
        self._forget(link)

    def _forget(self, link: Link) -> None:
        link.wanted = False
        if self._links.get(link.client) is link:
            del self._links[link.client]
        link.gone.set()

    def _begin_stop(self) -> None:
        self._stop_deadline = time.monotonic() + self.stop_timeout
        for link in list(self._links.values()):
            self._begin_detach(link, clean=True)


class MultiplexedTransport(MqttTransport):
    """``MqttTransport`` whose network I/O runs on a shared ``MultiplexedMqtt`` loop.

    Besides the ``Transport`` calls it can fake a WAN outage: ``go_offline()`` drops the
    connection (the broker publishes the last will and queues the site's QoS 1 messages) and
    keeps it down until ``go_online()``; ``drop_connection()`` drops it for the reconnect
    delay only.
    """

    def __init__(self, loop: MultiplexedMqtt, settings: MqttSettings, client_id: str,
                 subscriptions: list[str], will: WillFactory) -> None:
        super().__init__(settings, client_id, subscriptions, will)
        self.client_id = client_id
        self._loop = loop
        self._link: Link | None = None

    def start(self, on_connect: ConnectHandler, on_message: MessageHandler,
              on_delivered: DeliveredHandler) -> None:
        if self._link is not None:
            raise GatewayError(f"MQTT session {self.client_id} is started already")
        self._handlers = (on_connect, on_message, on_delivered)
        self._client.connect_async(self.settings.host, self.settings.port,
                                   keepalive=self.settings.keepalive)
        self._link = self._loop.attach(self._client, self.client_id,
                                       self.settings.reconnect_min_delay,
                                       self.settings.reconnect_max_delay)

    def stop(self) -> None:
        self._detach(clean=True)

    def publish(self, topic: str, payload: bytes, key: str, retain: bool = False) -> None:
        super().publish(topic, payload, key, retain)
        link = self._link
        if link is not None:
            self._loop.notify(link)

    def go_offline(self) -> None:
        self._detach(clean=False)

    def go_online(self) -> None:
        if self._handlers is None:
            raise GatewayError(f"MQTT session {self.client_id} was never started")
        self.start(*self._handlers)

    def drop_connection(self) -> None:
        if self._link is not None:
            self._loop.break_connection(self._link)

    def _detach(self, clean: bool) -> None:
        link, self._link = self._link, None
        if link is not None and not self._loop.detach(link, clean=clean):
            LOG.warning("MQTT session %s: its socket may still be open", self.client_id)
        self.connected.clear()
