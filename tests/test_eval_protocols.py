"""The test protocols on tensors: dense = centre on a crop-sized image, the 5×5 grid's positions and mirrors,
flip / multi-crop / multi-scale / fusion / ensemble averaging done on posteriors, exact coverage checks."""

from __future__ import annotations

import pytest
import torch

from dist_vgg.eval.crops import centre_crop, grid_crops, grid_offsets, grid_positions, mirror
from dist_vgg.eval.ensemble import Chunk, CoverageError, combine
from dist_vgg.eval.protocols import (
    centre_posteriors,
    check_scales,
    dense_posteriors,
    multicrop_posteriors,
    parse_mode,
    parse_scales,
)
from dist_vgg.models.dense import dense_logits
from tests.eval_fixtures import coordinate_image, tiny_model

pytestmark = pytest.mark.timeout(60)


def test_dense_on_a_crop_sized_image_equals_the_centre_crop_fc_result():
    model = tiny_model("D", crop=32)
    x = torch.randn(3, 3, 32, 32) * 50
    torch.testing.assert_close(dense_logits(model, x), model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dense_posteriors(model, x), centre_posteriors(model, x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        dense_posteriors(model, x, flip=False), centre_posteriors(model, x, flip=False), rtol=1e-5, atol=1e-6
    )


def test_grid_offsets_touch_both_edges_and_are_evenly_spaced():
    assert grid_offsets(48, 32) == [0, 4, 8, 12, 16]
    assert grid_offsets(64, 32) == [0, 8, 16, 24, 32]
    assert grid_offsets(32, 32) == [0, 0, 0, 0, 0]
    assert grid_offsets(35, 32) == [0, 1, 2, 2, 3]  # rounded to whole pixels
    with pytest.raises(ValueError, match="does not fit"):
        grid_offsets(31, 32)


def test_grid_crops_and_their_mirrors_sit_where_the_coordinates_say():
    h, w, crop = 48, 64, 32
    img = coordinate_image(h, w)
    crops = grid_crops(img, crop)
    assert len(crops) == 25
    expected = [(t, s) for t in (0, 4, 8, 12, 16) for s in (0, 8, 16, 24, 32)]
    assert grid_positions(h, w, crop) == expected
    for c, (top, left) in zip(crops, expected):
        assert c.shape == (1, 3, crop, crop)
        assert c[0, 0, 0, 0] == top and c[0, 1, 0, 0] == left  # top-left pixel
        assert c[0, 0, -1, -1] == top + crop - 1 and c[0, 1, -1, -1] == left + crop - 1
        m = mirror(c)
        assert m[0, 1, 0, 0] == left + crop - 1 and m[0, 1, 0, -1] == left  # columns reversed
        assert torch.equal(m[0, 0], c[0, 0])  # rows unchanged
    centre = centre_crop(img, crop)
    assert (centre[0, 0, 0, 0], centre[0, 1, 0, 0]) == (8, 16)


def test_multicrop_is_the_mean_posterior_of_the_fifty_crops():
    model = tiny_model("A", crop=32)
    x = torch.randn(2, 3, 40, 56) * 50
    got = multicrop_posteriors(model, x)
    posts = []
    for top in (0, 2, 4, 6, 8):  # grid_offsets(40, 32), written out
        for left in (0, 6, 12, 18, 24):  # grid_offsets(56, 32)
            c = x[:, :, top : top + 32, left : left + 32]
            posts.append(torch.softmax(model(c), 1))
            posts.append(torch.softmax(model(torch.flip(c, dims=(3,))), 1))
    assert len(posts) == 50
    torch.testing.assert_close(got, torch.stack(posts).mean(0), rtol=1e-5, atol=1e-6)
    no_flip = multicrop_posteriors(model, x, flip=False)
    torch.testing.assert_close(no_flip, torch.stack(posts[::2]).mean(0), rtol=1e-5, atol=1e-6)


def test_flip_averaging_averages_posteriors_not_scores():
    model = tiny_model("B", crop=32)
    x = torch.randn(4, 3, 32, 48) * 50
    s, sm = dense_logits(model, x), dense_logits(model, torch.flip(x, dims=(3,)))
    expected = (torch.softmax(s, 1) + torch.softmax(sm, 1)) / 2
    got = dense_posteriors(model, x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, torch.softmax((s + sm) / 2, 1), atol=1e-4)  # the test can tell them apart
    torch.testing.assert_close(got.sum(1), torch.ones(4))


def _chunks(member, mode, q, post, labels, split=(0, 2, 5)):
    """Cut (indices, labels, posteriors) into uneven pieces, in a shuffled order, as ranks would deliver them."""
    idx = torch.arange(len(labels))
    cuts = list(zip(split, [*split[1:], len(labels)]))
    return [Chunk(member, mode, q, idx[a:b], labels[a:b], post[a:b]) for a, b in reversed(cuts)]


def test_ensemble_fusion_and_scales_average_posteriors_per_image():
    torch.manual_seed(0)
    n, classes = 9, 4
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0])
    posts = {
        (m, mode, q): torch.softmax(torch.randn(n, classes) * 3, 1)
        for m in (0, 1)
        for mode in ("dense", "multicrop")
        for q in (32, 48)
    }
    chunks = [c for (m, mode, q), p in posts.items() for c in _chunks(m, mode, q, p, labels)]
    results = combine(chunks, 2, ("dense", "multicrop"), (32, 48), n)
    # per member: 2 modes × (2 scales + combined) + fusion = 7 lines; then the ensemble
    assert len(results) == 15
    member = [
        sum(posts[(m, mode, q)] for mode in ("dense", "multicrop") for q in (32, 48)) / 4 for m in (0, 1)
    ]
    ensemble = (member[0] + member[1]) / 2
    top1 = int((ensemble.argmax(1) == labels).sum())
    top5 = n  # 4 classes: always in the top 5
    last = results[-1]
    assert last.members == (0, 1) and last.modes == ("dense", "multicrop") and last.scales == (32, 48)
    assert (last.accuracy.images, last.accuracy.top1_correct, last.accuracy.top5_correct) == (n, top1, top5)
    fusion0 = results[6]
    assert fusion0.members == (0,) and fusion0.modes == ("dense", "multicrop")
    assert fusion0.accuracy.top1_correct == int((member[0].argmax(1) == labels).sum())
    single = results[0]
    assert (single.members, single.modes, single.scales) == ((0,), ("dense",), (32,))
    assert single.accuracy.top1_correct == int((posts[(0, "dense", 32)].argmax(1) == labels).sum())


