"""The training loop: load → step → (agree, log, validate, checkpoint) → repeat.

Run folder layout (everything a run writes):

    RUN/config.resolved.toml   the full config in force (recipe + file + --set, with the data's measured mean and
                               PCA values filled in at first start and reused on every resume)
    RUN/train.log              rank 0's log: start-up, the init-from-A transfer report, one progress line per
                               `runtime.log_every` steps ("epoch E step N (i/n) loss … lr … img/s … eta …"),
                               validation, checkpoints, the exit reason
    RUN/metrics.jsonl          one JSON object per event (start, progress, validation, checkpoint)
    RUN/checkpoints/step-NNNNNNNN/{rank-XXXXX.pt…, COMMITTED}   see dist_vgg.checkpoint
    RUN/final -> checkpoints/step-NNNNNNNN                       when training finished
    RUN/LOCK                   held while a job writes the folder (see dist_vgg.train.lock)

Host syncs happen only at check steps (every `runtime.check_every` steps, one small all-reduce of stop flags,
the first non-finite step and the time-based checkpoint flag), log steps (loss/top-1/step times), validation
and checkpoints. Every such place is marked `# host sync`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from dist_vgg import checkpoint as ckpt
from dist_vgg.data.format import ShardFormatError
from dist_vgg.eval.accuracy import evaluate_batches
from dist_vgg.launch import LaunchEnv, destroy_process_group, init_process_group
from dist_vgg.metrics import (
    CheckpointEvent,
    MetricsSink,
    MultiSink,
    RunLabels,
    TrainProgress,
    ValidationResult,
)
from dist_vgg.metrics.jsonl import JsonlSink, LogLineSink
from dist_vgg.models import TransferError, VGGSpec, build_vgg, initialise, transfer_from_a
from dist_vgg.preflight import dump_flight_recorder
from dist_vgg.train import exit_codes, signals
from dist_vgg.train.config import ConfigError, TrainConfig, from_dict, load_file, split_batch, to_toml
from dist_vgg.train.data import Inputs, preprocessing
from dist_vgg.train.engine import DDPEngine, Engine
from dist_vgg.train.lock import LockError, RunLock
from dist_vgg.train.schedule import LRSchedule
from dist_vgg.weights import WeightsFormatError

RESOLVED = "config.resolved.toml"
TRAIN_LOG = "train.log"
METRICS = "metrics.jsonl"


class NonFiniteLoss(RuntimeError):
    pass


def setup_logging(run_dir: Path, rank: int) -> logging.Logger:
    log = logging.getLogger("dist_vgg.train")
    log.handlers.clear()
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter(f"%(asctime)s [rank {rank}] %(message)s", "%Y-%m-%d %H:%M:%S")
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(fmt)
    err.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    log.addHandler(err)
    if rank == 0:
        f = logging.FileHandler(run_dir / TRAIN_LOG)
        f.setFormatter(fmt)
        log.addHandler(f)
    # The input pipeline logs its epoch plan (batches per epoch, samples used) and resume decisions under
    # its own name; they belong in the same stream and file.
    data_log = logging.getLogger("dist_vgg.data")
    data_log.handlers[:] = log.handlers
    data_log.setLevel(logging.INFO)
    data_log.propagate = False
    return log


def pick_device(cfg: TrainConfig, launch: LaunchEnv) -> torch.device:
    want = cfg.runtime.device
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("runtime.device=cuda but CUDA is not available; use runtime.device=cpu or auto")
        torch.cuda.set_device(launch.local_rank)
        return torch.device("cuda", launch.local_rank)
    return torch.device("cpu")


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.runtime.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return cfg.runtime.precision


ARCH_FIELDS = ("model.config", "model.width", "model.num_classes", "model.dropout", "augment.crop")


def _get(cfg: TrainConfig, dotted: str) -> object:
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)


def reconcile_with_saved(
    cfg: TrainConfig, saved: TrainConfig, saved_world: int, world: int, shards_optimizer: bool
) -> list[str]:
    """Refuse a resume whose config breaks the checkpoint (naming what changed); return notes to log."""
    changed = [
        f"{k}: {_get(saved, k)!r} → {_get(cfg, k)!r}" for k in ARCH_FIELDS if _get(saved, k) != _get(cfg, k)
    ]
    if saved.optim.global_batch != cfg.optim.global_batch:
        changed.append(f"optim.global_batch: {saved.optim.global_batch} → {cfg.optim.global_batch}")
    if saved.runtime.engine != cfg.runtime.engine:
        changed.append(f"runtime.engine: {saved.runtime.engine} → {cfg.runtime.engine}")
    if shards_optimizer and saved_world != world:
        changed.append(f"world size with sharded optimiser state (ZeRO): {saved_world} → {world}")
    if changed:
        raise ConfigError(
            "cannot resume this run folder: " + "; ".join(changed) + ". Use the run's own settings (see "
            f"{RESOLVED}) or start a new --run-dir (with --init-from this run for a warm start)"
        )
    # the data statistics measured at first start stay in force
    for name in ("mean_rgb", "std_rgb", "pca_eigval", "pca_eigvec"):
        setattr(cfg.augment, name, getattr(saved.augment, name))
    return []


class Trainer:
    """One training run in one process (one rank)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, launch: LaunchEnv) -> None:
        self.cfg, self.run_dir, self.launch = cfg, run_dir, launch
        self.rank, self.world = launch.rank, launch.world_size
        self.log = setup_logging(run_dir, self.rank)
        self.lock = RunLock(run_dir, launch.job_id)
        self.stop = signals.StopFlag()
        self.sink: MetricsSink = MetricsSink()

    # ------------------------------------------------------------------ set-up

    def all_max(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()  # host sync

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def setup(self) -> None:
        cfg = self.cfg
        self.device = pick_device(cfg, self.launch)
        init_process_group(self.launch, self.device.type, cfg.runtime.pg_timeout_s)
        self.stop.install()
        lock_error = ""
        if self.rank == 0:
            try:
                self.lock.acquire()
                if self.lock.took_over is not None:
                    self.log.info(f"took over a stale lock: {self.lock.took_over}")
            except LockError as e:
                lock_error = str(e)
        if self.all_max([1.0 if lock_error else 0.0])[0]:
            raise LockError(lock_error or "rank 0 could not lock the run folder (see its log)")
        if self.rank == 0:
            for p in ckpt.remove_uncommitted(self.run_dir):
                self.log.info(f"removed uncommitted checkpoint {p.name} (interrupted save)")
        self.barrier()
        self.resume_from = ckpt.latest_committed(self.run_dir)
        self.split = split_batch(cfg.optim, self.world)
        source = cfg.warm_start.source  # checked before anything heavy is built
        if self.resume_from is None and cfg.warm_start.expects != "none" and not source:
            what = (
                "a trained A run"
                if cfg.warm_start.expects == "A"
                else f"a {cfg.model.config} run of the previous stage"
            )
            raise ConfigError(
                f"recipe {cfg.recipe!r} starts from {what}: pass --init-from RUN_OR_CHECKPOINT "
                '(or set warm_start.expects="none" for random init)'
            )
        self.precision = resolve_precision(cfg, self.device)
        self.log.info(f"dist-vgg train: recipe {cfg.recipe or '(none)'} run {self.run_dir}")
        self.log.info(self.launch.describe())
        for note in cfg.notes:
            self.log.info(f"assumption: {note}")
        s = self.split
        self.log.info(
            f"global batch {s.global_batch} = micro-batch {s.micro_batch} × accumulation {s.accumulation} "
            f"× world size {s.world_size}; device {self.device}, precision {self.precision}, "
            f"channels_last {cfg.runtime.channels_last}, compile {cfg.runtime.compile}, engine {cfg.runtime.engine}"
        )
        if cfg.runtime.engine == "ddp" and self.world > 1:
            self.log.info(
                f"DDP gradient all-reduce: {cfg.comm.bucket_cap_mb:g} MiB buckets, compress {cfg.comm.compress}"
                + (" (departure from the paper's exact averaging)" if cfg.comm.compress != "none" else "")
            )
        saved_part: dict | None = None
        if self.resume_from is not None:
            saved_part = ckpt.load_rank_part(self.resume_from, 0)
            saved_cfg = from_dict(TrainConfig, saved_part["config"])
            reconcile_with_saved(
                cfg,
                saved_cfg,
                saved_part["world_size"],
                self.world,
                cfg.runtime.engine == "deepspeed" and cfg.deepspeed.zero_stage > 0,
            )
        elif cfg.data.path:
            from dist_vgg.train.data import pipeline

            cfg.augment = pipeline().resolve_augment(cfg.augment, cfg.data)
        self.inputs = Inputs(
            cfg, self.split, self.rank, self.device, cfg.runtime.channels_last, self.launch.local_world_size
        )
        self.spec = VGGSpec(
            cfg.model.config, self.inputs.num_classes, cfg.model.width, cfg.augment.crop, cfg.model.dropout
        )
        if self.rank == 0:
            ckpt.atomic_write_bytes(self.run_dir / RESOLVED, to_toml(cfg).encode())
        self.model = self.build_model(warm=self.resume_from is None)
        self.engine = self.build_engine()
        self.steps_per_epoch = self.inputs.train.batches_per_epoch // self.split.accumulation
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"an epoch has {self.inputs.train.batches_per_epoch} micro-batches per rank, fewer than one "
                f"optimiser step ({self.split.accumulation}); use a larger dataset or smaller optim.global_batch"
            )
        self.schedule = LRSchedule(cfg.optim, cfg.schedule, self.steps_per_epoch)
        total = cfg.schedule.max_epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.schedule.max_steps) if cfg.schedule.max_steps else total
        self.step = self.epoch = self.step_in_epoch = self.requeues = 0
        torch.manual_seed(cfg.runtime.seed * 1000 + 1 + self.rank)  # per-rank dropout stream
        random.seed(cfg.runtime.seed * 1000 + 1 + self.rank)
        if self.resume_from is not None:
            self.restore(saved_part)
        self.build_sinks()

    def build_model(self, warm: bool) -> torch.nn.Module:
        cfg = self.cfg
        torch.manual_seed(cfg.runtime.seed)  # identical initial weights on every rank
        model = build_vgg(
            self.spec.config, self.spec.num_classes, self.spec.width, self.spec.crop, self.spec.dropout
        )
        initialise(model, cfg.model.init, generator=torch.Generator().manual_seed(cfg.runtime.seed))
        source = cfg.warm_start.source
        if warm and source:
            self.warm_start(model, source)
        elif source and not warm:
            self.log.info(
                f"--init-from {source} ignored: the run folder holds checkpoint {self.resume_from.name}, resuming"
            )
        model.to(self.device)
        if cfg.runtime.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def warm_start(self, model: torch.nn.Module, source: str) -> None:
        try:
            w = ckpt.load_weights(source)
        except (WeightsFormatError, ckpt.CheckpointError) as e:
            raise ConfigError(f"--init-from {source}: {e}") from None
        if w.spec.config == "A" and self.spec.config != "A":
            report = transfer_from_a(model, w.state_dict, w.spec, self.cfg.warm_start.mapping)
            for line in report.lines():
                self.log.info(line)
            return
        if w.spec != self.spec:
            raise ConfigError(
                f"--init-from {source}: it holds {w.spec}, this run builds {self.spec}; a same-configuration warm "
                "start needs the same network (init-from-A applies only from configuration A)"
            )
        model.load_state_dict(w.state_dict)
        self.log.info(
            f"warm start: all weights from {w.origin} (same configuration {w.spec.config}, weights only)"
        )

    def build_engine(self) -> Engine:
        if self.cfg.runtime.engine == "deepspeed":
            from dist_vgg.train.deepspeed_engine import DeepSpeedEngine

            return DeepSpeedEngine(
                self.model, self.cfg, self.device, self.precision, self.split, self.launch.local_rank
            )
        return DDPEngine(
            self.model, self.cfg, self.device, self.precision, self.split.accumulation, self.world > 1
        )

    def build_sinks(self) -> None:
        cfg = self.cfg
        sinks: list[MetricsSink] = []
        labels = RunLabels(
            self.launch.job_id or self.run_dir.name,
            cfg.model.config,
            cfg.stage,
            self.rank,
            self.launch.node_name,
        )
        try:
            from dist_vgg.metrics.setup import build_sink
        except ImportError:
            build_sink = None
        if build_sink is not None:
            sinks.append(build_sink(cfg.metrics, self.launch, labels, self.run_dir))
        if self.rank == 0:
            sinks.append(JsonlSink(self.run_dir / METRICS))
            sinks.append(
                LogLineSink(self.log, self.split.global_batch, self.steps_per_epoch, self.total_steps)
            )
        self.sink = MultiSink(sinks)
        self.sink.start(labels, max(self.launch.restart_count, self.requeues))

    # ------------------------------------------------------------------ checkpoints

    def rank_state(self) -> dict:
        state = {
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "loader": self.inputs.train.state_dict(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def save(self, final: bool = False) -> None:
        t0 = time.time()
        d = ckpt.step_dir(self.run_dir, self.step)
        if not ckpt.is_committed(d):
            payload: dict = {"step": self.step, "world_size": self.world, "rank_state": self.rank_state()}
            if self.rank == 0:
                payload.update(
                    self.engine.state_dict(),
                    schedule=self.schedule.state_dict(),
                    trainer={
                        "step": self.step,
                        "epoch": self.epoch,
                        "step_in_epoch": self.step_in_epoch,
                        "requeues": self.requeues,
                    },
                    epoch=self.epoch,
                    spec=self.spec.to_dict(),
                    config=self.cfg.to_dict(),
                    recipe=self.cfg.recipe,
                    preprocessing=dataclasses.asdict(preprocessing(self.cfg.augment)),
                    classes=self.inputs.classes,
                )
            d.mkdir(parents=True, exist_ok=True)
            self.engine.save_native(d, f"step-{self.step:08d}")
            ckpt.save_rank_part(d, self.rank, payload)
            self.barrier()  # every rank's part is on disk
            if self.rank == 0:
                ckpt.commit(
                    d,
                    {
                        "step": self.step,
                        "epoch": self.epoch,
                        "world_size": self.world,
                        "engine": self.cfg.runtime.engine,
                    },
                )
                for p in ckpt.prune(self.run_dir, self.cfg.checkpoint.keep_last):
                    self.log.info(
                        f"removed old checkpoint {p.name} (keep_last={self.cfg.checkpoint.keep_last})"
                    )
        if final and self.rank == 0:
            ckpt.mark_final(self.run_dir, d)
        self.barrier()
        self.last_save = time.time()
        self.sink.checkpoint(CheckpointEvent(self.step, time.time(), time.time() - t0, True))

    def restore(self, part0: dict) -> None:
        d = self.resume_from
        self.engine.load_state_dict(part0)
        self.engine.load_native(d, d.name)
        self.schedule.load_state_dict(part0["schedule"])
        t = part0["trainer"]
        self.step, self.epoch, self.step_in_epoch = t["step"], t["epoch"], t["step_in_epoch"]
        self.requeues = t.get("requeues", 0)
        saved_world = part0["world_size"]
        own = ckpt.load_rank_part(d, self.rank) if self.rank < saved_world else None
        if saved_world == self.world and own is not None:
            rs = own["rank_state"]
            torch.set_rng_state(rs["torch_rng"])
            random.setstate(rs["python_rng"])
            if "cuda_rng" in rs and self.device.type == "cuda":
                torch.cuda.set_rng_state(rs["cuda_rng"], self.device)
            self.inputs.train.load_state_dict(rs["loader"])
            self.log.info(f"resuming from {d.name}: epoch {self.epoch} step {self.step}")
        else:
            position = self.step_in_epoch * self.split.accumulation
            self.inputs.train.load_state_dict({"epoch": self.epoch, "position": position})
            self.log.info(
                f"resuming from {d.name} on world size {self.world} (checkpoint written at world size {saved_world}): "
                f"continuing from the same global sample position (epoch {self.epoch}, step {self.step}, "
                f"{self.step * self.split.global_batch} images); per-rank random streams are re-seeded, so dropout "
                "and augmentation draws differ from an uninterrupted run"
            )

    # ------------------------------------------------------------------ the loop

    def validate(self) -> None:
        if not self.cfg.runtime.validate:
            self.schedule_message(self.schedule.end_of_epoch(self.epoch, None))
            return
        model, dtype = self.model, getattr(self.engine, "dtype", None)
        model.eval()

        def scorer(images: torch.Tensor) -> torch.Tensor:
            if self.cfg.runtime.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
                return model(images).float()

        acc = evaluate_batches(scorer, self.inputs.eval_batches(), self.device)  # host sync
        model.train()
        self.sink.validation(ValidationResult(self.epoch, self.step, acc.top1, acc.top5, acc.images))
        self.schedule_message(self.schedule.end_of_epoch(self.epoch, acc.top1))

    def schedule_message(self, msg: str | None) -> None:
        if msg:
            self.log.info(msg)

    def train(self) -> int:
        cfg, split, engine = self.cfg, self.split, self.engine
        self.model.train()
        self.last_save = time.time()
        cuda = self.device.type == "cuda"
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        first_bad = torch.full((), -1.0, device=self.device)
        step_times: list = []
        waits: list[float] = []
        finished = self.step >= self.total_steps or self.schedule.state.stop
        if self.step:
            self.log.info(f"continuing at epoch {self.epoch} step {self.step} of {self.total_steps}")
        else:
            self.log.info(f"training {self.total_steps} steps ({self.steps_per_epoch} per epoch)")
        while not finished:
            self.inputs.train.set_epoch(self.epoch)
            batches = iter(self.inputs.train)
            while not finished:
                start = torch.cuda.Event(enable_timing=True) if cuda else time.perf_counter()
                if cuda:
                    start.record()
                wait = 0.0
                for micro in range(split.accumulation):
                    t = time.perf_counter()
                    images, labels = next(batches)
                    wait += time.perf_counter() - t
                    loss, logits = engine.micro_step(images, labels, last=micro == split.accumulation - 1)
                    loss_sum += loss
                    correct += (logits.argmax(1) == labels).sum()
                    seen += labels.numel()
                    first_bad = torch.where(
                        (first_bad < 0) & ~torch.isfinite(loss),
                        torch.full_like(first_bad, self.step + 1),
                        first_bad,
                    )
                engine.optimizer_step(self.schedule.lr(self.step))
                if cuda:
                    end = torch.cuda.Event(enable_timing=True)
                    end.record()
                    step_times.append((start, end))
                else:
                    step_times.append(time.perf_counter() - start)
                waits.append(wait)
                self.step += 1
                self.step_in_epoch += 1
                epoch_end = self.step_in_epoch >= self.steps_per_epoch
                at_max = self.step >= self.total_steps
                every = cfg.checkpoint.every_steps
                save_due = bool(every) and self.step % every == 0
                log_due = self.step % cfg.runtime.log_every == 0 or epoch_end or at_max
                stop_code = 0
                time_due = False
                if self.step % cfg.runtime.check_every == 0 or save_due or log_due:
                    minutes = cfg.checkpoint.every_minutes
                    mine_due = bool(minutes) and time.time() - self.last_save >= 60 * minutes
                    agreed = self.all_max(
                        [float(self.stop.value), float(mine_due), float(first_bad)]
                    )  # host sync
                    stop_code, time_due, bad = int(agreed[0]), bool(agreed[1]), int(agreed[2])
                    if bad >= 0:
                        raise NonFiniteLoss(
                            f"loss became NaN/inf at step {bad} (epoch {self.epoch}); stopped without saving, the "
                            f"last good checkpoint is {getattr(ckpt.latest_committed(self.run_dir), 'name', 'none')}. "
                            "Lower optim.lr, use runtime.precision=fp32/bf16, or check the data"
                        )
                if log_due:
                    self.report(loss_sum, correct, seen, step_times, waits)
                    loss_sum.zero_(), correct.zero_()
                    seen, step_times, waits = 0, [], []
                if epoch_end:
                    self.validate()
                    self.epoch += 1
                    self.step_in_epoch = 0
                finished = at_max or self.epoch >= cfg.schedule.max_epochs or self.schedule.state.stop
                if finished:
                    break
                if stop_code:
                    return self.preempted(stop_code)
                if save_due or time_due:
                    self.save()
                if epoch_end:
                    break
        self.save(final=True)
        self.log.info(
            f"training finished at epoch {self.epoch} step {self.step}; final checkpoint {self.run_dir / ckpt.FINAL}"
        )
        return exit_codes.OK

    def preempted(self, code: int) -> int:
        self.save()
        if code == signals.TERMINATE:
            self.log.info(f"SIGTERM: saved step {self.step}; exiting {exit_codes.STOPPED} (no requeue)")
            return exit_codes.STOPPED
        restarts = max(self.launch.restart_count, self.requeues)
        if restarts >= self.cfg.runtime.max_restarts:
            self.log.info(
                f"SIGUSR1: saved step {self.step}, but the run was already requeued {restarts} times "
                f"(runtime.max_restarts={self.cfg.runtime.max_restarts}): exiting {exit_codes.STOPPED}, no requeue"
            )
            return exit_codes.STOPPED
        self.requeues += 1
        if self.rank == 0:
            self.bump_requeues()
        self.barrier()  # every rank leaves together, after the counter is on disk
        self.log.info(f"SIGUSR1: saved step {self.step}; exiting {exit_codes.REQUEUE} (please requeue)")
        return exit_codes.REQUEUE

    def bump_requeues(self) -> None:
        """Record the requeue in the checkpoint just written (the counter survives into the next job)."""
        d = ckpt.step_dir(self.run_dir, self.step)
        part = ckpt.load_rank_part(d, 0)
        part["trainer"]["requeues"] = self.requeues
        ckpt.atomic_torch_save(part, ckpt.rank_file(d, 0))

    def report(
        self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, step_times: list, waits: list[float]
    ) -> None:
        n = max(1, len(step_times))
        if step_times and not isinstance(step_times[0], float):
            step_times[-1][1].synchronize()  # host sync (log step)
            step_times = [s.elapsed_time(e) / 1000.0 for s, e in step_times]
        micro_steps = n * self.split.accumulation
        self.sink.progress(
            TrainProgress(
                step=self.step,
                epoch=self.epoch,
                images_total=self.step * self.split.global_batch,
                loss=loss_sum.item() / micro_steps,  # host sync (log step)
                lr=self.schedule.lr(self.step - 1),
                top1=correct.item() / max(1, seen),  # host sync (log step)
                step_seconds=list(step_times),
                data_wait_seconds=list(waits),
            )
        )

    def close(self, code: int = exit_codes.OK) -> None:
        self.sink.close()
        if code in (exit_codes.REQUEUE, exit_codes.STOPPED):
            self.stop.ignore_until_exit()  # a late SIGTERM from srun must not turn 75/4 into 143
        else:
            self.stop.restore()
        if self.rank == 0:
            self.lock.release()


def run_training(cfg: TrainConfig, run_dir: Path, launch: LaunchEnv) -> int:
    """Train `cfg` into `run_dir` as rank `launch.rank`; returns an exit code (dist_vgg.train.exit_codes)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir, launch)
    code = exit_codes.ERROR
    try:
        trainer.setup()
        code = trainer.train()
    except NonFiniteLoss as e:
        trainer.log.error(str(e))
        code = exit_codes.NONFINITE_LOSS
    except (
        ConfigError,
        LockError,
        ckpt.CheckpointError,
        WeightsFormatError,
        ShardFormatError,
        TransferError,
    ) as e:
        trainer.log.error(f"error: {e}")
        code = exit_codes.ERROR
    except RuntimeError as e:
        if not is_collective_failure(e):
            raise
        dump = dump_flight_recorder(launch.rank, flight_recorder_env(run_dir))
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        trainer.log.error(
            f"error: a collective failed on rank {launch.rank} ({first}). A peer rank died or hung, or the "
            f"network failed; ranks give up after runtime.pg_timeout_s={cfg.runtime.pg_timeout_s:g} s (raise it "
            "for slow file systems, lower it to fail faster). The run resumes from its last committed checkpoint "
            "when restarted. Flight recorder: "
            + (
                f"{dump} (read with: torchfrtrace {dump.parent} -p {dump.name[: -len(str(launch.rank))]})"
                if dump
                else "none written (set TORCH_FR_BUFFER_SIZE>0 before the start, as slurm/common/launch_train.sh "
                "does)"
            )
        )
        code = exit_codes.ERROR
    finally:
        trainer.close(code)
        del trainer  # release the DDP/DeepSpeed engine (and its process group) before the teardown
        # Ranks that finished, stopped or were preempted all get here; after an error a peer may be gone.
        destroy_process_group(together=code in (exit_codes.OK, exit_codes.REQUEUE, exit_codes.STOPPED))
    return code


COLLECTIVE_MARKERS = ("gloo", "nccl", "processgroup", "c10d")
"""Words in the RuntimeErrors that gloo and NCCL raise when a peer dies or a collective times out (gloo's name
its source file, e.g. "…/gloo/transport/tcp/pair.cc:537] Read error …: Connection reset by peer")."""


def is_collective_failure(e: BaseException) -> bool:
    """A process-group failure (a dead or hung peer, a timeout), as opposed to a bug in our code."""
    if isinstance(e, dist.DistError):
        return True
    text = str(e).lower()
    return any(marker in text for marker in COLLECTIVE_MARKERS)


def flight_recorder_env(run_dir: Path) -> dict[str, str]:
    """The environment for `dump_flight_recorder`: the SLURM scripts point TORCH_FR_DUMP_TEMP_FILE into
    RUN/flight_recorder/; other launches that record (TORCH_FR_BUFFER_SIZE > 0) dump there too."""
    env = dict(os.environ)
    if not env.get("TORCH_FR_DUMP_TEMP_FILE") and env.get("TORCH_FR_BUFFER_SIZE", "0") not in ("", "0"):
        env["TORCH_FR_DUMP_TEMP_FILE"] = str(run_dir / "flight_recorder" / "rank_")
    return env


def saved_config(run_dir: Path) -> TrainConfig | None:
    path = run_dir / RESOLVED
    return from_dict(TrainConfig, load_file(path)) if path.is_file() else None
