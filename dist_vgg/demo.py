"""`make demo`: the whole system end to end on a CPU, in minutes, with no download.

raw ImageNet-layout images (synthetic) → verified shards → A trained by 2 DDP processes with scale jittering →
D initialised from A and D from random init, same budget → the paper's evaluation (centre, dense, multi-crop,
dense+multicrop over several Q, the D+A ensemble) → a table shaped like the paper's Tables 3–5, PNGs of the
training curves, and a summary of which of the paper's claims held on this data.

Every stage runs the real entry points (`python -m data_prep`, `torchrun … dist-vgg train`, `dist-vgg eval`,
`dist-vgg plot`) as subprocesses. Re-running resumes: finished stages are skipped, an interrupted training
resumes from its last checkpoint, and results are recomputed from the checkpoints. A different set of demo
options wipes the output folder first, so results of two different demos are never mixed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DEMO_VERSION = 1
"""Bump when the flow changes: an output folder of another version is started afresh."""


@dataclass(frozen=True)
class DemoOptions:
    """The demo's scale: small enough for 2 CPU cores in minutes, big enough to learn."""

    classes: int = 6
    train_per_class: int = 400
    val_per_class: int = 25
    seed: int = 0
    epochs_a: int = 15
    """Training budget of A, in epochs."""
    epochs_d: int = 13
    """Training budget of each D (from A, and from random init): the same for both."""
    width: float = 0.25
    crop: int = 32
    scale_min: int = 37
    """The paper's S range [256, 512] scaled by crop/224 (37–73 at crop 32)."""
    scale_max: int = 73
    lr: float = 0.01
    lr_drop_at: float = 0.7
    """Fraction of each run's epochs after which the lr drops 10×: a fixed-budget stand-in for the paper's
    ÷10 on a validation plateau. Without it the last epoch's weights (what the evaluation sees) swing by 10
    points of top-1 from one epoch to the next at this lr."""
    init: str = "glorot"
    """Init of every fresh layer (A, and D's layers not copied from A). The paper's N(0, 0.01) (width-corrected
    at this width) leaves these tiny nets at chance for most of a CPU demo's budget (the paper trained A for 74
    epochs), so the demo uses Glorot's init, the variant of the paper's post-submission note."""
    processes: int = 2

    @property
    def test_scales(self) -> list[int]:
        """The paper's Q ∈ {256, 384, 512} scaled by crop/224."""
        return [round(q * self.crop / 224) for q in (256, 384, 512)]

    def signature(self) -> str:
        blob = json.dumps({"version": DEMO_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class DemoError(RuntimeError):
    """A stage failed; the message says which and where its log is."""


class Demo:
    def __init__(self, out: Path, opts: DemoOptions) -> None:
        self.out = out
        self.opts = opts
        self.python = sys.executable
        self.t0 = time.monotonic()
        self.state_path = out / "demo-state.json"
        self.state: dict = {}

    # ---- bookkeeping -------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(f"[demo {time.monotonic() - self.t0:6.1f}s] {text}", flush=True)

    def prepare_folder(self, fresh: bool) -> None:
        sig = self.opts.signature()
        if self.state_path.exists() and not fresh:
            state = json.loads(self.state_path.read_text())
            if state.get("signature") == sig:
                self.state = state
                done = ", ".join(state.get("done", [])) or "nothing"
                self.say(f"resuming the demo in {self.out} (already done: {done})")
                return
            self.say(f"{self.out} holds a demo with other options: starting afresh")
        if self.out.exists() and (fresh or self.state_path.exists()):
            shutil.rmtree(self.out)
        elif self.out.exists() and any(self.out.iterdir()):
            raise DemoError(f"{self.out} exists and is not a demo folder; remove it or pass --out elsewhere")
        self.out.mkdir(parents=True, exist_ok=True)
        self.state = {"signature": sig, "options": asdict(self.opts), "done": []}
        self._save_state()

    def _save_state(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1) + "\n")
        tmp.replace(self.state_path)

    def done(self, stage: str) -> bool:
        return stage in self.state["done"]

    def mark(self, stage: str) -> None:
        self.state["done"].append(stage)
        self._save_state()

    def run(self, stage: str, cmd: list[str], highlight: tuple[str, ...] = ()) -> None:
        """Run one real entry point, streaming its output (progress stays visible) into a log file too."""
        log_path = self.out / "logs" / f"{stage}.log"
        log_path.parent.mkdir(exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.say(f"$ {' '.join(cmd)}")
        with open(log_path, "a") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log.write(line)
                    if any(h in line for h in highlight):
                        print(f"  >>> {line.rstrip()}", flush=True)
                    else:
                        print(f"    {line.rstrip()}", flush=True)
            except KeyboardInterrupt:
                # Ctrl-C reached the stage too (same process group): let it save and stop before the demo
                # exits, so that a rerun never finds a half-stopped stage still writing into its folder.
                _stop(proc)
                raise
            rc = proc.wait()
        if rc != 0:
            raise DemoError(f"stage '{stage}' failed with exit status {rc}; its log is {log_path}")

    # ---- the flow ----------------------------------------------------------------------------------
    def data(self) -> Path:
        o, raw, shards = self.opts, self.out / "raw", self.out / "shards"
        if not self.done("raw"):
            self.say(
                "1/6 synthetic ImageNet in its raw layout (train/<wnid>/*.JPEG, flat val/ + devkit labels)"
            )
            self.run(
                "raw",
                [
                    self.python,
                    "-m",
                    "data_prep",
                    "synthetic",
                    str(raw),
                    "--classes",
                    str(o.classes),
                    "--train-per-class",
                    str(o.train_per_class),
                    "--val-per-class",
                    str(o.val_per_class),
                    "--size",
                    "small",
                    "--seed",
                    str(o.seed),
                    "--workers",
                    "2",
                ],
            )
            self.mark("raw")
        if not self.done("shards"):
            self.say("2/6 shards: data_prep imagenet (2 workers) → verify → stats")
            self.run(
                "shards",
                [
                    self.python,
                    "-m",
                    "data_prep",
                    "imagenet",
                    str(raw),
                    "--out",
                    str(shards),
                    "--workers",
                    "2",
                    "--shard-samples",
                    "512",
                    "--overwrite",
                ],
            )
            self.run(
                "verify",
                [self.python, "-m", "data_prep", "verify", str(shards), "--decode", "--workers", "2"],
            )
            self.run("stats", [self.python, "-m", "data_prep", "stats", str(shards)])
            self.mark("shards")
        return shards

    def train(
        self,
        stage: str,
        recipe: str,
        run_dir: Path,
        shards: Path,
        epochs: int,
        init_from: Path | None = None,
        extra: dict | None = None,
    ) -> None:
        if self.done(stage):
            self.say(f"{stage}: already trained ({run_dir})")
            return
        o = self.opts
        cmd = [
            self.python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={o.processes}",
            "-m",
            "dist_vgg.cli",
            "train",
            "--recipe",
            recipe,
            "--data",
            str(shards),
            "--run-dir",
            str(run_dir),
        ]
        if init_from is not None:
            cmd += ["--init-from", str(init_from)]
        sets = {
            "model.width": o.width,
            "augment.crop": o.crop,
            "augment.scale_min": o.scale_min,
            "augment.scale_max": o.scale_max,
            "optim.lr": o.lr,
            "optim.global_batch": 32,
            "schedule.policy": '"fixed"',
            "schedule.max_epochs": epochs,
            "schedule.milestones": f"[{max(1, round(o.lr_drop_at * epochs))}]",
            "runtime.log_every": 25,
            "checkpoint.every_steps": 50,
            "metrics.prometheus": '"on"',
            "metrics.bind": '"127.0.0.1"',
            "metrics.port": 0,
            "data.workers": 1,
            "runtime.seed": o.seed,
            "model.init": f'"{o.init}"',
            **(extra or {}),
        }
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        self.run(stage, cmd, highlight=("metrics at", "validation", "init-from", "copied", "finished"))
        self.mark(stage)

    def evaluate(self, name: str, runs: list[Path], shards: Path, mode: str, scales: list[int]) -> list[dict]:
        out = self.out / "eval" / f"{name}.json"
        out.parent.mkdir(exist_ok=True)
        # Distributed evaluation, as on a cluster: every validation image exactly once across the ranks.
        cmd = [
            self.python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={self.opts.processes}",
            "-m",
            "dist_vgg.cli",
            "eval",
            *map(str, runs),
            "--data",
            str(shards),
            "--mode",
            mode,
            "--scales",
            ",".join(map(str, scales)),
            "--device",
            "cpu",
            "--json",
            str(out),
            "--batch-size",
            "32",
        ]
        self.run(f"eval-{name}", cmd)
        return json.loads(out.read_text())["results"]

    def main(self, fresh: bool) -> int:
        o = self.opts
        self.prepare_folder(fresh)
        self.say(f"output in {self.out}; options {asdict(o)}")
        shards = self.data()
        runs = self.out / "runs"
        a, d_from_a, d_random = runs / "A", runs / "D-from-A", runs / "D-random"
        self.say(
            f"3/6 train A: {o.processes} processes (DDP, gloo), scale jittering S ∈ [{o.scale_min}, {o.scale_max}]"
        )
        self.train("train-A", "tiny-A", a, shards, o.epochs_a)
        self.say("4/6 train D initialised from A (the paper's mapping), and D from random init, same budget")
        self.train("train-D-from-A", "tiny-D", d_from_a, shards, o.epochs_d, init_from=a)
        self.train("train-D-random", "tiny-D-random", d_random, shards, o.epochs_d)

        self.say(
            f"5/6 the paper's evaluation at Q ∈ {o.test_scales} (= 256, 384, 512 scaled by {o.crop}/224)"
        )
        q_mid = o.test_scales[1]
        results: dict[str, list[dict]] = {}
        for label, run in (("A", a), ("D-from-A", d_from_a), ("D-random", d_random)):
            results[f"{label}-centre"] = self.evaluate(f"{label}-centre", [run], shards, "centre", [q_mid])
        # One pass over D-from-A and A gives each member's dense / multi-crop / fusion rows and the ensemble's.
        both = self.evaluate("D-from-A+A", [d_from_a, a], shards, "dense+multicrop", o.test_scales)
        results["D-from-A-full"] = [r for r in both if r["configuration"] == "D"]
        results["A-full"] = [r for r in both if r["configuration"] == "A"]
        results["ensemble"] = [r for r in both if r["configuration"].startswith("ensemble")]
        results["D-random-full"] = self.evaluate(
            "D-random", [d_random], shards, "dense+multicrop", o.test_scales
        )

        self.say("6/6 training curves")
        for run in (a, d_from_a, d_random):
            self.run(
                f"plot-{run.name}",
                [
                    self.python,
                    "-m",
                    "dist_vgg.cli",
                    "plot",
                    str(run),
                    "--out",
                    str(self.out / f"curves-{run.name}.png"),
                ],
            )
        curves = {
            name: validation_curve(run)
            for name, run in (("A", a), ("D from A", d_from_a), ("D random", d_random))
        }
        compare_png = self.out / "curves-D-from-A-vs-random.png"
        plot_comparison(curves, compare_png)

        losses = {
            name: training_losses(run) for name, run in (("D from A", d_from_a), ("D random", d_random))
        }
        table = paper_table(results)
        claims = check_claims(results, curves, o.classes, losses)
        report = self.out / "summary.txt"
        text = "\n".join([table, "", *claims])
        report.write_text(text + "\n")
        print("\n" + text, flush=True)
        self.say(
            f"done in {time.monotonic() - self.t0:.0f}s: {report}, {compare_png}, curves-*.png, eval/*.json"
        )
        return 0


def _stop(proc: subprocess.Popen, grace_s: float = 60.0) -> None:
    """Wait for an interrupted stage to exit (it got the same SIGINT); SIGINT it again if it is still running
    (a stage started outside our process group), and kill it after `grace_s`."""
    try:
        proc.wait(timeout=5)
        return
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def validation_curve(run: Path) -> list[tuple[int, float]]:
    """(step, validation top-1) from a run's metrics.jsonl."""
    points = []
    path = run / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            e = json.loads(line)
            if e.get("event") == "validation":
                points.append((int(e["step"]), float(e["top1"])))
    return points


def training_losses(run: Path) -> list[tuple[int, float]]:
    """(step, training loss) at every logged step, from a run's metrics.jsonl."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    events = (json.loads(line) for line in path.read_text().splitlines())
    return [(int(e["step"]), float(e["loss"])) for e in events if e.get("event") == "progress"]


def plot_comparison(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in curves.items():
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=name)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("Init-from-A vs random init (same budget)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pick(rows: list[dict], mode: str, scales: str | None = None) -> dict:
    for r in rows:
        if r["mode"] == mode and (scales is None or r["test_scales"] == scales):
            return r
    raise DemoError(f"no '{mode}' result at Q={scales} in the evaluation output")


def paper_table(results: dict[str, list[dict]]) -> str:
    """Rows shaped like the paper's Tables 3–5: per net the centre crop and the dense single-scale rows
    (Table 3), then multi-scale dense, multi-crop and their fusion (Tables 4–5), then the ensemble."""
    head = (
        f"{'net':<18}{'train S':<14}{'test Q':<12}{'mode':<18}{'top-1 err':>10}{'top-5 err':>10}{'images':>8}"
    )
    lines = [
        "Results on the synthetic validation set (error %, as in the paper's Tables 3-5)",
        head,
        "-" * len(head),
    ]

    def row(name: str, r: dict) -> str:
        return (
            f"{name:<18}{r['train_scale']:<14}{r['test_scales']:<12}{r['mode']:<18}"
            f"{r['top1_err']:>10.2f}{r['top5_err']:>10.2f}{r['images']:>8}"
        )

    for net in ("A", "D-from-A", "D-random"):
        lines += [row(net, r) for r in results[f"{net}-centre"]]
        full = results[f"{net}-full"]
        lines += [row(net, r) for r in full if r["mode"] == "dense" and "," not in r["test_scales"]]
        lines += [row(net, r) for r in full if "," in r["test_scales"]]
    lines += [row("D-from-A + A", r) for r in results["ensemble"]]
    return "\n".join(lines)


def check_claims(
    results: dict[str, list[dict]],
    curves: dict,
    classes: int,
    losses: dict[str, list[tuple[int, float]]] | None = None,
) -> list[str]:
    """The paper's qualitative claims, each stated with the figures and whether it held on this data.

    "D-from-A ahead of D-random at equal steps" is judged on the training loss averaged over the logged steps
    of the common budget (thousands of images), and reported beside the final validation top-1 (a few hundred
    images, which swings by several points from one epoch to the next)."""
    chance = 100.0 * (1 - 1 / classes)
    out = [
        "Claims checked on this data (fresh layers use Glorot's init, the paper's post-submission variant: with",
        "N(0, 0.01) these tiny nets stay near chance for most of a CPU budget):",
    ]

    def verdict(ok: bool) -> str:
        return "HELD" if ok else "DID NOT HOLD"

    for net in ("A", "D-from-A", "D-random"):
        err = _pick(results[f"{net}-full"], "dense+multicrop")["top1_err"]
        ok = err < chance - 20
        out.append(
            f"- {net}: top-1 error {err:.1f}% vs chance {chance:.1f}% (far above chance: ≥ 20 points) — {verdict(ok)}"
        )
    la, lr = (losses or {}).get("D from A", []), (losses or {}).get("D random", [])
    common = sorted({step for step, _ in la} & {step for step, _ in lr})
    if common:
        mean_a = sum(v for step, v in la if step in common) / len(common)
        mean_r = sum(v for step, v in lr if step in common) / len(common)
        out.append(
            f"- D initialised from A ahead of D from random init at equal steps: training loss averaged over the "
            f"same {len(common)} logged steps (to step {common[-1]}) {mean_a:.3f} vs {mean_r:.3f} — "
            f"{verdict(mean_a < mean_r)}"
        )
    fa, fr = curves.get("D from A", []), curves.get("D random", [])
    if fa and fr:
        n = min(len(fa), len(fr))
        ahead = sum(a[1] > r[1] for a, r in zip(fa[:n], fr[:n]))
        final_a, final_r = fa[n - 1][1], fr[n - 1][1]
        ok = final_a > final_r
        out.append(
            f"- D initialised from A vs D from random init, same {fa[n - 1][0]} steps: final val top-1 "
            f"{100 * final_a:.1f}% vs {100 * final_r:.1f}% (ahead at {ahead} of {n} validations) — {verdict(ok)}"
        )
    for net in ("A", "D-from-A", "D-random"):
        rows = results[f"{net}-full"]
        multi_scale = rows[-1]["test_scales"]  # the dense+multicrop row is over all Q
        dense, multi, fused = (
            _pick(rows, m, multi_scale)["top1_err"] for m in ("dense", "multicrop", "dense+multicrop")
        )
        close = abs(dense - multi) <= 5.0
        out.append(
            f"- {net}: dense {dense:.1f}% ≈ multi-crop {multi:.1f}% (within 5 points) — {verdict(close)}"
        )
        out.append(
            f"- {net}: dense+multicrop {fused:.1f}% ≤ the better of the two ({min(dense, multi):.1f}%) — "
            f"{verdict(fused <= min(dense, multi) + 1e-9)}"
        )
    ens = _pick(results["ensemble"], "dense+multicrop")
    best = min(_pick(results[f"{n}-full"], "dense+multicrop")["top1_err"] for n in ("A", "D-from-A"))
    out.append(
        f"- ensemble D+A {ens['top1_err']:.1f}% ≤ its best member {best:.1f}% — {verdict(ens['top1_err'] <= best + 1e-9)}"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dist_vgg.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    p.add_argument("--fresh", action="store_true", help="start afresh instead of resuming")
    p.add_argument("--epochs-a", type=int, default=DemoOptions.epochs_a, help="training budget of A (epochs)")
    p.add_argument(
        "--epochs-d", type=int, default=DemoOptions.epochs_d, help="training budget of each D (epochs)"
    )
    p.add_argument("--classes", type=int, default=DemoOptions.classes)
    p.add_argument("--train-per-class", type=int, default=DemoOptions.train_per_class)
    p.add_argument("--val-per-class", type=int, default=DemoOptions.val_per_class)
    p.add_argument(
        "--slurm", action="store_true", help="run the flow through sbatch on the local SLURM cluster"
    )
    args = p.parse_args(argv)
    opts = DemoOptions(
        classes=args.classes,
        train_per_class=args.train_per_class,
        val_per_class=args.val_per_class,
        epochs_a=args.epochs_a,
        epochs_d=args.epochs_d,
    )
    try:
        return Demo(args.out.resolve(), opts).main(args.fresh)
    except DemoError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted; run `make demo` again to resume where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
