"""`python -m data_prep imagenet SRC --out OUT`: the whole conversion, in two passes over the images.

1. check: every input file gets a verdict (copy / re-encode / quarantine), spread over ranks × workers and
   cached under OUT/.prep/check/ so a rerun after a crash does not decode everything again;
2. plan (the same on every rank, no communication): each split sorted by canonical name, shuffled with the
   seed, quarantined files dropped, cut into shards of equal sample count (the last may be smaller);
3. write: shard i is written by rank i mod K, a worker of that rank; a shard whose completion record and
   checksum match the plan is kept; rank 0 writes classes.txt and the manifest.

Checking before planning is what makes every shard but the last the same size even when files are
quarantined, and makes the output independent of the number of workers and ranks.

`--fast` does it in one pass when it can: its check needs only an image's header and last bytes, so it plans
as if no file were unusable and checks each image in the shard writer's buffer, as it copies it (re-encoding
there when the verdict says so). Reading every file once instead of twice matters most on a network file
system, where opening a file costs more than reading it. Should it meet an unusable file, the plan was wrong
from there on: it then runs the two passes, which keep every shard written before that file (same plan,
same checksum) and rewrite the rest. Either way the output is the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from data_prep import images, sources
from data_prep.errors import PrepError
from data_prep.index import write_index
from data_prep.parallel import Team
from data_prep.progress import PrepMetrics, Progress, human_bytes
from dist_vgg.data import format as fmt

CHECK_CHUNK = 256
"""Input files per check task (and per cached verdict file)."""
DEFAULT_SHARD_BYTES = 128_000_000
STATE = ".prep"
"""OUT/.prep/: the options of an unfinished run, cached verdicts, shard completion records, the run log."""
CRASH_ENV = "DATA_PREP_CRASH_AFTER_SHARDS"
"""Test hook: exit abruptly (as a killed job would) after this many shards were completed on a rank."""


@dataclass(frozen=True)
class PrepOptions:
    """Everything that decides the output (recorded in the manifest; worker and rank counts are not)."""

    seed: int = 0
    """Seed of the global shuffle."""
    shard_samples: int | None = None
    """Samples per shard; when None, derived from `shard_bytes`."""
    shard_bytes: int | None = None
    """Target shard size: samples per shard = target / mean input image size of the split."""
    fast: bool = False
    """Check headers and markers only instead of decoding every image."""
    reencode_progressive: bool = False
    """Re-encode progressive JPEGs as baseline."""
    resize_shorter: int | None = None
    """Re-encode images whose shorter side exceeds this, down to it."""

    def __post_init__(self) -> None:
        if self.shard_samples is not None and self.shard_bytes is not None:
            raise PrepError("give --shard-samples or --shard-bytes, not both")
        if self.shard_samples is not None and self.shard_samples < 1:
            raise PrepError(f"--shard-samples {self.shard_samples}: need at least 1")
        if self.shard_bytes is not None and self.shard_bytes < 1:
            raise PrepError(f"--shard-bytes {self.shard_bytes}: need at least 1")
        if self.resize_shorter is not None and self.resize_shorter < 1:
            raise PrepError(f"--resize-shorter {self.resize_shorter}: need a positive size")

    @property
    def check(self) -> images.CheckOptions:
        return images.CheckOptions(self.fast, self.reencode_progressive, self.resize_shorter)

    def manifest_options(self) -> dict:
        d = {
            "seed": self.seed,
            "check": "fast" if self.fast else "full",
            "reencode_progressive": self.reencode_progressive,
            "resize_shorter": self.resize_shorter,
            "reencode_quality": images.REENCODE_QUALITY,
        }
        if self.shard_samples is not None:
            d["shard_samples"] = self.shard_samples
        else:
            d["shard_bytes"] = self.shard_bytes or DEFAULT_SHARD_BYTES
        return d


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- pass 1: check


@dataclass(frozen=True)
class CheckTask:
    items: list[sources.Item]
    options: images.CheckOptions
    cache: str
    key: str


def _check_chunk(task: CheckTask) -> list[images.Verdict]:
    """Verdicts for a chunk of files. Full checks (decoding) are cached on disk for a rerun; header checks
    are cheap enough to redo, and read only each file's head and tail."""
    if task.options.fast:
        return [_fast_verdict(it, task.options) for it in task.items]
    cache = Path(task.cache)
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            if saved["key"] == task.key:
                return [images.Verdict(**v) for v in saved["verdicts"]]
        except (ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is simply recomputed
    verdicts = [images.check_image(sources.read_item(it), task.options) for it in task.items]
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"key": task.key, "verdicts": [asdict(v) for v in verdicts]}))
    os.replace(tmp, cache)
    return verdicts


