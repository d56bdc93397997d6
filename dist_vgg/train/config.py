"""Every training setting, as typed dataclasses with a docstring under each field.

One `TrainConfig` nests one dataclass per component (torchtitan style). It is built from a named recipe
(`dist_vgg/recipes/NAME.toml`, which may name a `base` recipe it extends), then an optional TOML/YAML file,
then `--set section.field=value` overrides, in that order. Validation happens in `__post_init__`, and every
message names the setting to change. The resolved config is written into the run folder
(`config.resolved.toml`) and read back on resume.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dist_vgg.data.config import AugmentConfig, DataConfig
from dist_vgg.metrics.config import MetricsConfig
from dist_vgg.models import INIT_SCHEMES, MAPPINGS, get_config
from dist_vgg.train.comm import CommConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A setting that cannot work; the message names it (`section.field`) and says what to do."""


@dataclass
class ModelConfig:
    """Which network of Table 1 to train, and how to initialise it."""

    config: str = "A"
    """Table 1 configuration: A, A-LRN, B, C, D or E."""
    width: float = 1.0
    """Multiplier on every conv/FC width (1.0 = the paper; 1/16 for the tiny CPU recipes)."""
    dropout: float = 0.5
    """Dropout after FC-6 and FC-7 (the paper's 0.5)."""
    num_classes: int = 0
    """Size of FC-8. 0: taken from the dataset (its classes.txt), or `synthetic.num_classes` without data."""
    init: str = "paper"
    """paper (N(0, 0.01), the paper) | paper-width-corrected (the tiny recipes) | glorot (the paper's
    post-submission note; our assumption: Glorot uniform with zero biases)."""

    def __post_init__(self) -> None:
        try:
            get_config(self.config)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"model.config={self.config!r}: {e}") from None
        if self.init not in INIT_SCHEMES:
            raise ConfigError(f"model.init={self.init!r} is not one of {', '.join(INIT_SCHEMES)}")
        if not self.width > 0:
            raise ConfigError(f"model.width must be > 0 (got {self.width})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1) (got {self.dropout})")
        if self.num_classes < 0:
            raise ConfigError(f"model.num_classes must be >= 0 (got {self.num_classes}); 0 = from the data")


@dataclass
class WarmStartConfig:
    """Where the initial weights come from when the run folder holds no checkpoint (a checkpoint always
    wins: the run resumes instead). `--init-from` sets `warm_start.source`."""

    source: str = ""
    """Run folder, checkpoint folder or file, or a self-describing weights file. Empty: random init."""
    expects: str = "none"
    """What the recipe expects in `source`: none (random init; a source is still honoured) | A (the paper's
    init-from-A for B–E: a trained A net is required) | same (the same configuration, e.g. S=384 from
    S=256, jitter from S=384: a source is required)."""
    mapping: str = "paper"
    """Init-from-A layer mapping (see dist_vgg.models.transfer): paper | all-compatible."""

    def __post_init__(self) -> None:
        if self.expects not in ("none", "A", "same"):
            raise ConfigError(f"warm_start.expects={self.expects!r} is not one of none, A, same")
        if self.mapping not in MAPPINGS:
            raise ConfigError(f"warm_start.mapping={self.mapping!r} is not one of {', '.join(MAPPINGS)}")


@dataclass
class OptimConfig:
    """Mini-batch SGD (paper section 3.1) and how the global batch is split over ranks."""

    lr: float = 1e-2
    """Initial learning rate (the paper: 1e-2; 1e-3 for S=384 and jitter fine-tuning)."""
    momentum: float = 0.9
    """SGD momentum (the paper's 0.9)."""
    weight_decay: float = 5e-4
    """L2 penalty multiplier (the paper's 5e-4), applied to every parameter as in Caffe."""
    global_batch: int = 256
    """Images per optimiser step over all ranks (the paper's 256). micro_batch × accumulation × world
    size must equal it: per-rank micro-batch and accumulation are derived, so the recipe means the same on
    any number of devices."""
    max_micro_batch: int = 256
    """Largest per-rank forward/backward batch that fits in memory; gradient accumulation makes up the
    rest of the per-rank share."""
    lr_reference_batch: int = 0
    """0: no scaling (the paper). Otherwise the linear scaling rule: lr × global_batch / lr_reference_batch
    (a departure from the paper for large-batch recipes)."""
    warmup_epochs: float = 0.0
    """Linear warm-up from lr/… to the (scaled) lr over this many epochs (0: none, the paper)."""

    def __post_init__(self) -> None:
        for name in ("lr", "global_batch", "max_micro_batch"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"optim.{name} must be > 0 (got {getattr(self, name)})")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"optim.momentum must be in [0, 1) (got {self.momentum})")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.lr_reference_batch < 0:
            raise ConfigError(
                "optim.weight_decay, optim.warmup_epochs and optim.lr_reference_batch must be >= 0"
            )

    @property
    def peak_lr(self) -> float:
        if self.lr_reference_batch:
            return self.lr * self.global_batch / self.lr_reference_batch
        return self.lr


