"""A port for a test's listener, picked when the listener is about to start.

A port that ``bind(("127.0.0.1", 0))`` returns is an ephemeral one: once the probe socket closes, any outgoing
connection on the machine (a Ray worker's gRPC channel, an MLflow client) may take it as its local port. A test
that picks such a port at import time and starts its server minutes later then finds it taken (CI saw
``medtune cluster up`` wait 60 s for a dashboard that could not bind). :func:`listen_port` picks from below the
kernel's ephemeral range and above Ray's worker ports (10002-19999), where no outgoing connection lands, and
checks that the port is free right now.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

RAY_WORKER_PORTS_END = 19999


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def listen_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now, outside the ephemeral range where one is left below it (else an ephemeral one)."""
    low, high = RAY_WORKER_PORTS_END + 1, _ephemeral_start() - 1
    rng = random.SystemRandom()
    for _ in range(200 if high - low > 100 else 0):
        port = rng.randint(low, high)
        if _free(host, port):
            return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
