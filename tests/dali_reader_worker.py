"""One rank of the multi-process test of `data.dali_source=reader`, launched like torchrun launches a rank
(RANK, WORLD_SIZE, MASTER_ADDR/PORT): joins a gloo group, runs three training epochs through
`build_train_loader` with an all-reduce per batch (a rank with an extra batch would hang: the test's timeout
catches it), and writes the labels it saw per epoch (the test datasets label every sample uniquely) as JSON."""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.distributed as dist

from dist_vgg.data import AugmentConfig, DataConfig, build_train_loader
from dist_vgg.launch import destroy_process_group, detect, init_process_group


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("out")
    p.add_argument("--micro-batch", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    a = p.parse_args()
    env = detect()
    init_process_group(env, "cpu", timeout_s=60)
    data = DataConfig(path=a.root, loader="dali", dali_source="reader", workers=1, shuffle_buffer=4)
    aug = AugmentConfig(crop=32, scale_min=32, scale_max=40)
    tl = build_train_loader(
        data,
        aug,
        micro_batch=a.micro_batch,
        rank=env.rank,
        world_size=env.world_size,
        device=torch.device("cpu"),
        seed=3,
    )
    counts, labels = [], []
    for epoch in range(a.epochs):
        tl.set_epoch(epoch)
        n, seen = 0, []
        for x, y in tl:
            t = x.sum().reshape(1)
            if env.distributed:
                dist.all_reduce(t)
            n += 1
            seen += y.tolist()
        counts.append(n)
        labels.append(seen)
    result = {"rank": env.rank, "batches_per_epoch": tl.batches_per_epoch, "counts": counts, "labels": labels}
    with open(a.out, "w") as f:
        json.dump(result, f)
    destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