@dataclass
class ScheduleConfig:
    """When the learning rate drops and when training stops."""

    policy: str = "plateau"
    """plateau (the paper: ÷decay_factor when validation top-1 stops improving, `max_decays` times, then
    stop) | fixed (train `max_epochs` epochs, dropping the lr at `milestones`)."""
    max_epochs: int = 74
    """Upper bound on epochs (the paper stopped at 370K iterations = 74 epochs of 1.28 M images)."""
    max_steps: int = 0
    """Upper bound on optimiser steps (0: none). Used by short runs, benchmarks and tests."""
    patience: int = 2
    """plateau: epochs without improvement before a drop. The paper is silent; our assumption: 2 epochs."""
    threshold: float = 0.001
    """plateau: an epoch 'improves' when validation top-1 beats the best so far by more than this
    (absolute, 0.1 percentage point). The paper is silent; this is our assumption."""
    decay_factor: float = 0.1
    """lr multiplier at each drop (the paper divides by 10)."""
    max_decays: int = 3
    """plateau: drops before training stops at the next plateau (the paper: 3)."""
    milestones: list[int] = field(default_factory=list)
    """fixed: epochs after which the lr is multiplied by decay_factor."""

    def __post_init__(self) -> None:
        if self.policy not in ("plateau", "fixed"):
            raise ConfigError(f"schedule.policy={self.policy!r} is not one of plateau, fixed")
        if self.max_epochs < 1 or self.max_steps < 0 or self.patience < 1 or self.max_decays < 0:
            raise ConfigError(
                "need schedule.max_epochs >= 1, schedule.max_steps >= 0, schedule.patience >= 1, "
                f"schedule.max_decays >= 0 (got {self.max_epochs}, {self.max_steps}, {self.patience}, "
                f"{self.max_decays})"
            )
        if not 0 < self.decay_factor < 1:
            raise ConfigError(f"schedule.decay_factor must be in (0, 1) (got {self.decay_factor})")


@dataclass
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    every_steps: int = 2000
    """Save every N optimiser steps (0: not by steps)."""
    every_minutes: float = 30.0
    """Save when this much wall time passed since the last save (0: not by time). Checked every
    `runtime.check_every` steps, agreed on by all ranks."""
    keep_last: int = 3
    """Committed checkpoints kept (older ones are deleted after a new one commits; the final one stays)."""

    def __post_init__(self) -> None:
        if self.every_steps < 0 or self.every_minutes < 0 or self.keep_last < 1:
            raise ConfigError(
                "need checkpoint.every_steps >= 0, checkpoint.every_minutes >= 0, checkpoint.keep_last >= 1"
            )


@dataclass
class RuntimeConfig:
    """How the job runs: engine, device, numerics, logging and the fault-tolerance knobs."""

    engine: str = "ddp"
    """ddp (PyTorch DistributedDataParallel, the default) | deepspeed (ZeRO stage `deepspeed.zero_stage`)."""
    device: str = "auto"
    """auto (CUDA when available, else CPU) | cuda | cpu."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 | fp16 (autocast + dynamic loss scaling)."""
    channels_last: bool = False
    """NHWC memory format for model and inputs (faster convolutions on tensor cores and oneDNN)."""
    compile: bool = False
    """torch.compile the model (DDP engine)."""
    seed: int = 0
    """Seeds the initialisation (identical on every rank) and per-rank dropout/augmentation streams."""
    log_every: int = 50
    """Progress line (and metrics report) every N optimiser steps."""
    check_every: int = 10
    """Every N steps the ranks agree, with one small all-reduce, on stop signals, non-finite losses and
    time-based checkpoints (no host sync on the other steps)."""
    pg_timeout_s: float = 600.0
    """Process-group timeout: a dead rank makes the others fail after this long instead of hanging."""
    max_restarts: int = 20
    """Cap on automatic requeues: once the run was requeued this often, SIGUSR1 saves and exits STOPPED (4)
    instead of REQUEUE (75)."""
    validate: bool = True
    """Centre-crop validation at the end of every epoch (needed by the plateau schedule)."""

    def __post_init__(self) -> None:
        valid = {
            "engine": ("ddp", "deepspeed"),
            "device": ("auto", "cuda", "cpu"),
            "precision": ("auto", "fp32", "bf16", "fp16"),
        }
        for name, choices in valid.items():
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"runtime.{name}={getattr(self, name)!r} is not one of {', '.join(choices)}"
                )
        if self.log_every < 1 or self.check_every < 1 or self.pg_timeout_s <= 0 or self.max_restarts < 0:
            raise ConfigError(
                "need runtime.log_every >= 1, runtime.check_every >= 1, runtime.pg_timeout_s > 0, "
                "runtime.max_restarts >= 0"
            )


