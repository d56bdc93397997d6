"""Augmentation semantics of both training paths (the real DALI pipeline in CPU mode and the CPU path) on the
same small real shards, with fixed seeds; resolve_augment; eval inputs; resume."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dist_vgg.data import (
    AugmentConfig,
    DataConfig,
    SyntheticLoader,
    build_eval_loader,
    build_train_loader,
    dataset_info,
    preprocessing_for,
    resolve_augment,
)
from dist_vgg.data.augment import STATS_EIGVAL_SCALE, draw_params
from dist_vgg.data.config import IMAGENET_EIGVAL, IMAGENET_MEAN_RGB
from dist_vgg.weights import TORCHVISION_PREPROCESSING, Preprocessing
from tests.pipeline_fixtures import constant, gradient, make_dataset

pytestmark = pytest.mark.timeout(120)
CPU = torch.device("cpu")
PATHS = ["cpu", "dali"]


def loader(root, path, aug, mb=4, seed=0, **kw):
    data = DataConfig(path=str(root), loader=path, workers=1)
    return build_train_loader(data, aug, micro_batch=mb, rank=0, world_size=1, device=CPU, seed=seed, **kw)


@pytest.fixture(scope="module")
def blobs_ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("blobs"), [7, 5, 9], [4, 6])


@pytest.fixture(scope="module")
def gradient_ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("gradient"), [24, 24], image=gradient(100))


@pytest.mark.parametrize("path", PATHS)
def test_shapes_dtypes_layout(blobs_ds, path):
    aug = AugmentConfig(crop=32, scale_min=32, scale_max=64)
    tl = loader(blobs_ds, path, aug, dtype=torch.bfloat16, channels_last=True)
    assert tl.batches_per_epoch == 21 // 4
    batches = list(tl)
    assert len(batches) == 5
    for x, y in batches:
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.bfloat16
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64 and y.shape == (4,) and int(y.min()) >= 0 and int(y.max()) < 3


def _slopes(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the mean per-pixel step of R along x and of G along y, away from the borders."""
    a = x.float().numpy()
    return (
        np.diff(a[:, 0, 4:-4, 4:-4], axis=2).mean(axis=(1, 2)),
        np.diff(a[:, 1, 4:-4, 4:-4], axis=1).mean(axis=(1, 2)),
    )


@pytest.mark.parametrize("path", PATHS)
def test_scale_drawn_per_image_and_flips(gradient_ds, path):
    """The gradient images reveal S (slope = 255/99·100/S per pixel) and the flip (its sign)."""
    aug = resolve_augment(
        AugmentConfig(crop=32, scale_min=32, scale_max=64, color_shift_std=0.0),
        DataConfig(path=str(gradient_ds)),
    )
    tl = loader(gradient_ds, path, aug, mb=16, seed=7)
    unit = 255 / 99 * 100
    for b, (x, _) in enumerate(tl):
        p = draw_params(aug, 16, seed=7, epoch=0, rank=0, batch=b)
        sx, sy = _slopes(x)
        np.testing.assert_allclose(unit / np.abs(sx), p.scale, atol=1.5)  # S per image, horizontally …
        np.testing.assert_allclose(unit / sy, p.scale, atol=1.5)  # … and vertically: isotropic
        assert ((sx < 0) == p.flip).all()
        assert p.scale.std() > 3, "S must vary within a batch (drawn per image, not per batch)"


def test_scale_and_flip_distribution():
    aug = resolve_augment(AugmentConfig(crop=32, scale_min=32, scale_max=64), DataConfig())
    draws = [
        draw_params(aug, 100, seed=1, epoch=e, rank=r, batch=b)
        for e in range(4)
        for r in range(5)
        for b in range(5)
    ]
    s = np.concatenate([d.scale for d in draws])
    counts = np.bincount(s - 32, minlength=33)
    assert s.min() == 32 and s.max() == 64 and len(counts) == 33
    assert abs(np.cumsum(counts)[:-1] / len(s) - np.arange(1, 33) / 33).max() < 0.02  # KS distance, n=10000
    assert abs(np.concatenate([d.flip for d in draws]).mean() - 0.5) < 0.02
    jit = dataclasses.replace(aug, scale_min=256, scale_max=256)
    assert (draw_params(jit, 50, 0, 0, 0, 0).scale == 256).all()


