"""A rank whose input loses an image: rank 0 detects the gap after the pass and every rank stops with the
same coverage error (real gloo process group), instead of the others waiting for a collective."""

from __future__ import annotations

import pytest

from tests.eval_fixtures import run_ranks

pytestmark = pytest.mark.timeout(120)


def test_a_lost_image_stops_every_rank_with_the_coverage_error(tmp_path):
    outs = run_ranks(["-m", "tests.eval_dist_worker"], 2, 100, tmp_path)
    assert [code for code, _, _ in outs] == [3, 3], [err[-2000:] for _, _, err in outs]
    outs = [(out, err) for _, out, err in outs]
    for rank, (out, _) in enumerate(outs):
        assert (
            f"rank {rank}: network 1, dense, Q=32: evaluated 6 images but the manifest's validation split has 7"
            in out
        )