@dataclass
class DeepSpeedConfig:
    """Settings used only with `runtime.engine = "deepspeed"`."""

    zero_stage: int = 0
    """ZeRO stage 0, 1 (optimiser state sharded) or 2 (+ gradients). Resuming a ZeRO-1/2 run needs the
    same world size."""

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2):
            raise ConfigError(f"deepspeed.zero_stage={self.zero_stage} is not one of 0, 1, 2")


@dataclass
class SyntheticConfig:
    """On-device synthetic data, used when `data.path` is empty (GPU checks, benchmarks, exactness tests)."""

    num_classes: int = 1000
    """Classes of the synthetic labels (and FC-8 when model.num_classes is 0)."""
    steps_per_epoch: int = 100
    """Optimiser steps (global batches) per synthetic epoch, the same on any world size."""
    val_images: int = 256
    """Validation images (split over ranks) drawn once from the same distribution."""
    learnable: bool = False
    """False: random images with random labels. True: every class has its own fixed image pattern plus
    noise, so accuracy can rise above chance (staged-flow tests without a dataset)."""
    noise: float = 1.0
    """Learnable mode: noise std relative to the class pattern's std."""

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.steps_per_epoch < 1 or self.val_images < 0 or self.noise < 0:
            raise ConfigError(
                "need synthetic.num_classes >= 1, synthetic.steps_per_epoch >= 1, synthetic.val_images >= 0, "
                "synthetic.noise >= 0"
            )


