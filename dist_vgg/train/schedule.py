"""The learning-rate schedule: the paper's plateau rule (÷10 when validation top-1 stops improving, three
times, then stop) or a fixed epoch budget, plus the optional linear warm-up of the large-batch recipes.
Its whole state is a few numbers, saved in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dist_vgg.train.config import OptimConfig, ScheduleConfig


@dataclass
class ScheduleState:
    decays: int = 0
    """Drops so far (the lr is peak × decay_factor ** decays)."""
    best_top1: float = -1.0
    """Best validation top-1 so far (plateau rule)."""
    bad_epochs: int = 0
    """Epochs since the best one (plateau rule)."""
    stop: bool = False
    """The plateau rule asked to stop (after max_decays drops)."""


class LRSchedule:
    def __init__(self, optim: OptimConfig, schedule: ScheduleConfig, steps_per_epoch: int) -> None:
        self.optim, self.cfg, self.steps_per_epoch = optim, schedule, steps_per_epoch
        self.state = ScheduleState()

    def lr(self, step: int) -> float:
        """lr for optimiser step `step` (0-based)."""
        factor = self.cfg.decay_factor**self.state.decays
        warm = self.optim.warmup_epochs * self.steps_per_epoch
        if warm and step < warm:
            factor *= (step + 1) / warm
        return self.optim.peak_lr * factor

    def end_of_epoch(self, epoch: int, top1: float | None) -> str | None:
        """Update the state after epoch `epoch` (0-based) with its validation top-1; returns a log message
        when something changed."""
        s, cfg = self.state, self.cfg
        if cfg.policy == "fixed":
            if epoch + 1 in cfg.milestones:
                s.decays += 1
                return f"lr ÷ {1 / cfg.decay_factor:g} at milestone epoch {epoch + 1}"
            return None
        if top1 is None:
            return None
        if top1 > s.best_top1 + cfg.threshold:
            s.best_top1, s.bad_epochs = top1, 0
            return None
        s.bad_epochs += 1
        if s.bad_epochs < cfg.patience:
            return None
        s.bad_epochs = 0
        if s.decays >= cfg.max_decays:
            s.stop = True
            return f"validation top-1 plateaued after {s.decays} lr drops: stopping (the paper's rule)"
        s.decays += 1
        return (
            f"validation top-1 did not improve on {s.best_top1:.4f} for {cfg.patience} epochs: "
            f"lr ÷ {1 / cfg.decay_factor:g} (drop {s.decays} of {cfg.max_decays})"
        )

    def state_dict(self) -> dict:
        return asdict(self.state)

    def load_state_dict(self, d: dict) -> None:
        self.state = ScheduleState(**d)