FAST_HEAD = 16384
"""Bytes the `--fast` check reads from the start of a file: the markers up to SOS of nearly every JPEG (a
longer header, e.g. a large EXIF thumbnail or ICC profile, is re-checked on the whole file)."""


def _fast_verdict(item: sources.Item, opts: images.CheckOptions) -> images.Verdict:
    """Header check from the head and the last 4 KB of a JPEG (markers up to SOS, EOI at the end), read with
    one open; anything else, or any doubt, is checked on the whole file."""
    head, tail = sources.read_head_tail(item, FAST_HEAD, images.EOI_WINDOW)
    if head is tail:  # a small file, read whole
        return images.check_image(head, opts)
    return _fast_verdict_of(head, tail, lambda: sources.read_item(item), opts)


def _fast_verdict_of_view(view: memoryview, opts: images.CheckOptions) -> images.Verdict:
    """The same verdict as `_fast_verdict`, for an image already in memory (the one-pass `--fast`)."""
    if len(view) <= FAST_HEAD + images.EOI_WINDOW:
        return images.check_image(bytes(view), opts)
    head, tail = bytes(view[:FAST_HEAD]), bytes(view[-images.EOI_WINDOW :])
    return _fast_verdict_of(head, tail, lambda: bytes(view), opts)


def _fast_verdict_of(
    head: bytes, tail: bytes, whole: Callable[[], bytes], opts: images.CheckOptions
) -> images.Verdict:
    if head.startswith(b"\xff\xd8"):
        verdict = images.check_image(head, opts, tail)
        if verdict.action != "quarantine":
            return verdict
    return images.check_image(whole(), opts)


# ---------------------------------------------------------------- pass 2: write


@dataclass(slots=True)
class PlannedSample:
    position: int
    item: sources.Item
    verdict: images.Verdict | None
    """None until checked, in the one-pass `--fast` plan."""
    label: int


@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    samples: list[PlannedSample]
    options: images.CheckOptions
    out: str
    settings: dict
    """The run's manifest options (part of every plan digest)."""
    plan: str
    """Digest of everything that decides this shard's bytes; in one pass, of everything known before."""
    one_pass: bool = False
    """Check each image as it is copied (the samples have no verdicts yet)."""


@dataclass(frozen=True)
class ShardResult:
    split: str
    index: int
    entry: fmt.ShardEntry | None
    """None when the one-pass write met an unusable file (`unusable`)."""
    kept: bool
    reencoded: int
    verdicts: list[images.Verdict]
    """One-pass tasks: one per sample, in the shard's order (the others knew them before; every rank gets
    every result, so they are not sent again)."""
    unusable: str | None = None
    """The first unusable file met by a one-pass write: `<split>/<source name>: reason`."""


class _Unusable(Exception):
    """Raised from inside the shard writer by a one-pass check that finds a file to quarantine."""


def _record_path(out: str, split: str, index: int) -> Path:
    return Path(out) / STATE / "done" / f"{split}-{index:06d}.json"


def _plan_digest(
    settings: dict,
    split: str,
    index: int,
    samples: list[PlannedSample],
    verdicts: list[images.Verdict] | None,
) -> str:
    """Digest of what decides a shard's bytes; `verdicts` None: of all but the verdicts (the one-pass plan)."""
    if verdicts is None:
        rows = [(p.position, p.item.name, p.item.size, p.label) for p in samples]
    else:
        rows = [
            (p.position, p.item.name, p.item.size, *_verdict_fields(v), p.label)
            for p, v in zip(samples, verdicts)
        ]
    return _digest([settings, split, index, rows])


