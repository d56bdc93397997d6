"""The input pipeline's settings: one `AugmentConfig` drives both the DALI graph and the CPU path, so the two
cannot drift apart; `DataConfig` says where the shards are and how to read them."""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)
"""ImageNet training-set mean RGB on 0–255 pixels (the published values; `data_prep stats` measures ours)."""
IMAGENET_EIGVAL = (0.2175 * 255, 0.0188 * 255, 0.0045 * 255)
"""AlexNet's PCA lighting eigenvalues as published for 0–1 pixels (fb.resnet.torch), converted to 0–255."""
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
"""Rows are R, G, B; columns the three principal components (unit vectors, so no unit conversion)."""


@dataclass
class AugmentConfig:
    """The paper's training augmentation (section 3.1) and the evaluation rescale."""

    crop: int = 224
    """Side of the square random crop fed to the net (the paper's 224; 32–64 for tiny CPU runs)."""
    scale_min: int = 256
    """Smallest training scale S (shorter side after isotropic rescaling)."""
    scale_max: int = 256
    """Largest training scale S. Equal to scale_min: single-scale training (S=256 or 384); larger: scale
    jittering, S drawn per image uniformly from [scale_min, scale_max] (the paper's [256, 512])."""
    flip: bool = True
    """Random horizontal flip with probability 1/2."""
    color_shift_std: float = 0.1
    """σ of AlexNet's PCA colour-shift coefficients (0 turns it off)."""
    mean_rgb: tuple[float, float, float] | None = None
    """Mean RGB subtracted from every pixel (0–255 units). None: the manifest's measured `stats`, else
    ImageNet's published mean. The value in force is written into the run's resolved config."""
    std_rgb: tuple[float, float, float] | None = None
    """Per-channel divisor after mean subtraction. None (the paper): no division."""
    pca_eigval: tuple[float, float, float] | None = None
    """Eigenvalues of the RGB covariance for the colour shift, 0–255 units. None: manifest stats, else ImageNet's."""
    pca_eigvec: tuple[tuple[float, float, float], ...] | None = None
    """Eigenvectors (rows R, G, B; columns components). None: manifest stats, else ImageNet's."""

    def __post_init__(self) -> None:
        if self.crop <= 0 or self.crop % 32:
            raise ValueError(f"augment.crop must be a positive multiple of 32 (got {self.crop})")
        if not self.crop <= self.scale_min <= self.scale_max:
            raise ValueError(
                f"need augment.crop <= augment.scale_min <= augment.scale_max "
                f"(got crop={self.crop}, scale_min={self.scale_min}, scale_max={self.scale_max}); "
                "a crop cannot be larger than the rescaled image"
            )
        if self.color_shift_std < 0:
            raise ValueError(f"augment.color_shift_std must be >= 0 (got {self.color_shift_std})")

    @property
    def jitter(self) -> bool:
        return self.scale_max > self.scale_min


@dataclass
class DataConfig:
    """Where the shards are and how to read them."""

    path: str = ""
    """Prepared dataset folder (with manifest.json). Empty: synthetic on-device data (benchmarks, GPU checks)."""
    loader: str = "auto"
    """auto | dali | cpu | synthetic. auto: DALI where it is installed, else the CPU path (webdataset + a
    torch DataLoader), synthetic when `path` is empty."""
    decode_device: str = "auto"
    """auto | gpu | cpu (DALI only). auto: GPU decoding (`mixed`, hardware decoder where present) when CUDA is
    available, CPU otherwise. gpu on a machine without CUDA is an error."""
    workers: int = 4
    """DALI threads or DataLoader worker processes per rank."""
    dali_source: str = "external"
    """external | reader: where the DALI graph gets its samples (data.loader=dali only). external: the shared
    index reader feeds `fn.external_source`; every epoch is a full permutation of the split, the random draws
    are the CPU path's, and a resume needs only (epoch, position). reader: DALI's own `fn.readers.webdataset`
    over the shards and their `.idx` indexes, sharded by sample across ranks (each rank moves to the next
    shard range every epoch), shuffled through a buffer of `shuffle_buffer` samples, with DALI random
    operators for S, crop, flip and colour shift; a resume restores a DALI checkpoint."""
    shuffle_buffer: int = 2048
    """Samples in DALI's shuffle buffer (`initial_fill`) with data.dali_source=reader: the order within a
    rank's shard range is random only within this window. Unused by the external and CPU paths, which
    permute the whole split every epoch and need no buffer."""
    stage_local_dir: str = ""
    """If set, copy the shards this node's ranks read to this node-local folder at job start (with
    data.dali_source=reader: every train shard, as every rank reads every shard range over the epochs)."""
    val_batch_size: int = 64
    """Per-rank batch for centre-crop validation."""
    synthetic_batches: int = 100
    """Batches per epoch of the synthetic loader (data.path empty or data.loader=synthetic)."""

    def __post_init__(self) -> None:
        choices = {
            "loader": ("auto", "dali", "cpu", "synthetic"),
            "decode_device": ("auto", "gpu", "cpu"),
            "dali_source": ("external", "reader"),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"data.{name}={getattr(self, name)!r} is not one of {', '.join(valid)}")
        if self.workers < 1:
            raise ValueError(f"data.workers must be >= 1 (got {self.workers})")
        if self.shuffle_buffer < 1:
            raise ValueError(
                f"data.shuffle_buffer must be >= 1 (got {self.shuffle_buffer}); 1 reads each shard range in order"
            )
