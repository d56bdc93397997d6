"""`imagenet --fast` in one pass: it plans as if every file were good and checks each image in the shard
writer's buffer. It must give the very bytes of the two passes (check everything, then write), whether it
re-encodes images on the way, is killed and rerun, runs on several MPI ranks, or meets an unusable file and
falls back. Real files through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from data_prep import imagenet, synthetic
from data_prep.__main__ import main
from dist_vgg.data import format as fmt
from tests.data_prep_fixtures import SHARD, prep_env, prepared, raw, run_prep, same_tree  # noqa: F401

pytestmark = pytest.mark.timeout(180)
FAST = ["--fast", *SHARD]


@pytest.fixture(scope="module")
def usable(raw, tmp_path_factory) -> Path:  # noqa: F811
    """The problem source without its unusable files: every file can be stored, several only re-encoded
    (CMYK, grayscale, a PNG named .JPEG, EXIF rotation)."""
    src = tmp_path_factory.mktemp("one_pass") / "raw"
    shutil.copytree(raw, src)
    problems = json.loads((src / synthetic.PROBLEMS_FILE).read_text())
    for p in problems:
        if p["expect"] == "quarantine":
            wnid, name = p["source"].split("/")
            (src / "train" / wnid / name if p["split"] == "train" else src / "val" / name).unlink()
    assert {p["expect"] for p in problems} >= {"reencode", "quarantine"}
    return src


def two_passes(src: Path, out: Path, *args: str) -> None:
    """The reference: the same options, forced through check-then-write (as a rerun after an unusable file)."""
    imagenet.check_first(out, ["(test: check first)"])
    res = run_prep("imagenet", str(src), "--out", str(out), *args)
    assert res.returncode == 0, res.stderr
    assert "(two passes)" in res.stderr


def test_one_pass_gives_the_bytes_of_two_passes_and_re_encodes_on_the_way(usable, tmp_path):
    res = run_prep("imagenet", str(usable), "--out", str(tmp_path / "one"), *FAST)
    assert res.returncode == 0, res.stderr
    assert "(one pass, headers checked while copying)" in res.stderr
    assert "check:" not in res.stderr  # no separate check pass
    two_passes(usable, tmp_path / "two", *FAST)
    assert same_tree(tmp_path / "one", tmp_path / "two") == []
    manifest = fmt.load_manifest(tmp_path / "one")
    assert {r["reason"] for r in manifest.reencoded} >= {
        "cmyk",
        "grayscale",
        "png file",
        "exif orientation 6",
    }
    assert manifest.quarantined == []
    # the full check decides the same for these files: the same shards
    assert main(["imagenet", str(usable), "--out", str(tmp_path / "full"), *SHARD]) == 0
    full = fmt.load_manifest(tmp_path / "full")
    for split in fmt.SPLITS:
        assert manifest.splits[split] == full.splits[split]


def test_one_pass_killed_then_rerun_on_two_mpi_ranks_keeps_its_shards(usable, tmp_path):
    out = tmp_path / "crash"
    crash = prep_env(**{imagenet.CRASH_ENV: "2"})
    res = run_prep("imagenet", str(usable), "--out", str(out), "--workers", "2", *FAST, env=crash)
    assert res.returncode == 75, res.stderr
    assert not (out / fmt.MANIFEST).exists()
    res = run_prep("imagenet", str(usable), "--out", str(out), *FAST, mpi=2)
    assert res.returncode == 0, res.stderr
    assert "[rank 1]" in res.stderr and "(one pass, headers checked while copying)" in res.stderr
    assert int(res.stderr.split(" kept from an earlier run")[0].rsplit("(", 1)[1]) >= 2
    two_passes(usable, tmp_path / "ref", *FAST)
    assert same_tree(out, tmp_path / "ref") == []


def test_an_unusable_file_met_while_copying_falls_back_to_two_passes(raw, tmp_path):  # noqa: F811
    out = tmp_path / "f"
    res = run_prep("imagenet", str(raw), "--out", str(out), *FAST)
    assert res.returncode == 0, res.stderr
    assert "met unusable files while copying" in res.stderr
    assert "(two passes)" in res.stderr
    manifest = fmt.load_manifest(out)
    assert len(manifest.quarantined) == sum(
        p["expect"] == "quarantine" for p in json.loads((raw / synthetic.PROBLEMS_FILE).read_text())
    )
    two_passes(raw, tmp_path / "ref", *FAST)
    assert same_tree(out, tmp_path / "ref") == []
    # a rerun knows: it checks first, and keeps every shard
    res = run_prep("imagenet", str(raw), "--out", str(out), *FAST)
    assert res.returncode == 0, res.stderr
    assert "met unusable files" not in res.stderr and "(two passes)" in res.stderr
    n = len(manifest.splits["train"].shards) + len(manifest.splits["val"].shards)
    assert f"({n} kept from an earlier run)" in res.stderr
    # --strict still refuses them, naming each
    res = run_prep("imagenet", str(raw), "--out", str(tmp_path / "s"), *FAST, "--strict")
    assert res.returncode != 0
    assert "input files are unusable (--strict)" in res.stderr and "Traceback" not in res.stderr
