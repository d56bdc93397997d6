"""Which port a process exports Prometheus metrics on: base + local rank where free, else any free port
(two jobs, or two test "nodes", can share a host). The port actually bound is what service discovery
publishes, so callers must use the returned value."""

from __future__ import annotations

import logging
import threading
from http.server import HTTPServer

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


def start_exporter(
    registry: CollectorRegistry, base_port: int, local_rank: int, addr: str = "0.0.0.0"
) -> int:
    """Serve `registry` over HTTP; returns the bound port. `base_port` 0 means any free port."""
    server, _ = start_exporter_server(registry, base_port, local_rank, addr)
    return int(server.server_port)


def start_exporter_server(
    registry: CollectorRegistry,
    base_port: int,
    local_rank: int,
    addr: str = "0.0.0.0",
    logger: logging.Logger | None = None,
) -> tuple[HTTPServer, threading.Thread]:
    """`start_exporter`, returning the server (its `server_port` is the bound port) and thread, so the caller
    can shut it down when the run ends. `logger` receives the port-moved warning (default: this module's)."""
    wanted = base_port + local_rank if base_port > 0 else 0
    try:
        server, thread = start_http_server(wanted, addr=addr, registry=registry)
    except OSError as e:
        if wanted == 0:
            raise OSError(f"cannot serve metrics on {addr} (metrics.bind): {e.strerror}") from None
        server, thread = start_http_server(0, addr=addr, registry=registry)
        (logger or log).warning(
            "metrics port %d on %s is in use (%s); exporting on free port %d instead",
            wanted,
            addr,
            e.strerror,
            server.server_port,
        )
    return server, thread
