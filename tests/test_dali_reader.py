"""`data.dali_source=reader`: the real DALI webdataset-reader graph in CPU mode on small real shards —
augmentation semantics with fixed seeds, exact epochs (equal batch counts for world sizes 1, 2, 3 on uneven
shards in real gloo runs, no padded duplicate, a new subset every epoch), checkpoint-based resume, errors,
and the real trainer entry point."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dist_vgg.data import AugmentConfig, DataConfig, build_train_loader, resolve_augment
from dist_vgg.data.dali_reader import DaliReaderLoader, ReaderPlan
from dist_vgg.data.format import INDEX_VERSION, ShardFormatError, sample_key, shard_path
from tests.pipeline_fixtures import blobs, constant, gradient, jpeg_bytes, make_dataset
from tests.train_fixtures import (
    EXACT,
    assert_bitwise_equal,
    base_env,
    final_weights,
    free_port,
    log_text,
    run,
)

pytestmark = pytest.mark.timeout(120)
CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent
UNEVEN = [7, 5, 9, 2]
"""23 samples in shards of uneven size; with num_classes=23 every sample's label is its global position."""


def reader(root, aug, mb=2, rank=0, world=1, seed=0, buffer=8, **kw) -> DaliReaderLoader:
    data = DataConfig(path=str(root), loader="dali", dali_source="reader", workers=1, shuffle_buffer=buffer)
    return build_train_loader(
        data, aug, micro_batch=mb, rank=rank, world_size=world, device=CPU, seed=seed, **kw
    )


def epoch_batches(tl, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    tl.set_epoch(epoch)
    return list(tl)


def labels_of(batches) -> list[int]:
    return [v for _, y in batches for v in y.tolist()]


@pytest.fixture(scope="module")
def uneven_ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("uneven"), UNEVEN, num_classes=23)


@pytest.fixture(scope="module")
def gradient_ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("gradient"), [40, 40], image=gradient(100))


AUG = AugmentConfig(crop=32, scale_min=32, scale_max=48)


def test_config_choice_is_validated():
    assert DataConfig().dali_source == "external"
    with pytest.raises(ValueError, match=r"data\.dali_source=.pipe. is not one of external, reader"):
        DataConfig(dali_source="pipe")
    with pytest.raises(ValueError, match=r"data\.shuffle_buffer must be >= 1"):
        DataConfig(shuffle_buffer=0)


def test_shapes_dtypes_layout(uneven_ds):
    tl = reader(uneven_ds, AUG, mb=4, dtype=torch.bfloat16, channels_last=True)
    assert isinstance(tl, DaliReaderLoader) and tl.batches_per_epoch == 23 // 4
    batches = epoch_batches(tl, 0)
    assert len(batches) == 5
    for x, y in batches:
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.bfloat16
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64 and y.shape == (4,) and int(y.min()) >= 0 and int(y.max()) < 23
    assert set(tl.last_draws) == {"scale", "flip"} and tl.last_draws["scale"].shape == (4,)


