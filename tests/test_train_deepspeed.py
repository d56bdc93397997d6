"""DeepSpeed engine through the CLI on real 2-rank gloo jobs: ZeRO-1 and ZeRO-2 with 2 ranks × b give the
same weights as DDP with 1 rank × 2b; a ZeRO run resumes from its own folder and refuses a world-size change."""

from __future__ import annotations

import shutil

import pytest
import torch

from dist_vgg import checkpoint as ckpt
from tests.train_fixtures import EXACT, final_weights, log_text, one_rank_reference, run

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (DS_BUILD_OPS=0 pip install deepspeed)")
pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]

COMMON = ["--recipe", "tiny-A", *EXACT, "--set", "optim.global_batch=16", "--set", "synthetic.val_images=16"]


def test_zero_1_and_2_match_single_rank_ddp_and_resume(tmp_path, tmp_path_factory):
    logs = tmp_path / "logs"
    ref = one_rank_reference(tmp_path_factory.getbasetemp())  # COMMON + schedule.max_steps=2, 1 rank, DDP
    w_ref = final_weights(ref)
    for stage in (1, 2):
        d = tmp_path / f"zero{stage}"
        args = [
            *COMMON,
            "--engine",
            "deepspeed",
            "--set",
            f"deepspeed.zero_stage={stage}",
            "--run-dir",
            str(d),
        ]
        assert run([*args, "--set", "schedule.max_steps=2"], 2, logs) == [0, 0]
        assert (ckpt.step_dir(d, 2) / "deepspeed").is_dir()
        w = ckpt.load_weights(d).state_dict  # the weights-only path
        for k in w_ref:
            torch.testing.assert_close(w[k], w_ref[k], rtol=1e-5, atol=1e-6, msg=f"ZeRO-{stage} {k}")
    # a DeepSpeed checkpoint whose rank-0 part holds no "model": load_weights falls through to its deepspeed/
    # folder (read weights-only) for the run folder and the step folder alike, with the same weights
    bare = tmp_path / "zero2-bare"
    shutil.copytree(d, bare, symlinks=True)
    step = ckpt.step_dir(bare, 2)
    part = ckpt.load_rank_part(step, 0)
    del part["model"]
    ckpt.atomic_torch_save(part, ckpt.rank_file(step, 0))
    for source in (bare, step):
        loaded = ckpt.load_weights(source)
        assert loaded.origin.endswith("deepspeed") and loaded.extra["train_scale"] == "37"
        for k in w_ref:
            torch.testing.assert_close(loaded.state_dict[k], w[k], rtol=0, atol=0, msg=f"{source}: {k}")
    # ZeRO-2 run: continue it from its own DeepSpeed checkpoint; a different world size is refused
    assert run([*args, "--set", "schedule.max_steps=3"], 1, logs) == [1]
    assert "world size with sharded optimiser state (ZeRO): 2 → 1" in log_text(d)
    assert run([*args, "--set", "schedule.max_steps=3"], 2, logs) == [0, 0]
    assert "resuming from step-00000002" in log_text(d) and " step 3 (" in log_text(d)
    assert not torch.equal(final_weights(d)["classifier.6.weight"], w_ref["classifier.6.weight"])
