# ruff: noqa: F811  (the shared fixture is imported by name, then requested as an argument)
"""data_prep's progress on Prometheus: a live scrape of a real run has the dist_vgg_prep_* counters with the
run's true totals, and passes `promtool check metrics`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from dist_vgg.data import format as fmt
from tests.data_prep_fixtures import REPO, SHARD, prep_env, raw  # noqa: F401
from tests.integration import require_integration

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and 'rank="0"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_live_scrape_has_the_run_totals_and_passes_promtool(raw, tmp_path):
    port = free_port()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "data_prep", "imagenet", str(raw), "--out", str(out), *SHARD]
    cmd += ["--metrics-port", str(port), "--metrics-addr", "127.0.0.1", "--metrics-linger", "60"]
    with open(tmp_path / "stderr.txt", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=prep_env(), stderr=log)
    try:
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            if (out / fmt.MANIFEST).is_file():
                try:
                    text = (
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                    )
                except OSError:
                    text = ""
                manifest = fmt.load_manifest(out)
                if value(text, "dist_vgg_prep_shards_total") == sum(
                    len(s.shards) for s in manifest.splits.values()
                ):
                    break
            time.sleep(0.2)
        else:
            pytest.fail(f"no final scrape within the deadline; last scrape:\n{text}")
        assert value(text, "dist_vgg_prep_images_total") == sum(s.samples for s in manifest.splits.values())
        assert value(text, "dist_vgg_prep_bytes_total") == sum(
            e.bytes for s in manifest.splits.values() for e in s.shards
        )
        assert value(text, "dist_vgg_prep_quarantined_images_total") == len(manifest.quarantined)
        assert value(text, "dist_vgg_prep_reencoded_images_total") == len(manifest.reencoded)
        assert "# TYPE dist_vgg_prep_images_total counter" in text
        promtool = shutil.which("promtool")
        if promtool is None:
            require_integration("promtool (Debian package prometheus) is not installed")
        res = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
