"""Helpers for the metrics tests: a real Prometheus server (Debian's binary, loopback only) started with the
shipped config templated into a temp folder (scrape interval 1 s, file_sd pointed at the test's folder), the
HTTP API, and polling with deadlines."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

from tests.integration import require_integration

ROOT = Path(__file__).resolve().parents[1]
PROM_DIR = ROOT / "cluster" / "prometheus"
DASHBOARD = ROOT / "cluster" / "grafana" / "dist-vgg.json"

T = TypeVar("T")


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        require_integration(f"{binary} not installed (apt-get install -y --no-install-recommends prometheus)")
    return path  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(fn: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.25) -> T:
    """Poll `fn` until it returns something truthy; fail naming `what` (and the last value) at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last  # type: ignore[return-value]
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; last value: {last!r}")


def http_get(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return r.read().decode()


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [need("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )


def template_config(dest: Path, sd_dir: Path, scrape_interval: str = "1s") -> Path:
    """The shipped prometheus.yml with only what a test must change: intervals, the file_sd folder, and the
    rule file as an absolute path."""
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"]["scrape_interval"] = scrape_interval
    cfg["global"]["evaluation_interval"] = scrape_interval
    cfg["rule_files"] = [str(PROM_DIR / f) for f in cfg["rule_files"]]
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "dist-vgg"]
    (sd,) = job["file_sd_configs"]
    sd["files"] = [str(sd_dir / Path(f).name) for f in sd["files"]]
    sd["refresh_interval"] = scrape_interval
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class PromServer:
    """A Prometheus process for one test; `stop()` always runs (use as a context manager)."""

    def __init__(self, work: Path, sd_dir: Path, scrape_interval: str = "1s") -> None:
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = template_config(work / "config", sd_dir, scrape_interval)
        self.log = open(work / "prometheus.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                need("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def __enter__(self) -> PromServer:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"prometheus exited: {(self.work / 'prometheus.log').read_text()[-2000:]}"
                )
            try:
                return "Ready" in http_get(self.url + "/-/ready", 1.0)
            except OSError:
                return False

        wait_for(ready, 60, "Prometheus to become ready")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        body = json.loads(http_get(url))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """Instant query → the result vector (list of {metric, value})."""
        return self.api("query", query=expr)["result"]

    def targets(self, job: str) -> list[dict]:
        return [
            t for t in self.api("targets", state="active")["activeTargets"] if t["labels"].get("job") == job
        ]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the shipped dashboard."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets") or []:
            out.append((panel["title"], target["expr"]))
    return out


def grafana_to_promql(expr: str, job: str, rate_interval: str = "10s") -> str:
    """Expand the Grafana variables the dashboard uses the way Grafana would for one selected job."""
    return expr.replace("$__rate_interval", rate_interval).replace("$job", job)
