"""Generate `dist-vgg.json`, the Grafana dashboard for dist-vgg training jobs, with Grafana's own SDK
(grafana-foundation-sdk), so the JSON is valid by construction and reviewed as Python.

    .venv/bin/python cluster/grafana/build_dashboard.py          # rewrite dist-vgg.json
    .venv/bin/python cluster/grafana/build_dashboard.py --check  # exit 1 if the checked-in JSON is stale

Every query selects `job=~"$job"` (SLURM job ids) and uses only `dist_vgg_*` series and `up`, so the
dashboard needs no recording rules; tests run each query against a live Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableOption,
    VariableRefresh,
)

OUT = Path(__file__).with_name("dist-vgg.json")
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'job=~"$job"'
RATE = "$__rate_interval"


def q(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)


def series(title: str, unit: str, queries: list[prometheus.Dataquery], desc: str, w: int = 12):
    p = timeseries.Panel().title(title).description(desc).unit(unit).datasource(DS).height(8).span(w)
    for query in queries:
        p = p.with_target(query)
    return p


def single(title: str, unit: str, query: prometheus.Dataquery, desc: str):
    return (
        stat.Panel()
        .title(title)
        .description(desc)
        .unit(unit)
        .datasource(DS)
        .height(4)
        .span(6)
        .with_target(query)
    )


def build() -> dict:
    by_rank = "{{job}} rank {{rank}}"
    d = (
        db.Dashboard("dist-vgg training")
        .uid("dist-vgg")
        .description("VGG training jobs: throughput, loss, accuracy, data pipeline, GPUs, checkpoints")
        .tags(["dist-vgg", "training"])
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            db.QueryVariable("job")
            .label("SLURM job")
            .datasource(DS)
            .query("label_values(dist_vgg_steps_total, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".+")
            .current(VariableOption(selected=True, text="All", value="$__all"))
        )
        .with_row(db.Row("Health"))
        .with_panel(single(
            "Ranks up", "none", q(f'sum by (job) (up{{{SEL}, rank!=""}})', "{{job}}"),
            "Exporters answering scrapes; fewer than the job's ranks means a dead process or node.",
        ))
        .with_panel(single(
            "Restarts", "none", q(f"max by (job) (dist_vgg_restarts{{{SEL}}})", "{{job}}"),
            "How often SLURM requeued the job (SLURM_RESTART_COUNT).",
        ))
        .with_panel(single(
            "Checkpoint age", "s",
            q(f"time() - max by (job) (dist_vgg_last_checkpoint_timestamp_seconds{{{SEL}}})", "{{job}}"),
            "Seconds since the last successful checkpoint: the work a failure now would cost.",
        ))
        .with_panel(single(
            "Checkpoint failures", "none",
            q(f"sum by (job) (dist_vgg_checkpoint_failures_total{{{SEL}}})", "{{job}}"),
            "Failed checkpoint saves since the job (re)started.",
        ))
        .with_row(db.Row("Throughput"))
        .with_panel(series(
            "Throughput, total", "none",
            [q(f"sum by (job) (rate(dist_vgg_images_total{{{SEL}}}[{RATE}]))", "{{job}} images/s")],
            "Training images per second, all ranks of the job together.",
        ))
        .with_panel(series(
            "Throughput per rank", "none",
            [q(f"sum by (job, rank) (rate(dist_vgg_images_total{{{SEL}}}[{RATE}]))", by_rank)],
            "Images per second of each rank; in synchronous data parallelism one slow rank slows all.",
        ))
        .with_panel(series(
            "Step time (p50, p95)", "s",
            [
                q(f"histogram_quantile(0.5, sum by (job, rank, le) "
                  f"(rate(dist_vgg_step_duration_seconds_bucket{{{SEL}}}[{RATE}])))", by_rank + " p50", "A"),
                q(f"histogram_quantile(0.95, sum by (job, rank, le) "
                  f"(rate(dist_vgg_step_duration_seconds_bucket{{{SEL}}}[{RATE}])))", by_rank + " p95", "B"),
            ],
            "Wall time of one optimiser step, including the wait for its batch.",
        ))
        .with_panel(series(
            "Data-wait share", "percentunit",
            [q(f"rate(dist_vgg_data_wait_seconds_sum{{{SEL}}}[{RATE}]) "
               f"/ rate(dist_vgg_step_duration_seconds_sum{{{SEL}}}[{RATE}])", by_rank)],
            "Share of each step spent waiting for data; above ~25 % the input pipeline is the bottleneck.",
        ))
        .with_row(db.Row("Optimisation"))
        .with_panel(series(
            "Loss", "none", [q(f"dist_vgg_loss{{{SEL}}}", by_rank)],
            "Training loss at the latest log step of each rank.", w=8,
        ))
        .with_panel(series(
            "Accuracy", "percentunit",
            [
                q(f"avg by (job) (dist_vgg_train_top1_ratio{{{SEL}}})", "{{job}} train top-1", "A"),
                q(f"max by (job) (dist_vgg_val_top1_ratio{{{SEL}}})", "{{job}} val top-1", "B"),
                q(f"max by (job) (dist_vgg_val_top5_ratio{{{SEL}}})", "{{job}} val top-5", "C"),
            ],
            "Top-1 on the training batches; top-1 and top-5 on the validation set after each validation.", w=8,
        ))
        .with_panel(series(
            "Learning rate", "none", [q(f"max by (job) (dist_vgg_learning_rate{{{SEL}}})", "{{job}}")],
            "The schedule's learning rate (the paper divides it by 10 when validation accuracy stalls).", w=8,
        ))
        .with_row(db.Row("GPUs"))
        .with_panel(series(
            "GPU utilisation", "percentunit", [q(f"dist_vgg_gpu_utilization_ratio{{{SEL}}}", by_rank)],
            "Share of time a kernel ran on each rank's GPU (NVML).",
        ))
        .with_panel(series(
            "GPU memory used", "bytes", [q(f"dist_vgg_gpu_memory_used_bytes{{{SEL}}}", by_rank)],
            "Device memory in use on each rank's GPU (NVML).",
        ))
        .with_row(db.Row("Data preparation"))
        .with_panel(series(
            "data_prep throughput", "none",
            [q(f"sum by (job) (rate(dist_vgg_prep_images_total{{{SEL}}}[{RATE}]))", "{{job}} images/s")],
            "Images written into shards per second by `python -m data_prep imagenet --metrics-port`.", w=8,
        ))
        .with_panel(series(
            "data_prep shards done", "percentunit",
            [q(f"sum by (job) (dist_vgg_prep_shards_total{{{SEL}}}) "
               f"/ sum by (job) (dist_vgg_prep_planned_shards{{{SEL}}})", "{{job}}")],
            "Completed (written or kept) shards out of those planned, all ranks.", w=8,
        ))
        .with_panel(series(
            "data_prep quarantined and re-encoded", "none",
            [
                q(f"sum by (job) (dist_vgg_prep_quarantined_images_total{{{SEL}}})", "{{job}} quarantined", "A"),
                q(f"sum by (job) (dist_vgg_prep_reencoded_images_total{{{SEL}}})", "{{job}} re-encoded", "B"),
            ],
            "Input files left out as unusable, and images stored re-encoded (CMYK, PNG, progressive, oversized).",
            w=8,
        ))
    )  # fmt: skip
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--check", action="store_true", help="compare with the checked-in JSON instead of writing"
    )
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run .venv/bin/python {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