def test_ensemble_is_an_average_of_posteriors_not_of_scores():
    # net 0 is very sure of class 1, net 1 mildly prefers class 0 over 1: posteriors and logits disagree.
    labels = torch.tensor([0])
    logits = [torch.tensor([[0.0, 5.0, 4.9]]), torch.tensor([[3.0, 0.0, -10.0]])]
    chunks = [
        Chunk(m, "dense", 256, torch.tensor([0]), labels, torch.softmax(s, 1)) for m, s in enumerate(logits)
    ]
    by_posterior = combine(chunks, 2, ("dense",), (256,), 1)[-1].accuracy
    assert by_posterior.top1_correct == 1  # (softmax0 + softmax1)/2 picks class 0
    assert (logits[0] + logits[1]).argmax() == 1  # averaging scores would have picked class 1


def test_coverage_errors_name_the_pass_and_the_discrepancy():
    p = torch.full((4, 3), 1 / 3)
    labels = torch.zeros(4, dtype=torch.int64)
    dup = [
        Chunk(0, "dense", 256, torch.tensor([0, 1, 2]), labels[:3], p[:3]),
        Chunk(0, "dense", 256, torch.tensor([2]), labels[:1], p[:1]),
    ]
    with pytest.raises(
        CoverageError, match=r"Q=256: evaluated 4 images .* 4 \(1 never evaluated, 1 evaluated more"
    ):
        combine(dup, 1, ("dense",), (256,), 4)
    short = [Chunk(0, "dense", 256, torch.tensor([0, 1, 2]), labels[:3], p[:3])]
    with pytest.raises(CoverageError, match="evaluated 3 images but the manifest's validation split has 4"):
        combine(short, 1, ("dense",), (256,), 4)
    outside = [Chunk(0, "dense", 256, torch.tensor([0, 1, 2, 9]), labels, p)]
    with pytest.raises(CoverageError, match="index 9 is outside the validation split of 4"):
        combine(outside, 1, ("dense",), (256,), 4)


def test_mode_and_scale_errors_are_clear():
    assert parse_mode("dense+multicrop") == ("dense", "multicrop")
    with pytest.raises(ValueError, match="unknown evaluation mode 'fancy'; choose one of centre, dense"):
        parse_mode("fancy")
    assert parse_scales("256,384,512") == [256, 384, 512]
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_scales("256;384")
    with pytest.raises(ValueError, match=r"test scale\(s\) 24 are smaller than the 32-pixel crop of net.pt"):
        check_scales([24, 48], 32, "net.pt")
    with pytest.raises(ValueError, match="dense evaluation needs inputs at least 32"):
        dense_posteriors(tiny_model("A", crop=32), torch.zeros(1, 3, 24, 40))


def test_predicted_cost_matches_the_paper_scale_figures():
    from dist_vgg.eval.cost import centre_macs, dense_macs, protocol_macs
    from dist_vgg.models.geometry import forward_macs
    from dist_vgg.models.vgg import VGGSpec

    d = VGGSpec("D")
    assert centre_macs(d) == forward_macs(d)  # 15.5 G multiply-adds, as in the paper
    assert round(dense_macs(d, 384, 512) / centre_macs(d), 1) == 4.4  # 4:3 image at Q=384
    assert round(dense_macs(d, 384, 384) / centre_macs(d), 1) == 3.2  # square image
    assert protocol_macs(d, "multicrop", 256, 256) == 50 * centre_macs(d)
