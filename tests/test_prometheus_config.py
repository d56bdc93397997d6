"""The shipped cluster files pass Prometheus's own checks: `promtool check config` / `check rules`, the alert
unit tests in rules_test.yml (each alert fires on its bad series, stays quiet on healthy ones), and the
checked-in Grafana dashboard is exactly what its generator produces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from dist_vgg.launch import LaunchEnv
from dist_vgg.metrics import RunLabels
from dist_vgg.metrics.config import MetricsConfig
from dist_vgg.metrics.setup import build_sink
from tests.metrics_fixtures import PROM_DIR, ROOT, free_port, http_get, need, template_config, wait_for

pytestmark = pytest.mark.timeout(120)


def _promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([need("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=PROM_DIR)


@pytest.mark.integration
def test_promtool_check_config_and_rules() -> None:
    out = _promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout and "rules.yml" in out.stdout  # the rule file is found and valid too
    out = _promtool("check", "rules", "rules.yml")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.integration
def test_alert_rules_unit_tests() -> None:
    out = _promtool("test", "rules", "rules_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    rules = (PROM_DIR / "rules.yml").read_text()
    tests = (PROM_DIR / "rules_test.yml").read_text()
    alerts = [
        line.split(":", 1)[1].strip() for line in rules.splitlines() if line.strip().startswith("- alert:")
    ]
    assert len(alerts) >= 6
    for name in alerts:  # every alert has a test that expects it to fire
        assert f"alertname: {name}" in tests, f"{name} has no unit test in rules_test.yml"


@pytest.mark.integration
def test_templated_test_config_still_valid(tmp_path) -> None:
    """The integration tests change only intervals and paths; the result must still be a valid config."""
    config = template_config(tmp_path, tmp_path / "sd")
    out = subprocess.run(
        [need("promtool"), "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_json_is_generated() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "cluster" / "grafana" / "build_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.integration
def test_run_local_script_scrapes_a_registered_exporter(tmp_path) -> None:
    """`cluster/prometheus/run_local.sh SD_DIR PORT` as a user runs it: Prometheus comes up on loopback with
    the shipped config and scrapes an exporter that registered itself in SD_DIR."""
    need("prometheus")
    port = free_port()
    env = {**os.environ, "SCRAPE_INTERVAL": "1s", "PROMETHEUS_DATA": str(tmp_path / "data")}
    with open(tmp_path / "prometheus.out", "w") as out:
        proc = subprocess.Popen(
            [str(PROM_DIR / "run_local.sh"), str(tmp_path / "sd"), str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    labels = RunLabels("local-run", "A", "tiny", 0, "n1")
    cfg = MetricsConfig(prometheus="on", port=0, bind="127.0.0.1", sd_dir=str(tmp_path / "sd"))
    sink = build_sink(cfg, LaunchEnv("single"), labels, tmp_path / "run")
    try:
        sink.start(labels, 0)

        def target_up() -> bool:
            try:
                body = json.loads(http_get(f"http://127.0.0.1:{port}/api/v1/targets?state=active"))
            except OSError:
                return False
            return any(
                t["labels"].get("job") == "local-run" and t["health"] == "up"
                for t in body["data"]["activeTargets"]
            )

        wait_for(target_up, 60, "run_local.sh's Prometheus to scrape the exporter")
    finally:
        sink.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert "targets from" in (tmp_path / "prometheus.out").read_text()
