"""Bad input to the input pipeline gives an error that names the input and says what to do."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch

from dist_vgg.data import AugmentConfig, DataConfig, build_eval_loader, build_train_loader
from dist_vgg.data.format import INDEX_VERSION, ShardFormatError, shard_path
from dist_vgg.weights import Preprocessing
from tests.pipeline_fixtures import blobs, jpeg_bytes, make_dataset

pytestmark = pytest.mark.timeout(60)
AUG = AugmentConfig(crop=32, scale_min=32, scale_max=48)
CPU = torch.device("cpu")


def train(root, loader="cpu", mb=2, **data_kw):
    data = DataConfig(path=str(root), loader=loader, workers=1, **data_kw)
    return build_train_loader(data, AUG, micro_batch=mb, rank=0, world_size=1, device=CPU, seed=0)


def test_no_dataset_at_path(tmp_path):
    with pytest.raises(
        ShardFormatError, match=r"no prepared dataset at .*manifest.json is missing.*data_prep"
    ):
        train(tmp_path)


def test_shard_missing_from_disk(tmp_path):
    root = make_dataset(tmp_path, [3, 3])
    shard_path(root, "train", 1).unlink()
    with pytest.raises(ShardFormatError, match=r"train-000001.tar listed in .* is missing"):
        train(root)


def test_index_missing_says_how_to_recreate(tmp_path):
    root = make_dataset(tmp_path, [3, 3])
    shard_path(root, "train", 0).with_suffix(".idx").unlink()
    with pytest.raises(
        ShardFormatError, match=rf"train-000000.idx is missing.*python -m data_prep index {root}"
    ):
        train(root)


def test_shard_without_cls_member(tmp_path):
    root = make_dataset(tmp_path, [2])
    path = shard_path(root, "train", 0)
    buf, lines = io.BytesIO(), []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for k in range(2):
            parts = []
            for ext, data in (
                ("jpg", jpeg_bytes(blobs()(0, np.random.default_rng(k)))),
                ("json", b"{}"),
            ):
                offset = buf.tell() + 512
                info = tarfile.TarInfo(f"train_{k:08d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                parts.append(f"{ext} {offset} {len(data)} train_{k:08d}.{ext}")
            lines.append(" ".join(parts))
    path.write_bytes(buf.getvalue())
    path.with_suffix(".idx").write_text(f"{INDEX_VERSION} 2\n" + "\n".join(lines) + "\n")
    with pytest.raises(
        ShardFormatError, match=r"sample train_00000000 .* has no \.cls member.*re-run data_prep"
    ):
        train(root)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_gpu_decoding_without_cuda(tmp_path):
    root = make_dataset(tmp_path, [4])
    with pytest.raises(RuntimeError, match=r"decode_device=gpu .* CUDA is not available.*decode_device=cpu"):
        train(root, loader="dali", decode_device="gpu")
    with pytest.raises(RuntimeError, match="decode_device=gpu needs the DALI loader"):
        train(root, loader="cpu", decode_device="gpu")


def test_reader_source_on_the_cpu_path_is_refused(tmp_path):
    root = make_dataset(tmp_path, [4])
    with pytest.raises(
        RuntimeError, match=r"dali_source=reader .* data\.loader=cpu resolved to the CPU path"
    ):
        train(root, loader="cpu", dali_source="reader")


def test_batch_larger_than_split_and_bad_resume(tmp_path):
    root = make_dataset(tmp_path, [5])
    with pytest.raises(ValueError, match="fewer than one global batch"):
        train(root, mb=8)
    tl = train(root, mb=1)
    state = {**tl.state_dict(), "position": 2, "world_size": 2}
    with pytest.raises(ValueError, match=r"cannot resume mid-epoch 0 .* different world size"):
        tl.load_state_dict(state)


def test_eval_errors(tmp_path):
    root = make_dataset(tmp_path, [4])
    data = DataConfig(path=str(root), workers=1)
    pre = Preprocessing(mean=(0.0, 0.0, 0.0))
    kw = dict(batch_size=2, rank=0, world_size=1, device=CPU, preprocessing=pre)
    with pytest.raises(ShardFormatError, match="has no 'val' split"):
        build_eval_loader(data, q=40, crop=32, **kw)
    with pytest.raises(ValueError, match=r"eval crop 64 is larger than .* Q=40"):
        build_eval_loader(data, q=40, crop=64, split="train", **kw)
