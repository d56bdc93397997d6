"""Synchronous data parallelism is exact (paper section 3.3): one step with 2 ranks × batch b gives the same
weights as 1 rank × batch 2b (real gloo process groups, the real CLI). Gradient accumulation is checked
in-process in test_train_config.py."""

from __future__ import annotations

import pytest
import torch

from dist_vgg.models import build_vgg, initialise
from tests.train_fixtures import REFERENCE_ARGS, final_weights, one_rank_reference, run

pytestmark = pytest.mark.timeout(240)


def test_two_ranks_equal_one_rank_with_twice_the_batch(tmp_path, tmp_path_factory):
    one, two = one_rank_reference(tmp_path_factory.getbasetemp()), tmp_path / "two"
    # small buckets (the [comm] section reaches DDP): many all-reduces per step, still the exact average
    small_buckets = ["--set", "comm.bucket_cap_mb=0.02"]
    assert run([*REFERENCE_ARGS, *small_buckets, "--run-dir", str(two)], 2, tmp_path / "logs") == [0, 0]
    text = (two / "train.log").read_text()
    assert "micro-batch 8 × accumulation 1 × world size 2" in text
    assert "DDP gradient all-reduce: 0.02 MiB buckets, compress none" in text
    w1, w2 = final_weights(one), final_weights(two)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6, msg=f"{k}: 2 ranks × 8 vs 1 rank × 16")
    # the comparison means something only if the two steps moved the weights away from the shared start
    start = build_vgg("A", 5, 0.0625, 32, 0.0)
    initialise(start, "paper-width-corrected", generator=torch.Generator().manual_seed(0))
    moved = [k for k, v in start.state_dict().items() if not torch.equal(v, w1[k])]
    assert len(moved) == len(w1)
