"""One rank of the multi-process pipeline test, launched like torchrun launches a rank (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT): joins a gloo group, runs two training epochs with an
all-reduce per batch (a rank with an extra batch would hang: the test's timeout catches it), then both eval
modes, and writes what it saw as JSON."""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.distributed as dist

from dist_vgg.data import AugmentConfig, DataConfig, build_eval_loader, build_train_loader
from dist_vgg.launch import destroy_process_group, detect, init_process_group
from dist_vgg.weights import Preprocessing


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--loader", default="cpu")
    p.add_argument("--stage", default="")
    p.add_argument("--micro-batch", type=int, default=2)
    a = p.parse_args()
    env = detect()
    init_process_group(env, "cpu", timeout_s=60)
    data = DataConfig(path=a.root, loader=a.loader, workers=1, stage_local_dir=a.stage)
    aug = AugmentConfig(crop=32, scale_min=32, scale_max=48)
    cpu = torch.device("cpu")
    tl = build_train_loader(
        data, aug, micro_batch=a.micro_batch, rank=env.rank, world_size=env.world_size, device=cpu, seed=3
    )
    counts, seen = [], []
    for epoch in range(2):
        tl.set_epoch(epoch)
        n = 0
        for x, _ in tl:
            t = x.sum().reshape(1)
            if env.distributed:
                dist.all_reduce(t)
            n += 1
        counts.append(n)
        seen.append(tl.reader.rows(epoch).ravel().tolist())
    pre = Preprocessing(mean=(0.0, 0.0, 0.0))
    evals = {}
    for crop in (32, None):
        kw = dict(q=40, crop=crop, batch_size=3, rank=env.rank, world_size=env.world_size, device=cpu)
        batches = list(build_eval_loader(data, preprocessing=pre, **kw))
        if env.distributed:
            dist.barrier()
        evals[str(crop)] = [i for b in batches for i in b.indices.tolist()]
    result = {"rank": env.rank, "batches_per_epoch": tl.batches_per_epoch, "counts": counts, "seen": seen}
    with open(a.out, "w") as f:
        json.dump({**result, "eval": evals}, f)
    destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