def _kept(task: ShardTask, path: Path) -> tuple[fmt.ShardEntry, list[images.Verdict]] | None:
    """The completed shard from an earlier run, if its record matches this plan and its bytes its checksum;
    with the verdicts it was written with."""
    record = _record_path(task.out, task.split, task.index)
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    plan = saved.get("unchecked_plan" if task.one_pass else "plan")
    if plan != task.plan or not path.is_file() or path.stat().st_size != saved.get("bytes"):
        return None
    try:
        verdicts = [images.Verdict(*v) for v in saved["verdicts"]]
    except (KeyError, TypeError):
        return None  # a record from an older data_prep: write the shard again
    if len(verdicts) != len(task.samples) or fmt.sha256_file(path) != saved.get("sha256"):
        return None
    idx = path.with_name(fmt.index_name(path))
    if not idx.is_file():
        write_index(path)
    return fmt.ShardEntry(path.name, saved["samples"], saved["bytes"], saved["sha256"]), verdicts


def _samples(task: ShardTask, verdicts: list[images.Verdict]) -> list[fmt.Sample]:
    """The shard's samples. Each image is read by the writer straight into its buffer (see
    `dist_vgg.data.tar_stream`), so a shard never sits in memory whole, and re-encoded there if its verdict
    says so; in one pass it is checked there too. The verdicts are appended to `verdicts` in order."""
    samples = []
    for s in task.samples:
        item = s.item
        image = _SourceImage(item, s.verdict, task.options, verdicts)
        if s.verdict is not None:
            verdicts.append(s.verdict)
            _describe(image.meta, s.verdict)
        samples.append(fmt.Sample(fmt.sample_key(task.split, s.position), image, s.label, image.meta))
    return samples


def _describe(meta: dict, verdict: images.Verdict) -> None:
    meta["width"], meta["height"] = verdict.width, verdict.height
    if verdict.action == "reencode":
        meta["reencoded"] = verdict.reason


class _SourceImage(fmt.FileBytes):
    """One input image as the shard writer reads it: straight into its buffer, then stored as it is or
    re-encoded. With no verdict yet (one-pass `--fast`) it is checked there first: the verdict completes the
    sample's metadata and is appended to `verdicts`; an unusable file stops the shard (`_Unusable`)."""

    __slots__ = ("item", "meta", "options", "verdict", "verdicts")

    def __init__(
        self,
        item: sources.Item,
        verdict: images.Verdict | None,
        options: images.CheckOptions,
        verdicts: list[images.Verdict],
    ) -> None:
        super().__init__(item.size)
        self.item, self.verdict, self.options, self.verdicts = item, verdict, options, verdicts
        self.meta = {"wnid": item.wnid, "source": item.name}

    def read_into(self, view: memoryview) -> None:
        sources.read_item_into(self.item, view)

    def check(self, view: memoryview) -> bytes | None:
        verdict = self.verdict
        if verdict is None:
            verdict = _fast_verdict_of_view(view, self.options)
            if verdict.action == "quarantine":
                raise _Unusable(f"{self.item.split}/{self.item.name}: {verdict.reason}")
            self.verdicts.append(verdict)
            _describe(self.meta, verdict)
        if verdict.action == "reencode":
            return images.prepare(bytes(view), verdict, self.options)
        return None


