"""One rank of a gloo evaluation whose input pipeline loses an image on the last rank (run by
tests/test_eval_distributed.py): every rank must stop with the coverage error, none may wait for the others."""

from __future__ import annotations

import sys

import torch

from dist_vgg import launch
from dist_vgg.data.loader import EvalBatch
from dist_vgg.eval.ensemble import CoverageError
from dist_vgg.eval.runner import EvalPlan, evaluate
from tests.eval_fixtures import tiny_model

IMAGES = 7


def main() -> int:
    env = launch.detect()
    launch.init_process_group(env, "cpu", timeout_s=30)
    model = tiny_model("A", classes=4, crop=32)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(IMAGES, 3, 32, 40, generator=g) * 50
    labels = torch.arange(IMAGES) % 4
    lo, hi = env.rank * IMAGES // env.world_size, (env.rank + 1) * IMAGES // env.world_size
    if env.rank == env.world_size - 1:
        hi -= 1  # the faulty pipeline drops this rank's last image

    def source(n: int, q: int, crop: int | None):
        idx = torch.arange(lo, hi)
        return [EvalBatch(images[idx], labels[idx], idx)]

    try:
        evaluate(
            [model], EvalPlan(("dense",), (32,)), source, IMAGES, torch.device("cpu"), log=lambda _m: None
        )
    except CoverageError as e:
        print(f"rank {env.rank}: {e}")
        launch.destroy_process_group(together=False)
        return 3
    launch.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
