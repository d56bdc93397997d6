"""Which port a process exports Prometheus metrics on: base + local rank where free, else any free port
(two jobs, or two test "nodes", can share a host). The port actually bound is what service discovery
publishes, so callers must use the returned value."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


def start_exporter(
    registry: CollectorRegistry, base_port: int, local_rank: int, addr: str = "0.0.0.0"
) -> int:
    """Serve `registry` over HTTP; returns the bound port. `base_port` 0 means any free port."""
    wanted = base_port + local_rank if base_port > 0 else 0
    try:
        server, _ = start_http_server(wanted, addr=addr, registry=registry)
    except OSError as e:
        if wanted == 0:
            raise
        server, _ = start_http_server(0, addr=addr, registry=registry)
        log.warning(
            "metrics port %d on %s is in use (%s); exporting on free port %d instead",
            wanted,
            addr,
            e.strerror,
            server.server_port,
        )
    return int(server.server_port)