def _write_shard(task: ShardTask) -> ShardResult:
    path = fmt.shard_path(task.out, task.split, task.index)
    kept = _kept(task, path)
    if kept is not None:
        entry, verdicts = kept
        return ShardResult(
            task.split, task.index, entry, True, _count_reencoded(verdicts), _sent(task, verdicts)
        )
    verdicts: list[images.Verdict] = []
    try:
        written = fmt.write_shard(path, _samples(task, verdicts), fsync=False)  # resume re-hashes kept shards
    except _Unusable as e:
        return ShardResult(task.split, task.index, None, False, 0, [], str(e))
    record = _record_path(task.out, task.split, task.index)
    record.parent.mkdir(parents=True, exist_ok=True)
    done = {
        "plan": _plan_digest(task.settings, task.split, task.index, task.samples, verdicts),
        "unchecked_plan": task.plan
        if task.one_pass
        else _plan_digest(task.settings, task.split, task.index, task.samples, None),
        "verdicts": [_verdict_fields(v) for v in verdicts],
        "sha256": written.sha256,
        "bytes": written.bytes,
        "samples": written.samples,
    }
    fmt.atomic_write(record, json.dumps(done).encode(), fsync=False)
    entry = fmt.ShardEntry(path.name, written.samples, written.bytes, written.sha256)
    return ShardResult(
        task.split, task.index, entry, False, _count_reencoded(verdicts), _sent(task, verdicts)
    )


def _count_reencoded(verdicts: list[images.Verdict]) -> int:
    return sum(1 for v in verdicts if v.action == "reencode")


def _sent(task: ShardTask, verdicts: list[images.Verdict]) -> list[images.Verdict]:
    return verdicts if task.one_pass else []


# ---------------------------------------------------------------- OUT folder


def _existing_options(out: Path) -> tuple[dict | None, str]:
    if (out / fmt.MANIFEST).is_file():
        try:
            return json.loads((out / fmt.MANIFEST).read_text()).get("options"), str(out / fmt.MANIFEST)
        except ValueError:
            return {"unreadable": True}, str(out / fmt.MANIFEST)
    if (out / STATE / "options.json").is_file():
        return json.loads((out / STATE / "options.json").read_text()), str(out / STATE / "options.json")
    if any(any((out / s).glob("*.tar")) for s in fmt.SPLITS):
        return {"unknown": True}, f"shards in {out} with no manifest"
    return None, ""


def _prepare_out(out: Path, options: dict, overwrite: bool) -> None:
    """Refuse an OUT made with other options (unless --overwrite), clear it if asked, drop stale temp files."""
    old, where = _existing_options(out)
    if old is not None and old != options:
        if not overwrite:
            diff = sorted(k for k in set(old) | set(options) if old.get(k) != options.get(k))
            raise PrepError(
                f"{out} already holds shards made with other options ({where}; differing: {', '.join(diff)}); "
                "choose another --out, or pass --overwrite to replace them"
            )
        for split in fmt.SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
        shutil.rmtree(out / STATE, ignore_errors=True)
        for name in (fmt.MANIFEST, fmt.CLASSES):
            (out / name).unlink(missing_ok=True)
    (out / STATE).mkdir(parents=True, exist_ok=True)
    fmt.atomic_write(out / STATE / "options.json", json.dumps(options, sort_keys=True).encode())
    for split in fmt.SPLITS:
        for tmp in (out / split).glob(".*.tmp-*") if (out / split).is_dir() else []:
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- the command


def plan_split(
    split: str,
    items: list[sources.Item],
    verdicts: list[images.Verdict] | None,
    seed: int,
    labels: dict[str, int],
) -> list[PlannedSample]:
    """Good samples of a split in their global order: sorted input, shuffled with the seed, then the
    quarantined left out (so a quarantined file does not move any other). `verdicts` None: the one-pass
    plan, every file assumed good."""
    order = list(range(len(items)))
    random.Random(f"{seed}/{split}").shuffle(order)
    if verdicts is None:
        return [PlannedSample(p, items[i], None, labels[items[i].wnid]) for p, i in enumerate(order)]
    kept = [i for i in order if verdicts[i].action != "quarantine"]
    return [PlannedSample(p, items[i], verdicts[i], labels[items[i].wnid]) for p, i in enumerate(kept)]


def _verdict_fields(v: images.Verdict) -> tuple:
    return v.action, v.reason, v.width, v.height


