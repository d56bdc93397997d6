"""bench/scaling_model.py: the collective formulas, DDP's bucketing of VGG-16's gradient, the overlap simulation
and the command line. Figures here are derived from the formulas, not timed (timings live in bench/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import scaling_model as sm  # noqa: E402

from dist_vgg.models import VGGSpec  # noqa: E402

VGG16 = sm.gpu_workload(sm.estimated_seconds_per_image(VGGSpec("D")), VGGSpec("D"), 3.35e12)


def test_vgg16_gradient_layout_matches_the_paper_network() -> None:
    assert VGG16.params == 138_357_544
    keys = [layer.key for layer in VGG16.layers]
    assert keys[:3] == ["classifier.6", "classifier.3", "classifier.0"]  # backward starts at FC-8
    fc6 = VGG16.layers[2]
    assert 0.73 < fc6.params / VGG16.params < 0.76  # ~75 % of the parameters in FC-6
    assert sum(layer.backward_share for layer in VGG16.layers[:3]) < 0.01  # ... ready < 1 % into backward
    assert sum(layer.backward_share for layer in VGG16.layers) == pytest.approx(1.0)


def test_estimate_is_the_issue_figure() -> None:
    # 92.8 GFLOP per training image at 65 % of 790 TFLOP/s → ~5,530 img/s.
    assert 1 / sm.estimated_seconds_per_image(VGGSpec("D")) == pytest.approx(5532, rel=0.01)


def test_single_node_ring_is_the_textbook_formula() -> None:
    c = sm.Cluster(nodes=1, gpus_per_node=4, intra_bytes_per_s=100e9, intra_latency_s=0.0)
    assert sm.allreduce_s(1e9, c, "ring") == pytest.approx(2 * 3 / 4 * 1e9 / 100e9)
    assert sm.half_collective_s(1e9, c, "ring") == pytest.approx(3 / 4 * 1e9 / 100e9)
    assert sm.allreduce_s(1e9, sm.Cluster(nodes=1, gpus_per_node=1), "ring") == 0.0


def test_two_node_ring_is_paced_by_the_slower_path() -> None:
    slow_net = sm.Cluster(intra_bytes_per_s=360e9, inter_bytes_per_s=1e9, inter_latency_s=0.0)
    # 1/8 of each GPU's traffic crosses a 1 GB/s NIC: that sets the pace.
    assert sm.allreduce_s(1e9, slow_net, "ring") == pytest.approx(2 * 15 / 16 * 1e9 / 8 / 1e9)
    with pytest.raises(ValueError, match="algorithm must be ring or hierarchical"):
        sm.allreduce_s(1.0, slow_net, "tree")


def test_ddp_buckets_cover_every_byte_in_ready_order() -> None:
    for cap_mb, nbytes in ((25, 4), (25, 2), (1, 4), (1000, 4)):
        bs = sm.buckets(VGG16, cap_mb * 2**20, nbytes)
        assert sum(b for b, _ in bs) == VGG16.params * nbytes
        readies = [r for _, r in bs]
        assert readies == sorted(readies) and readies[-1] == pytest.approx(1.0)
    # FC-8 + FC-7 fill the first 25 MB bucket, FC-6 (411 MB) lands in the second and closes it at once.
    first, second = sm.buckets(VGG16, 25 * 2**20, 4)[:2]
    assert first[0] == 4 * (VGG16.layers[0].params + VGG16.layers[1].params)
    assert second[0] == 4 * VGG16.layers[2].params


def test_overlap_compression_and_batch_move_efficiency_the_right_way() -> None:
    c = sm.Cluster(overlap_slowdown=0.0)
    plain = sm.CommOptions(overlap=False)
    overlap = sm.CommOptions(overlap=True)
    bf16 = sm.CommOptions(overlap=True, compress="bf16")
    for b in (16, 64, 256):
        assert sm.weak_efficiency(VGG16, c, overlap, b) >= sm.weak_efficiency(VGG16, c, plain, b)
        assert sm.weak_efficiency(VGG16, c, bf16, b) >= sm.weak_efficiency(VGG16, c, overlap, b) - 1e-9
    effs = [sm.weak_efficiency(VGG16, c, overlap, b) for b in (16, 32, 64, 128, 256)]
    assert effs == sorted(effs) and all(0 < e <= 1 for e in effs)
    assert sm.weak_efficiency(VGG16, sm.Cluster(nodes=1, gpus_per_node=1), overlap, 32) == 1.0


def test_no_overlap_step_is_compute_plus_allreduce_plus_optimizer() -> None:
    c = sm.Cluster()
    p = sm.predict_step(VGG16, c, sm.CommOptions(overlap=False), 64)
    expected = VGG16.compute_s(64) + sm.allreduce_s(4 * VGG16.params, c, "ring") + VGG16.optimizer_s
    assert p.step_s == pytest.approx(expected)


def test_zero_shrinks_the_optimizer_and_adds_the_parameter_gather() -> None:
    c = sm.Cluster()
    ddp = sm.predict_step(VGG16, c, sm.CommOptions(overlap=False), 64)
    z1 = sm.predict_step(VGG16, c, sm.CommOptions(overlap=False, zero=1), 64)
    gather = sm.half_collective_s(4 * VGG16.params, c, "ring")
    scatter = sm.half_collective_s(4 * VGG16.params, c, "ring")
    expected = VGG16.compute_s(64) + scatter + VGG16.optimizer_s / 16 + gather
    assert z1.step_s == pytest.approx(expected)
    assert z1.step_s < ddp.step_s  # same bytes as an all-reduce, but 1/16 of the optimizer work


def test_paper_batch_is_communication_bound_and_a_large_batch_reaches_95_percent() -> None:
    c = sm.Cluster()
    assert sm.strong_efficiency(VGG16, c, sm.CommOptions(), 256) < 0.8
    batch, opts, eff = sm.recommend(VGG16, c)
    assert eff >= 0.95
    assert batch * c.gpus > 256
    assert opts.overlap


def test_gpu_section_is_read_from_results_md(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text(
        "# x\n<!-- GPU-SECTION-BEGIN (hand-kept) -->\ncard: NVIDIA H100 80GB HBM3\n"
        "RESULT gpu_vgg16_train_bf16 5712.0 img/s ratio=1.04\n<!-- GPU-SECTION-END -->\n"
    )
    per_image, _, card = sm.gpu_section_step(md)
    assert per_image == pytest.approx(1 / 5712.0)
    assert card == "NVIDIA H100 80GB HBM3"
    md.write_text("# no GPU section\n")
    assert sm.gpu_section_step(md) is None


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scaling_model.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_labels_the_estimate_and_ends_with_result_lines() -> None:
    proc = _cli("--no-cpu-check", "--step-ms", "46.4", "--step-batch", "256")
    assert proc.returncode == 0, proc.stderr
    assert "measured: 46.4 ms at batch 256" in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT scaling_model_2x8_largebatch_") and " efficiency ratio=" in last


def test_cli_refuses_a_step_time_without_its_batch() -> None:
    proc = _cli("--no-cpu-check", "--step-ms", "46.4")
    assert proc.returncode == 2
    assert "--step-ms and --step-batch go together" in proc.stderr