@pytest.mark.parametrize("path", PATHS)
def test_constant_colour_comes_out_as_colour_minus_mean(tmp_path, path):
    root = make_dataset(tmp_path, [8], image=constant((200, 100, 50)))
    aug = AugmentConfig(
        crop=32, scale_min=32, scale_max=48, color_shift_std=0.0, mean_rgb=(120.0, 110.0, 100.0)
    )
    x, _ = next(iter(loader(root, path, aug)))
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), [80, -10, -50], atol=1.0)
    assert float((x - torch.tensor([80.0, -10, -50]).view(1, 3, 1, 1)).abs().max()) <= 2.0
    # std division when configured; PCA colour shift per image = eigvec·(α·λ) from the shared draw
    aug = dataclasses.replace(aug, std_rgb=(2.0, 2.0, 2.0), color_shift_std=0.1)
    x, _ = next(iter(loader(root, path, aug, seed=3)))
    p = draw_params(resolve_augment(aug, DataConfig(path=str(root))), 4, 3, 0, 0, 0)
    expect = (np.array([80, -10, -50]) + p.color_shift) / 2
    assert np.abs(p.color_shift).max() > 1.0
    np.testing.assert_allclose(x.mean(dim=(2, 3)).numpy(), expect, atol=0.75)


def test_dali_and_cpu_paths_agree(blobs_ds):
    """Colour shift off, S fixed: same samples, same crops and flips; pixels within the stated tolerance
    (decoders' chroma upsampling and resampler rounding differ): mean |Δ| < 0.5, max |Δ| ≤ 8 on 0–255."""
    aug = AugmentConfig(crop=32, scale_min=40, scale_max=40, color_shift_std=0.0)
    cpu, dali = list(loader(blobs_ds, "cpu", aug, seed=5)), list(loader(blobs_ds, "dali", aug, seed=5))
    assert len(cpu) == len(dali) == 5
    for (a, ya), (b, yb) in zip(cpu, dali):
        assert torch.equal(ya, yb)
        d = (a - b).abs()
        assert float(d.mean()) < 0.5 and float(d.max()) <= 8


@pytest.mark.parametrize("path", PATHS)
def test_epochs_differ_and_resume_gives_identical_batches(blobs_ds, path, tmp_path):
    aug = AugmentConfig(crop=32, scale_min=32, scale_max=64)
    tl = loader(blobs_ds, path, aug, seed=11)
    rows = [tl.reader.rows(e).copy() for e in range(3)]
    assert not np.array_equal(rows[0], rows[1]) and not np.array_equal(rows[1], rows[2])
    assert (
        len(np.setdiff1d(np.arange(21), np.concatenate([r.ravel() for r in rows]))) == 0
    )  # all used over epochs
    tl.set_epoch(1)
    it = iter(tl)
    [next(it) for _ in range(2)]
    torch.save(tl.state_dict(), tmp_path / "pos.pt")
    rest = [(x.clone(), y.clone()) for x, y in it]
    tl.set_epoch(2)
    nxt = next(iter(tl))
    state = torch.load(tmp_path / "pos.pt", weights_only=True)
    assert state["epoch"] == 1 and state["position"] == 2
    fresh = loader(blobs_ds, path, aug, seed=11)
    fresh.load_state_dict(state)
    fresh.set_epoch(1)
    resumed = list(fresh)
    assert len(resumed) == len(rest) == 3
    for (a, ya), (b, yb) in zip(rest, resumed):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    fresh.set_epoch(2)
    x, y = next(iter(fresh))
    assert torch.equal(x, nxt[0]) and torch.equal(y, nxt[1])