def samples_per_shard(opts: PrepOptions, planned: list[PlannedSample]) -> int:
    if opts.shard_samples is not None:
        return opts.shard_samples
    target = opts.shard_bytes or DEFAULT_SHARD_BYTES
    mean = sum(s.item.size for s in planned) / max(1, len(planned))
    return max(1, int(target // max(mean, 1.0)))


UNUSABLE = "unusable.txt"
"""OUT/.prep/UNUSABLE: the unusable files a one-pass `--fast` met; a rerun then checks first."""

Planned = dict[str, list[PlannedSample]]


def check_first(out: Path, reasons: list[str]) -> None:
    """Make the next `--fast` run on `out` check every file before copying (see UNUSABLE)."""
    (out / STATE).mkdir(parents=True, exist_ok=True)
    fmt.atomic_write(out / STATE / UNUSABLE, "".join(r + "\n" for r in reasons).encode(), fsync=False)


def run(
    src: str, out: str, opts: PrepOptions, team: Team, *, strict: bool, overwrite: bool, metrics: PrepMetrics
) -> int:
    """The `imagenet` command on this rank: check, plan, write (or, `--fast`, plan and check while writing);
    rank 0 writes the manifest at the end."""
    t0 = time.monotonic()
    options = opts.manifest_options()
    source = sources.open_source(src)
    one_pass = False
    if team.is_main:
        Path(out).mkdir(parents=True, exist_ok=True)
        _prepare_out(Path(out), options, overwrite)
        counts = ", ".join(f"{s} {len(v):,}" for s, v in source.items.items())
        print(
            f"data_prep: {source.description}: {len(source.wnids)} classes, {counts} files", file=sys.stderr
        )
        one_pass = opts.fast and not (Path(out) / STATE / UNUSABLE).is_file()
    one_pass = team.bcast(one_pass)
    team.barrier()
    done = _one_pass(source, opts, out, team, metrics) if one_pass else None
    if done is None:
        done = _two_passes(source, opts, out, team, metrics, strict)
    planned, quarantined, shard_results = done
    team.barrier()
    if team.is_main:
        how = "one pass, headers checked while copying" if one_pass and not quarantined else "two passes"
        _finish(
            Path(out), source, options, planned, quarantined, shard_results, team, time.monotonic() - t0, how
        )
    team.barrier()
    return 0


def _one_pass(
    source: sources.Source, opts: PrepOptions, out: str, team: Team, metrics: PrepMetrics
) -> tuple[Planned, list[dict], list[ShardResult]] | None:
    """`--fast` in one pass: plan as if every file were good, check each image as it is copied. None when a
    file turned out unusable (the plan was wrong from there on: the caller runs the two passes)."""
    unchecked, tasks = plan_shards(source, None, opts, out)
    results = write_all(tasks, team, metrics, one_pass=True)
    unusable = [r.unusable for r in results if r.unusable]
    if unusable:
        if team.is_main:
            check_first(Path(out), unusable)
            print(
                f"data_prep: met unusable files while copying ({unusable[0]}{' ...' if len(unusable) > 1 else ''}): "
                "checking every file first, then keeping the shards written before them and rewriting the rest",
                file=sys.stderr,
            )
        return None
    for task, r in zip(tasks, results):
        for p, v in zip(task.samples, r.verdicts, strict=True):
            p.verdict = v
    _check_accounting(source, unchecked, [])
    return unchecked, [], results


def _two_passes(
    source: sources.Source, opts: PrepOptions, out: str, team: Team, metrics: PrepMetrics, strict: bool
) -> tuple[Planned, list[dict], list[ShardResult]]:
    verdicts = check_all(source, opts.check, Path(out), team, metrics)
    quarantined = [
        {"split": split, "source": it.name, "reason": v.reason}
        for split, items in source.items.items()
        for it, v in zip(items, verdicts[split])
        if v.action == "quarantine"
    ]
    if quarantined and strict:
        lines = "\n".join(f"  {q['split']}/{q['source']}: {q['reason']}" for q in quarantined[:20])
        more = f"\n  ... and {len(quarantined) - 20} more" if len(quarantined) > 20 else ""
        raise PrepError(f"{len(quarantined)} input files are unusable (--strict):\n{lines}{more}")
    planned, shard_tasks = plan_shards(source, verdicts, opts, out)
    _check_accounting(source, planned, quarantined)
    return planned, quarantined, write_all(shard_tasks, team, metrics)


def check_all(
    source: sources.Source, check: images.CheckOptions, out: Path, team: Team, metrics: PrepMetrics
) -> dict[str, list[images.Verdict]]:
    """Pass 1: a verdict for every input file, per split in sorted order (every rank gets all of them)."""
    tasks = []
    for split, items in source.items.items():
        for c in range(0, len(items), CHECK_CHUNK):
            chunk = items[c : c + CHECK_CHUNK]
            key = _digest([asdict(check), [(i.name, i.size) for i in chunk]])
            cache = str(out / STATE / "check" / f"{split}-{c // CHECK_CHUNK:06d}.json")
            tasks.append(CheckTask(chunk, check, cache, key))
    bar = Progress("check", sum(len(tasks[i].items) for i in team.owned(len(tasks))), "files", team.rank)

    def checked(verdicts: list[images.Verdict]) -> None:
        metrics.checked.inc(len(verdicts))
        metrics.quarantined.inc(sum(1 for v in verdicts if v.action == "quarantine"))
        bar.add(len(verdicts))

    verdicts: dict[str, list[images.Verdict]] = {s: [] for s in source.items}
    for task, res in zip(tasks, team.map_all(_check_chunk, tasks, checked)):
        verdicts[task.items[0].split].extend(res)
    return verdicts


def plan_shards(
    source: sources.Source, verdicts: dict[str, list[images.Verdict]] | None, opts: PrepOptions, out: str
) -> tuple[Planned, list[ShardTask]]:
    """The global order of each split and its cut into shards; the same on every rank. `verdicts` None:
    the one-pass plan (every file assumed good, each checked as its shard is written)."""
    options = opts.manifest_options()
    labels = {w: k for k, w in enumerate(source.wnids)}
    planned: Planned = {}
    tasks: list[ShardTask] = []
    for split, items in source.items.items():
        planned[split] = plan_split(
            split, items, None if verdicts is None else verdicts[split], opts.seed, labels
        )
        n = samples_per_shard(opts, planned[split])
        for s, start in enumerate(range(0, len(planned[split]), n)):
            part = planned[split][start : start + n]
            known = None if verdicts is None else [p.verdict for p in part]
            plan = _plan_digest(options, split, s, part, known)  # type: ignore[arg-type]
            tasks.append(ShardTask(split, s, part, opts.check, out, options, plan, verdicts is None))
    return planned, tasks


def write_all(
    tasks: list[ShardTask], team: Team, metrics: PrepMetrics, one_pass: bool = False
) -> list[ShardResult]:
    """Pass 2: this rank's shards (i mod K), written or kept; every rank gets every result. In one pass the
    images are checked here too."""
    n_mine = len(team.owned(len(tasks)))
    metrics.planned.set(n_mine)
    bar = Progress("write", n_mine, "shards", team.rank)
    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)

    def written(r: ShardResult) -> None:
        if one_pass:
            metrics.checked.inc(len(r.verdicts) + (r.unusable is not None))
        if r.entry is None:  # stopped at an unusable file: the two passes follow
            bar.add(1)
            return
        metrics.shards.inc()
        metrics.images.inc(r.entry.samples)
        metrics.bytes.inc(r.entry.bytes)
        metrics.reencoded.inc(r.reencoded)
        bar.add(1, r.entry.samples, r.entry.bytes)
        if crash_after and bar.done >= crash_after:
            print(
                f"data_prep: {CRASH_ENV}={crash_after}: exiting abruptly (test hook)",
                file=sys.stderr,
                flush=True,
            )
            os._exit(75)

    return team.map_all(_write_shard, tasks, written)


def _check_accounting(source: sources.Source, planned: dict, quarantined: list[dict]) -> None:
    """In = out + quarantined, per split and class: a failure here is a bug, never silently dropped data."""
    for split, items in source.items.items():
        counts: dict[str, int] = {}
        for it in items:
            counts[it.wnid] = counts.get(it.wnid, 0) + 1
        for p in planned[split]:
            counts[p.item.wnid] -= 1
        for q in quarantined:
            if q["split"] == split:
                counts[q["source"].split("/")[0]] -= 1
        wrong = {w: c for w, c in counts.items() if c}
        if wrong:
            raise RuntimeError(f"internal error: {split} in ≠ out + quarantined for classes {wrong}")


def _finish(
    out: Path, source, options, planned, quarantined, shard_results, team: Team, elapsed: float, how: str
) -> None:
    splits = {}
    for split, plist in planned.items():
        per_class = [0] * len(source.wnids)
        for p in plist:
            per_class[p.label] += 1
        shards = [
            r.entry for r in sorted((r for r in shard_results if r.split == split), key=lambda r: r.index)
        ]
        if sum(e.samples for e in shards) != len(plist):
            raise RuntimeError(
                f"internal error: {split} shards hold {sum(e.samples for e in shards)} samples, planned {len(plist)}"
            )
        splits[split] = fmt.SplitEntry(len(plist), per_class, shards)
        keep = {e.name for e in shards} | {fmt.index_name(e.name) for e in shards}
        for f in (out / split).glob(f"{split}-*.*"):
            if f.name not in keep and f.suffix in (".tar", ".idx"):
                f.unlink()  # left by an earlier run of the same options with different input
    reencoded = [
        {"split": split, "source": p.item.name, "reason": p.verdict.reason}
        for split, plist in planned.items()
        for p in sorted(plist, key=lambda p: p.item.name)
        if p.verdict.action == "reencode" and not p.verdict.reason.startswith("resize")
    ]
    manifest = fmt.Manifest(fmt.FORMAT_VERSION, options, len(source.wnids), splits, reencoded, quarantined)
    manifest.stats = _carried_stats(out, manifest)
    fmt.write_classes(out, [(w, source.names.get(w, "")) for w in source.wnids])
    manifest.save(out)
    (out / STATE / "options.json").unlink(missing_ok=True)
    n_img = sum(s.samples for s in splits.values())
    n_bytes = sum(e.bytes for s in splits.values() for e in s.shards)
    n_shards = sum(len(s.shards) for s in splits.values())
    kept = sum(1 for r in shard_results if r.kept)
    n_re = sum(r.reencoded for r in shard_results)
    per_split = ", ".join(f"{k} {v.samples:,}" for k, v in splits.items())
    print(
        f"data_prep: done: {n_img:,} images ({per_split}), {human_bytes(n_bytes)}, {n_shards} shards "
        f"({kept} kept from an earlier run), {n_re} re-encoded, {len(quarantined)} quarantined, "
        f"{n_img / max(elapsed, 1e-9):,.0f} images/s in {elapsed:.1f}s ({how}) → {out}",
        file=sys.stderr,
    )
    if "train" in splits and 0 in splits["train"].per_class:
        empty = [w for w, n in zip(source.wnids, splits["train"].per_class) if n == 0]
        print(
            f"data_prep: warning: {len(empty)} classes have no training images: {', '.join(empty[:10])}",
            file=sys.stderr,
        )
    for q in quarantined[:20]:
        print(f"  quarantined {q['split']}/{q['source']}: {q['reason']}", file=sys.stderr)
    log = {
        "time": time.time(),
        "ranks": team.size,
        "workers": team.workers,
        "seconds": round(elapsed, 3),
        "images": n_img,
        "kept_shards": kept,
    }
    with open(out / STATE / "runs.jsonl", "a") as f:
        f.write(json.dumps(log) + "\n")


def _carried_stats(out: Path, manifest: fmt.Manifest) -> dict | None:
    """Keep `stats` from the previous manifest when the training shards are the same."""
    try:
        old = fmt.load_manifest(out)
    except fmt.ShardFormatError:
        return None
    same = "train" in old.splits and "train" in manifest.splits
    if same and [asdict(e) for e in old.splits["train"].shards] == [
        asdict(e) for e in manifest.splits["train"].shards
    ]:
        return old.stats
    return None