@dataclass
class TrainConfig:
    """A whole training run."""

    recipe: str = ""
    """Name of the recipe this config was built from (labels metrics and the log)."""
    stage: str = ""
    """Free-form stage label for metrics, e.g. S256, S384, jitter."""
    notes: list[str] = field(default_factory=list)
    """The recipe's stated assumptions and departures from the paper (logged at start)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    """Initial weights from another run (only when this run has no checkpoint)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Input pipeline (see dist_vgg.data.config)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training augmentation (see dist_vgg.data.config)."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """Synthetic data when data.path is empty."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimiser and batch."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """Learning-rate schedule and stopping."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint cadence and retention."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Engine, device, numerics, logging, fault tolerance."""
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    """DeepSpeed engine settings."""
    comm: CommConfig = field(default_factory=CommConfig)
    """DDP gradient communication: all-reduce bucket size and optional bf16 compression (see
    dist_vgg.train.comm; the defaults are exact fp32 averaging, the paper's synchronous SGD)."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """Prometheus export (see dist_vgg.metrics.config)."""

    def to_dict(self) -> dict:
        return _plain(dataclasses.asdict(self))

    @property
    def val_scale(self) -> int:
        """Validation rescale Q: S for single-scale training, the midpoint of [Smin, Smax] for jittering (the
        paper's Q = 384 for S ∈ [256, 512])."""
        return (self.augment.scale_min + self.augment.scale_max) // 2


# ---------------------------------------------------------------------------------------------- batch split


@dataclass(frozen=True)
class BatchSplit:
    """How one global batch is cut: micro_batch × accumulation × world_size == global_batch."""

    global_batch: int
    world_size: int
    micro_batch: int
    accumulation: int


def valid_world_sizes(global_batch: int, limit: int = 1024) -> list[int]:
    return [w for w in range(1, min(global_batch, limit) + 1) if global_batch % w == 0]


def split_batch(optim: OptimConfig, world_size: int) -> BatchSplit:
    """Derive the per-rank micro-batch and accumulation; refuse a world size that cannot split the batch."""
    if optim.global_batch % world_size:
        sizes = ", ".join(map(str, valid_world_sizes(optim.global_batch)))
        raise ConfigError(
            f"optim.global_batch={optim.global_batch} cannot be split evenly over {world_size} ranks; "
            f"valid world sizes: {sizes} (or change optim.global_batch, a departure from the paper's 256)"
        )
    per_rank = optim.global_batch // world_size
    for accumulation in range(1, per_rank + 1):
        if per_rank % accumulation == 0 and per_rank // accumulation <= optim.max_micro_batch:
            return BatchSplit(optim.global_batch, world_size, per_rank // accumulation, accumulation)
    raise AssertionError("unreachable: accumulation = per_rank always fits")


# ---------------------------------------------------------------------------------------------- loading

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def recipe_dict(name: str, _seen: tuple[str, ...] = ()) -> dict:
    """The recipe's settings as a nested dict, with its `base` chain merged in (base first)."""
    path = RECIPES_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown recipe {name!r}; choose one of: {', '.join(recipe_names())}")
    if name in _seen:
        raise ConfigError(f"recipe {name!r} extends itself through {' → '.join(_seen)}")
    raw = tomllib.loads(path.read_text())
    base = raw.pop("base", None)
    merged = recipe_dict(base, (*_seen, name)) if base else {}
    notes = merged.get("notes", []) + raw.pop("notes", [])
    merged = merge(merged, raw)
    merged["notes"] = notes
    merged["recipe"] = name
    return merged


def load_file(path: str | Path) -> dict:
    """A TOML (.toml) or YAML (.yaml/.yml) config file as a nested dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.suffix == ".toml":
        try:
            return tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (got {type(data).__name__})")
        return data
    if path.suffix == ".json":
        import json

        return json.loads(path.read_text())
    raise ConfigError(f"config file {path}: use a .toml, .yaml/.yml or .json file")


def parse_override(text: str) -> dict:
    """`section.field=value` → {"section": {"field": value}}; the value is read as TOML (numbers, booleans,
    lists, quoted strings) and falls back to a plain string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected section.field=value, e.g. --set optim.lr=0.001")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = parsed
    return out


def merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def build_config(
    recipe: str | None = None, files: list[str | Path] = (), overrides: list[str] = ()
) -> TrainConfig:
    """recipe → files → `--set` overrides, validated."""
    d: dict = recipe_dict(recipe) if recipe else {}
    for f in files:
        d = merge(d, load_file(f))
    for o in overrides:
        d = merge(d, parse_override(o))
    return from_dict(TrainConfig, d)


def from_dict(cls: type, d: dict, where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, converting lists to tuples where the field wants one and
    refusing unknown keys by name."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where or 'config'} must be a table/section, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(where + k for k in unknown)}; valid in "
            f"{where.rstrip('.') or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _convert(hints[k], v, f"{where}{k}") for k, v in d.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where.rstrip('.') or 'config'}: {e}") from None


def _convert(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where + ".")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args and ((len(args) == 2 and args[1] is Ellipsis) or len(set(args)) == 1) else Any
        return tuple(_convert(inner, v, where) for v in value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_convert(inner, v, where) for v in value]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (tp in (int, float, str, bool) and not isinstance(value, tp)) or (
        tp is int and isinstance(value, bool)
    ):
        raise ConfigError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def _plain(obj: Any) -> Any:
    """Tuples → lists and None → dropped, so the dict serialises to TOML."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def to_toml(cfg: TrainConfig) -> str:
    import tomli_w

    return tomli_w.dumps(cfg.to_dict())


# ---------------------------------------------------------------------------------------------- reference


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings under dataclass fields (read from the source: they are not runtime attributes)."""
    import ast
    import inspect
    import itertools
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for a, b in itertools.pairwise(body):
        if (
            isinstance(a, ast.AnnAssign)
            and isinstance(a.target, ast.Name)
            and isinstance(b, ast.Expr)
            and isinstance(b.value, ast.Constant)
            and isinstance(b.value.value, str)
        ):
            docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def config_reference() -> str:
    """Markdown reference of every setting, generated from the dataclasses (`--print-config-reference`)."""
    lines = ["# `dist-vgg train` configuration reference", ""]
    lines.append("Generated from `dist_vgg.train.config` (`dist-vgg train --print-config-reference`).")
    default = TrainConfig()
    top_docs = field_docs(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        value = getattr(default, f.name)
        if not dataclasses.is_dataclass(value):
            continue
        cls = type(value)
        lines += ["", f"## `[{f.name}]` — {top_docs.get(f.name, '')}", ""]
        lines += ["| setting | default | meaning |", "|---|---|---|"]
        docs = field_docs(cls)
        for sub in dataclasses.fields(cls):
            d = getattr(value, sub.name)
            lines.append(f"| `{f.name}.{sub.name}` | `{d!r}` | {docs.get(sub.name, '').replace('|', '/')} |")
    return "\n".join(lines) + "\n"