def test_resolve_augment_and_preprocessing(tmp_path):
    plain = resolve_augment(AugmentConfig(crop=32, scale_min=32, scale_max=32), DataConfig())
    assert plain.mean_rgb == IMAGENET_MEAN_RGB and plain.pca_eigval == IMAGENET_EIGVAL
    assert resolve_augment(plain, DataConfig()) == plain
    stats = {"mean_rgb": [100, 101, 102], "eigval": [5000.0, 300.0, 60.0], "eigvec": np.eye(3).tolist()}
    root = make_dataset(tmp_path, [4], num_classes=2, stats=stats)
    data = DataConfig(path=str(root))
    got = resolve_augment(AugmentConfig(crop=32, scale_min=32, scale_max=32, mean_rgb=(1.0, 2.0, 3.0)), data)
    assert got.mean_rgb == (1.0, 2.0, 3.0)  # an explicit (e.g. resumed) value wins over the manifest
    assert got.pca_eigval == pytest.approx([v * STATS_EIGVAL_SCALE for v in stats["eigval"]])
    assert resolve_augment(got, data) == got
    assert resolve_augment(AugmentConfig(crop=32, scale_min=32, scale_max=32), data).mean_rgb == (
        100,
        101,
        102,
    )
    assert preprocessing_for(got) == Preprocessing(mean=(1.0, 2.0, 3.0), std=(1.0, 1.0, 1.0), scale=1.0)
    with pytest.raises(ValueError, match="resolve_augment"):
        preprocessing_for(AugmentConfig(crop=32, scale_min=32, scale_max=32))
    info = dataset_info(data)
    assert (info.num_classes, info.train_samples, info.val_samples) == (2, 4, 0)
    assert info.wnids == ["n00000000", "n00000001"] and info.class_names == ["class 0", "class 1"]


def test_eval_inputs_preprocessing_and_whole_images(tmp_path, blobs_ds):
    root = make_dataset(tmp_path, [2], [3], image=constant((200, 100, 50), size=(50, 80)))
    data = DataConfig(path=str(root), workers=1)
    pre = Preprocessing(mean=(120.0, 110.0, 100.0), std=(2.0, 2.0, 2.0))
    (b,) = list(
        build_eval_loader(
            data, q=40, crop=32, batch_size=8, rank=0, world_size=1, device=CPU, preprocessing=pre
        )
    )
    assert b.images.shape == (3, 3, 32, 32) and b.indices.tolist() == [0, 1, 2]
    np.testing.assert_allclose(b.images.mean(dim=(0, 2, 3)).numpy(), [40, -5, -25], atol=0.6)
    (b,) = build_eval_loader(
        data,
        q=40,
        crop=None,
        batch_size=8,
        rank=0,
        world_size=1,
        device=CPU,
        preprocessing=TORCHVISION_PREPROCESSING,
    )
    assert b.images.shape == (3, 3, 40, 64)
    np.testing.assert_allclose(
        b.images.mean(dim=(0, 2, 3)).numpy(),
        (np.array([200, 100, 50]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
        atol=0.02,
    )
    # whole images of varied sizes: batches never mix sizes; deterministic
    data = DataConfig(path=str(blobs_ds), workers=1)
    kw = dict(q=40, crop=None, batch_size=4, rank=0, world_size=1, device=CPU, preprocessing=pre)
    one, two = list(build_eval_loader(data, **kw)), list(build_eval_loader(data, **kw))
    assert sorted(i for b in one for i in b.indices.tolist()) == list(range(10))
    for a, b in zip(one, two):
        assert torch.equal(a.images, b.images) and min(a.images.shape[2:]) == 40


def test_empty_path_gives_synthetic_loader():
    tl = build_train_loader(
        DataConfig(),
        AugmentConfig(crop=32, scale_min=32, scale_max=32),
        micro_batch=2,
        rank=0,
        world_size=1,
        device=CPU,
        seed=0,
        num_classes=5,
    )
    assert isinstance(tl, SyntheticLoader)
    x, y = next(iter(tl))
    assert x.shape == (2, 3, 32, 32) and int(y.max()) < 5


def test_bench_runs_as_a_user_runs_it():
    """bench/loader.py end to end (tiny): all three loaders run and it reports RESULT lines."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [
            sys.executable,
            "bench/loader.py",
            "--images",
            "70",
            "--passes",
            "1",
            "--rounds",
            "1",
            "--workers",
            "1",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RESULT loader_cpu " in out.stdout and "RESULT loader_dali_cpu " in out.stdout
