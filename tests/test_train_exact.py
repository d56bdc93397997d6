"""Synchronous data parallelism is exact (paper section 3.3): one step with 2 ranks × batch b gives the same
weights as 1 rank × batch 2b (real gloo process groups, the real CLI). Gradient accumulation is checked
in-process in test_train_config.py."""

from __future__ import annotations

import pytest
import torch

from dist_vgg.models import build_vgg, initialise
from tests.train_fixtures import EXACT, final_weights, run

pytestmark = pytest.mark.timeout(240)

COMMON = [
    "--recipe",
    "tiny-A",
    *EXACT,
    "--set",
    "schedule.max_steps=2",
    "--set",
    "optim.global_batch=16",
    "--set",
    "synthetic.val_images=16",
]


def test_two_ranks_equal_one_rank_with_twice_the_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert run([*COMMON, "--run-dir", str(one)], 1, tmp_path / "logs") == [0]
    assert run([*COMMON, "--run-dir", str(two)], 2, tmp_path / "logs") == [0, 0]
    assert "micro-batch 8 × accumulation 1 × world size 2" in (two / "train.log").read_text()
    w1, w2 = final_weights(one), final_weights(two)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6, msg=f"{k}: 2 ranks × 8 vs 1 rank × 16")
    # the comparison means something only if the two steps moved the weights away from the shared start
    start = build_vgg("A", 5, 0.0625, 32, 0.0)
    initialise(start, "paper-width-corrected", generator=torch.Generator().manual_seed(0))
    moved = [k for k, v in start.state_dict().items() if not torch.equal(v, w1[k])]
    assert len(moved) == len(w1)
