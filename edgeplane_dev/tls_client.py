"""Connecting an MQTT client to a broker that checks who connects (the stack's, with TLS)."""

from __future__ import annotations

import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt

from edgeplane_dev.ports import LOOPBACK


def connect(client: mqtt.Client, port: int, timeout: float = 10.0) -> None:
    """Connect ``client`` (its TLS set up already) and start its loop; return once the
    broker accepted it, else stop the loop and raise ConnectionError saying why. A
    disconnect handler the client has is still called."""
    answered = threading.Event()
    failure: list[str] = []
    previous = client.on_disconnect

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                   properties: Any) -> None:
        if reason.is_failure:
            failure.append(str(reason))
        answered.set()

    def on_disconnect(*args: Any) -> None:
        failure.append("disconnected")
        answered.set()
        if previous is not None:
            previous(*args)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(LOOPBACK, port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise ConnectionError(f"connect failed: {exc or type(exc).__name__}") from None
    client.loop_start()
    if not answered.wait(timeout) or failure:
        client.loop_stop()
        raise ConnectionError(f"the broker refused the client: "
                              f"{', '.join(failure) or 'no answer'}")
