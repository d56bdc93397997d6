"""The DALI training graph: encoded JPEGs and the batch's random draws come in through `external_source`
(from the shared `BatchReader`), then decode → resize the crop's source box to crop×crop → flip and subtract
(mean − colour shift) / std in `crop_mirror_normalize`.

The graph is the same on both devices; only the decoder's device differs: `mixed` (GPU; nvJPEG and the
hardware JPEG decoder where the GPU has one) puts everything after it on the GPU, `cpu` keeps it on the CPU
(`device_id=None`, which is how the tests run it). The random parameters are graph *inputs*, not DALI random
operators, so the DALI and the CPU path draw identical S, crops, flips and shifts, and a resume needs no
DALI checkpoint: (epoch, position) regenerates the inputs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from dist_vgg.data.augment import crop_box, jpeg_size
from dist_vgg.data.train_loader import BatchReader


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def dali_device(decode_device: str, device: torch.device) -> tuple[str, int | None]:
    """(decoder device 'mixed'|'cpu', DALI device_id) for `data.decode_device` on this training device."""
    if decode_device == "gpu" or (decode_device == "auto" and device.type == "cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "data.decode_device=gpu asks DALI to decode on the GPU, but CUDA is not available on this "
                "machine; set data.decode_device=cpu (or auto)"
            )
        if device.type != "cuda":
            raise RuntimeError(
                f"data.decode_device=gpu needs a CUDA training device, got {device}; use decode_device=cpu"
            )
        return "mixed", device.index if device.index is not None else torch.cuda.current_device()
    return "cpu", None


def _inputs(reader: BatchReader, epoch: int, start: int) -> Iterator[tuple[list[np.ndarray], ...]]:
    aug = reader.aug
    mean, std = np.asarray(aug.mean_rgb), np.asarray(aug.std_rgb or (1.0, 1.0, 1.0), dtype=np.float32)
    for b in range(start, reader.plan.batches_per_epoch):
        raw = reader.read(epoch, b)
        p = raw.params
        jpegs, roi0, roi1 = [], [], []
        for k, jpeg in enumerate(raw.jpegs):
            h, w = jpeg_size(jpeg)
            y0, x0, y1, x1 = crop_box(h, w, int(p.scale[k]), aug.crop, p.crop_x[k], p.crop_y[k])
            jpegs.append(np.frombuffer(jpeg, dtype=np.uint8))
            roi0.append(np.array([y0, x0], dtype=np.float32))
            roi1.append(np.array([y1, x1], dtype=np.float32))
        yield (
            jpegs,
            [np.array(v, dtype=np.int64) for v in raw.labels],
            roi0,
            roi1,
            [np.array(int(f), dtype=np.int32) for f in p.flip],
            [(mean - c).astype(np.float32) for c in p.color_shift],
            [std] * len(jpegs),
        )


def build_train_graph(
    source: Iterator, batch_size: int, crop: int, decoder: str, device_id: int | None, threads: int
):  # -> nvidia.dali.Pipeline
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=device_id, prefetch_queue_depth=2)
    def graph():
        jpegs, labels, roi0, roi1, flip, mean, std = fn.external_source(
            source=source, num_outputs=7, batch=True
        )
        images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB, adjust_orientation=False)
        images = fn.resize(
            images,
            size=[crop, crop],
            roi_start=roi0,
            roi_end=roi1,
            roi_relative=False,
            interp_type=types.INTERP_LINEAR,
            antialias=True,
        )
        images = fn.crop_mirror_normalize(
            images, mirror=flip, mean=mean, std=std, output_layout="CHW", dtype=types.FLOAT
        )
        return images, labels

    pipe = graph()
    pipe.build()
    return pipe


def _to_torch(out, device: torch.device) -> torch.Tensor:
    """A dense DALI TensorList (CPU or GPU) as a torch tensor; GPU outputs land on `device` (DALI's GPU)."""
    from nvidia.dali.backend import TensorListGPU

    tensor = out.as_tensor()
    if isinstance(out, TensorListGPU):
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        t = torch.empty(tensor.shape(), dtype=to_torch_type[tensor.dtype], device=device)
        feed_ndarray(tensor, t, cuda_stream=torch.cuda.current_stream(device))
        return t
    return torch.from_numpy(np.array(tensor))


class DaliBackend:
    """One DALI pipeline per epoch (or per resumed partial epoch), fed by the shared reader."""

    def __init__(self, reader: BatchReader, threads: int, decoder: str, device_id: int | None) -> None:
        self.reader, self.threads, self.decoder, self.device_id = reader, threads, decoder, device_id
        self.gpu = torch.device("cuda", device_id) if device_id is not None else torch.device("cpu")

    def batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.reader.plan.batches_per_epoch - start
        if n <= 0:
            return
        pipe = build_train_graph(
            _inputs(self.reader, epoch, start),
            self.reader.plan.micro_batch,
            self.reader.aug.crop,
            self.decoder,
            self.device_id,
            self.threads,
        )
        try:
            for _ in range(n):  # exactly n runs: the source never reaches its end, so no partial batch
                images, labels = pipe.run()
                yield _to_torch(images, self.gpu), _to_torch(labels, self.gpu)
        finally:
            del pipe
