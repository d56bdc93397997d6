"""Metrics settings (part of every run's resolved config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MetricsConfig:
    prometheus: str = "auto"
    """auto | on | off. auto: export on every rank when running under SLURM, not otherwise."""
    port: int = 9400
    """Base port: rank with local rank r binds port + r where free, else any free port (logged)."""
    bind: str = "0.0.0.0"
    """Address the exporter listens on (127.0.0.1 to keep it local)."""
    sd_dir: str = ""
    """Folder for Prometheus file_sd target files (one per job; removed at the end). Empty: none written."""
    advertise: str = ""
    """Host name or address Prometheus should scrape this node at. Empty: the bind address, or this machine's
    host name when binding all interfaces (0.0.0.0 / ::)."""

    def __post_init__(self) -> None:
        if self.prometheus not in ("auto", "on", "off"):
            raise ValueError(f"metrics.prometheus={self.prometheus!r} is not one of auto, on, off")
        if not 0 <= self.port < 65536:
            raise ValueError(f"metrics.port={self.port} is not a TCP port (0 = any free port)")