def _slopes(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the mean per-pixel step of R along x and of G along y, away from the borders."""
    a = x.float().numpy()
    return (
        np.diff(a[:, 0, 4:-4, 4:-4], axis=2).mean(axis=(1, 2)),
        np.diff(a[:, 1, 4:-4, 4:-4], axis=1).mean(axis=(1, 2)),
    )


def test_scale_per_image_uniform_and_flips_half(gradient_ds):
    """The gradient images reveal S (slope = 255/99·100/S per pixel) and the flip (its sign): the drawn S and
    flip the graph reports are the ones applied; S is drawn per image and is uniform over the integers."""
    aug = resolve_augment(
        AugmentConfig(crop=32, scale_min=32, scale_max=64, color_shift_std=0.0),
        DataConfig(path=str(gradient_ds)),
    )
    tl = reader(gradient_ds, aug, mb=16, seed=7, buffer=16)
    scales, flips, per_batch_distinct = [], [], []
    for epoch in range(5):
        tl.set_epoch(epoch)
        for x, _ in tl:
            s, f = tl.last_draws["scale"], tl.last_draws["flip"]
            rx, gy = _slopes(x)
            expect = 255 / 99 * 100 / s
            np.testing.assert_allclose(np.abs(rx), expect, rtol=0.06)
            np.testing.assert_allclose(gy, expect, rtol=0.06)
            assert np.array_equal(rx < 0, f), "the reported flip is not the applied one"
            scales += s.tolist()
            flips += f.tolist()
            per_batch_distinct.append(len(set(s.tolist())))
    n = len(scales)
    assert n == 5 * 5 * 16 and min(scales) >= 32 and max(scales) <= 64
    assert all(isinstance(v, int) for v in scales)
    assert min(per_batch_distinct) > 1, "S must be drawn per image, not per batch"
    # uniform over 33 integers: 4 bins of 8 values (+ the top value); chi-square, 3 dof, p=0.001 at 16.3
    counts, _ = np.histogram(scales, bins=[32, 40, 48, 56, 65])
    expected = n * np.array([8, 8, 8, 9]) / 33
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 16.3, (counts, expected)
    assert 0.4 < np.mean(flips) < 0.6


def test_fixed_scale_no_flip_graph(gradient_ds):
    aug = AugmentConfig(crop=32, scale_min=40, scale_max=40, flip=False, color_shift_std=0.0)
    tl = reader(gradient_ds, aug, mb=8)
    assert tl.batches_per_epoch == 10
    x, _ = next(iter(tl))
    rx, _ = _slopes(x)
    np.testing.assert_allclose(rx, 255 / 99 * 100 / 40, rtol=0.05)  # S = 40, never flipped
    assert tl._names == ["images", "labels"]  # no random S or flip operator in the graph
    assert (tl.last_draws["scale"] == 40).all() and not tl.last_draws["flip"].any()


def test_constant_colour_minus_mean_and_pca_shift(tmp_path):
    colour = np.array([200.0, 100.0, 50.0])
    root = make_dataset(tmp_path / "c", [32], image=constant((200, 100, 50)))
    mean = (123.0, 117.0, 104.0)
    off = AugmentConfig(crop=32, scale_min=32, scale_max=40, color_shift_std=0.0, mean_rgb=mean)
    x, _ = next(iter(reader(root, off, mb=8)))
    got = x.numpy().mean(axis=(2, 3))
    np.testing.assert_allclose(got, np.broadcast_to(colour - mean, got.shape), atol=1.5)
    assert x.numpy().std(axis=(2, 3)).max() < 1.0  # constant over the crop
    # with the shift on, the offset per image is eigvec·(α·λ), α ~ N(0, σ): recover α and check its spread
    eigvec = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    eigval, sigma = (60.0, 40.0, 30.0), 0.5
    on = AugmentConfig(
        crop=32,
        scale_min=32,
        scale_max=40,
        color_shift_std=sigma,
        mean_rgb=mean,
        pca_eigval=eigval,
        pca_eigvec=tuple(tuple(r) for r in eigvec),
    )
    tl = reader(root, on, mb=8, buffer=32)
    shifts = []
    for epoch in range(3):
        for x, _ in epoch_batches(tl, epoch):
            shifts.append(x.numpy().mean(axis=(2, 3)) - (colour - mean))
    alpha = (np.concatenate(shifts) @ eigvec) / np.array(eigval)  # shift = eigvec @ (α·λ)
    assert alpha.shape == (96, 3)
    assert np.abs(alpha.mean(axis=0)).max() < 0.2
    assert np.all(np.abs(alpha.std(axis=0) - sigma) < 0.15), alpha.std(axis=0)


def test_exact_epochs_no_padding_new_order_and_subset(uneven_ds):
    """World 1: 23 samples in batches of 2 are 11 batches (DALI runs 12, the last padded with a duplicate):
    never a duplicate, a new order each epoch. World 2, rank 0 (no process group needed to build one rank):
    a different shard range each epoch."""
    tl = reader(uneven_ds, AUG, mb=2, buffer=16)
    plan = tl.plan
    assert (plan.batches_per_epoch, plan.runs_per_epoch, plan.discarded) == (11, 12, 1)
    orders = []
    for epoch in range(3):
        got = labels_of(epoch_batches(tl, epoch))
        assert len(got) == 22 and len(set(got)) == 22, "a sample twice in an epoch (padding yielded?)"
        orders.append(got)
    assert orders[0] != orders[1] != orders[2]
    r0 = reader(uneven_ds, AUG, mb=2, rank=0, world=2, buffer=16)
    assert r0.batches_per_epoch == 5 and r0.plan.runs_per_epoch == 6  # ranges of 11 and 12 samples
    subsets = [set(labels_of(epoch_batches(r0, e))) for e in range(3)]
    assert all(len(s) == 10 for s in subsets)
    assert subsets[0] <= set(range(11)) and subsets[1] <= set(range(11, 23)) and subsets[2] <= set(range(11))
    assert subsets[0].isdisjoint(subsets[1])


def _launch_worker(root: Path, out: Path, world: int) -> list[subprocess.Popen]:
    port, procs = free_port(), []
    for rank in range(world):
        env = {
            **base_env(),
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        cmd = [
            sys.executable,
            "-m",
            "tests.dali_reader_worker",
            str(root),
            str(out / f"w{world}r{rank}.json"),
        ]
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT))
    return procs


@pytest.mark.slow
def test_equal_batches_per_rank_world_1_2_3(uneven_ds, tmp_path):
    procs = [p for world in (1, 2, 3) for p in _launch_worker(uneven_ds, tmp_path, world)]  # all at once
    try:
        for p in procs:
            assert p.wait(timeout=100) == 0, "a rank failed"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for world in (1, 2, 3):
        results = [json.loads((tmp_path / f"w{world}r{r}.json").read_text()) for r in range(world)]
        expect = 23 // (2 * world)
        for r in results:
            assert r["batches_per_epoch"] == expect and r["counts"] == [expect] * 3, (world, r)
        for epoch in range(3):
            used = [v for r in results for v in r["labels"][epoch]]
            assert len(used) == len(set(used)) == expect * 2 * world  # no sample twice, no padding
        if world > 1:
            for r in results:  # a rank does not read the same subset two epochs running
                for e in range(2):
                    assert set(r["labels"][e]).isdisjoint(r["labels"][e + 1]), (world, r["rank"], e)


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _assert_same(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_resume_mid_epoch_gives_identical_batches(uneven_ds):
    """Rank 1 of 2 (so the shard rotation crosses the restore): save after 2 batches of epoch 1, restore into a
    new loader, and the rest of epoch 1 and all of epoch 2 are bit-identical (DALI prefetches 2 runs ahead)."""
    a = reader(uneven_ds, AUG, mb=2, rank=1, world=2, seed=5)
    epoch_batches(a, 0)
    a.set_epoch(1)
    it = iter(a)
    next(it), next(it)
    state = _roundtrip(a.state_dict())
    assert state["position"] == 2 and state["checkpoint"].dtype == torch.uint8 and state["checkpoint"].numel()
    rest1, rest2 = list(it), epoch_batches(a, 2)
    assert len(rest1) == 3
    b = reader(uneven_ds, AUG, mb=2, rank=1, world=2, seed=5)
    b.load_state_dict(state)
    again = _roundtrip(b.state_dict())  # saved again before it ran: the same position
    assert torch.equal(again["checkpoint"], state["checkpoint"]) and again["position"] == 2
    b.set_epoch(1)
    _assert_same(rest1, list(b))
    _assert_same(rest2, epoch_batches(b, 2))
    c = reader(uneven_ds, AUG, mb=2, rank=1, world=2, seed=5)
    c.load_state_dict(again)
    c.set_epoch(1)
    _assert_same(rest1, list(c))


def test_resume_at_epoch_end_like_the_trainer(uneven_ds):
    """The trainer takes exactly batches_per_epoch batches (the generator is never exhausted), saves, then
    starts the next epoch: the discarded padded tail is run on the restored pipeline too."""
    a = reader(uneven_ds, AUG, mb=2, seed=1)
    epoch_batches(a, 0)
    a.set_epoch(1)
    it = iter(a)
    for _ in range(a.batches_per_epoch):
        next(it)
    state = _roundtrip(a.state_dict())
    assert (state["epoch"], state["position"], state["reader_runs"]) == (1, 11, 11)
    nxt = epoch_batches(a, 2)
    b = reader(uneven_ds, AUG, mb=2, seed=1)
    b.load_state_dict(state)
    b.set_epoch(1)
    assert list(b) == []  # a finished epoch stays finished
    _assert_same(nxt, epoch_batches(b, 2))


def test_epoch_jump_and_resume_without_checkpoint(uneven_ds):
    """An epoch that does not follow the pipeline's gets a fresh reader state for that epoch (deterministic in
    seed, epoch, rank; rank r reads shard range (r + epoch) mod world); a position without a DALI checkpoint
    (saved by another loader or world size) restarts that way and skips the consumed batches."""
    a = reader(uneven_ds, AUG, mb=2, rank=0, world=2, seed=2)
    epoch_batches(a, 0)
    jumped = epoch_batches(a, 3)  # from epoch 0 to 3
    assert set(labels_of(jumped)) <= set(range(11, 23))  # (0 + 3) mod 2 = range 1
    b = reader(uneven_ds, AUG, mb=2, rank=0, world=2, seed=2)
    _assert_same(jumped, epoch_batches(b, 3))
    new = reader(uneven_ds, AUG, mb=2, rank=0, world=2, seed=2)
    new.set_epoch(3)
    unstarted = _roundtrip(new.state_dict())  # no pipeline yet: an empty checkpoint
    assert (unstarted["epoch"], unstarted["position"], unstarted["checkpoint"].numel()) == (3, 0, 0)
    new.load_state_dict(unstarted)
    _assert_same(jumped, list(new))
    c = reader(uneven_ds, AUG, mb=2, rank=0, world=2, seed=2)
    c.load_state_dict({"epoch": 3, "position": 2})  # what the trainer passes after a world-size change
    c.set_epoch(3)
    _assert_same(jumped[2:], list(c))
    d = reader(uneven_ds, AUG, mb=2, rank=0, world=2, seed=2)
    with pytest.raises(ValueError, match="seed 9, this run uses 2"):
        d.load_state_dict({**a.state_dict(), "seed": 9})
    with pytest.raises(ValueError, match="cannot resume mid-epoch 3"):
        d.load_state_dict({**a.state_dict(), "position": 2, "world_size": 3})


def test_staging_copies_every_shard_and_reads_the_copies(uneven_ds, tmp_path):
    """With the reader every rank reads every shard range over the epochs, so a node stages the whole split."""
    data = DataConfig(
        path=str(uneven_ds),
        loader="dali",
        dali_source="reader",
        workers=1,
        stage_local_dir=str(tmp_path / "local"),
    )
    tl = build_train_loader(data, AUG, micro_batch=2, rank=1, world_size=2, device=CPU, seed=0)
    staged = sorted(p.name for p in (tmp_path / "local" / "train").glob("*.tar"))
    assert staged == [f"train-{k:06d}.tar" for k in range(len(UNEVEN))]
    assert all(p.parent == tmp_path / "local" / "train" for p in tl.paths)
    got = labels_of(epoch_batches(tl, 0))
    assert len(got) == len(set(got)) == 10 and set(got) <= set(range(11, 23))


def test_missing_index_names_the_shard_and_the_fix(tmp_path):
    root = make_dataset(tmp_path / "ds", [4, 4])
    (root / "train" / "train-000001.idx").unlink()
    with pytest.raises(ShardFormatError, match=r"train-000001\.idx is missing.*python -m data_prep index"):
        reader(root, AUG, mb=2)


def test_shard_without_cls_member(tmp_path):
    root = make_dataset(tmp_path / "ds", [2, 2])
    path = shard_path(root, "train", 1)
    buf, lines = io.BytesIO(), []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for k in (2, 3):
            parts = []
            for ext, data in (("jpg", jpeg_bytes(blobs()(k, np.random.default_rng(k)))), ("json", b"{}")):
                info = tarfile.TarInfo(f"{sample_key('train', k)}.{ext}")
                info.size = len(data)
                parts.append(f"{ext} {buf.tell() + 512} {len(data)} {info.name}")
                tar.addfile(info, io.BytesIO(data))
            lines.append(" ".join(parts))
    path.write_bytes(buf.getvalue())
    path.with_suffix(".idx").write_text(f"{INDEX_VERSION} 2\n" + "\n".join(lines) + "\n")
    tl = reader(root, AUG, mb=2)
    with pytest.raises(
        ShardFormatError, match=r"train-000001\.idx.*needs \.jpg and \.cls members.*re-run data_prep"
    ):
        next(iter(tl))


def test_index_body_not_matching_its_shard(tmp_path):
    root = make_dataset(tmp_path / "ds", [3, 3])
    idx = root / "train" / "train-000001.idx"
    idx.write_text("".join(line + "\n" for line in idx.read_text().splitlines()[:-1]))  # header still says 3
    with pytest.raises(ShardFormatError, match=r"train-000001\.idx.*python -m data_prep index"):
        next(iter(reader(root, AUG, mb=2)))


def test_reader_plan_arithmetic():
    plan = ReaderPlan(samples=23, micro_batch=2, world_size=3)
    assert [plan.shard_size(k) for k in range(3)] == [7, 8, 8]
    assert (plan.batches_per_epoch, plan.runs_per_epoch, plan.discarded) == (3, 4, 1)
    assert (
        "3 batches of 2 per rank" in plan.describe()
        and "1 per rank are decoded and discarded" in plan.describe()
    )
    assert (
        ReaderPlan(24, 4, 2).discarded == 0
        and ReaderPlan(25, 4, 3).discarded == 1
        and ReaderPlan(31, 4, 4).discarded == 1
    )
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ReaderPlan(5, 4, 2)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_trainer_entry_point_with_reader_source(tmp_path):
    """`dist-vgg train` as a user runs it, on real shards with data.dali_source=reader: trains, checkpoints
    (the DALI checkpoint goes through torch.load(weights_only=True)), resumes mid-epoch across the epoch's
    discarded tail, and ends with the weights of an uninterrupted run, bit for bit."""
    data = make_dataset(tmp_path / "data", [24, 24], [12], num_classes=3)
    run_dir = tmp_path / "run"
    args = [
        "--recipe",
        "tiny-A",
        *EXACT,
        "--data",
        str(data),
        "--run-dir",
        str(run_dir),
        "--set",
        "data.loader=dali",
        "--set",
        "data.dali_source=reader",
        "--set",
        "data.workers=1",
        "--set",
        "optim.global_batch=16",
        "--set",
        "schedule.max_steps=4",
    ]
    assert run(args, 1, tmp_path / "logs") == [0]
    assert "training 4 steps (3 per epoch)" in log_text(run_dir)
    part = torch.load(run_dir / "final" / "rank-00000.pt", map_location="cpu", weights_only=True)
    saved = part["rank_state"]["loader"]  # the reader loader's state, DALI checkpoint included
    assert saved["source"] == "dali_reader" and saved["checkpoint"].numel() and saved["position"] == 1
    # on in epoch 1 (3 steps per epoch) from the restored DALI state, then epoch 2 after the discarded tail
    args[-1] = "schedule.max_steps=7"
    assert run(args, 1, tmp_path / "logs") == [0]
    text = log_text(run_dir)
    assert "continuing at epoch 1 step 4" in text and "training finished at epoch 2 step 7" in text
    whole = tmp_path / "uninterrupted"
    args[args.index(str(run_dir))] = str(whole)
    assert run(args, 1, tmp_path / "logs") == [0]
    assert_bitwise_equal(final_weights(run_dir), final_weights(whole))
