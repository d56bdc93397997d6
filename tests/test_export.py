"""`dist-vgg export` / `import` / `predict` through the real entry point: an exported D loads strictly into
torchvision's layout (rebuilt by hand) with the same logits, from a weights file and from a training
checkpoint; torchvision weights import with their preprocessing; malicious pickles are refused."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from dist_vgg.checkpoint import commit, save_rank_part, step_dir
from dist_vgg.eval.images import load_image, rescale_shorter_side
from dist_vgg.eval.protocols import dense_posteriors
from dist_vgg.models.vgg import VGG, VGGSpec
from dist_vgg.weights import TORCHVISION_PREPROCESSING, load_weights_file
from tests.eval_fixtures import TINY_MEAN, TorchvisionVGG, cli, main, read_json, tiny_model, write_weights

pytestmark = pytest.mark.timeout(120)

WIDTH = 1 / 16  # channels 4…32, FC 256: cheap at torchvision's own 224 input and 7×7 FC-6 map


def test_exported_d_loads_strictly_into_torchvision_layout_with_the_same_logits(tmp_path):
    model = tiny_model("D", classes=10, width=WIDTH, crop=224)
    src = write_weights(tmp_path / "d.pt", model, classes=[f"c{i}" for i in range(10)])
    out = tmp_path / "export" / "vgg16.pth"
    r = cli("export", str(src), "--format", "torchvision", "--out", str(out))
    assert r.returncode == 0, r.stderr
    state = torch.load(out, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    tv = TorchvisionVGG("D", num_classes=10, width=WIDTH).eval()
    tv.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 224, 224) * 60
    with torch.no_grad():
        torch.testing.assert_close(tv(x), model(x), rtol=1e-4, atol=1e-4)
    note = read_json(out.with_name("vgg16.pth.json"))
    assert note["torchvision_builder"] == "vgg16" and note["num_classes"] == 10
    assert note["preprocessing"]["mean"] == list(TINY_MEAN.mean) and note["preprocessing"]["scale"] == 1.0
    assert "WRONG inputs" in note["note"] and "WRONG inputs" in r.stdout
    assert "mean subtracted" in note["note"]


def test_export_from_a_training_checkpoint_and_as_dist_vgg_weights(tmp_path, capsys):
    """A run folder written with the checkpoint module (the trainer's writer) exports like a weights file."""
    model = tiny_model("A", classes=5, width=1 / 32, crop=224)
    ckpt = step_dir(tmp_path / "run", 40)
    save_rank_part(
        ckpt,
        0,
        {
            "model": model.state_dict(),
            "spec": model.spec.to_dict(),
            "preprocessing": {"mean": [1.0, 2.0, 3.0]},
        },
    )
    commit(ckpt, {"step": 40})
    tv_out, own_out = tmp_path / "vgg11.pth", tmp_path / "a.pt"
    assert main("export", str(tmp_path / "run"), "--format", "torchvision", "--out", str(tv_out)) == 0
    tv = TorchvisionVGG("A", num_classes=5, width=1 / 32)
    tv.load_state_dict(torch.load(tv_out, weights_only=True), strict=True)
    assert (
        main("import", str(tv_out), "--from", "torchvision", "--config", "A", "--out", str(tmp_path / "r.pt"))
        == 0
    )
    assert "importing it records torchvision's preprocessing instead" in capsys.readouterr().err
    assert main("export", str(tmp_path / "run"), "--format", "dist-vgg", "--out", str(own_out)) == 0
    w = load_weights_file(own_out)
    assert w.spec == model.spec and w.preprocessing.mean == (1.0, 2.0, 3.0)
    for k, v in model.state_dict().items():
        assert torch.equal(w.state_dict[k], v)


def test_c_export_keeps_its_own_keys_and_says_so(tmp_path, capsys):
    model = tiny_model("C", classes=4, width=1 / 32, crop=32)
    src = write_weights(tmp_path / "c.pt", model)
    out = tmp_path / "c.pth"
    assert main("export", str(src), "--format", "torchvision", "--out", str(out)) == 0
    assert "has no torchvision builder" in capsys.readouterr().out
    own = VGG(model.spec)
    own.load_state_dict(torch.load(out, weights_only=True), strict=True)


def test_import_torchvision_records_its_preprocessing_and_predict_uses_it(tmp_path, capsys):
    torch.manual_seed(1)
    tv = TorchvisionVGG("B", num_classes=6, width=WIDTH)
    with torch.no_grad():
        tv.classifier[6].weight.mul_(30)
    path = tmp_path / "vgg13.pth"
    torch.save(tv.state_dict(), path)
    names = tmp_path / "names.txt"
    names.write_text("".join(f"n{i:08d}\tanimal {i}\n" for i in range(6)))
    out = tmp_path / "b.pt"
    r = cli(
        "import",
        str(path),
        "--from",
        "torchvision",
        "--config",
        "B",
        "--classes-file",
        str(names),
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    w = load_weights_file(out)
    assert w.preprocessing == TORCHVISION_PREPROCESSING
    assert w.spec == VGGSpec("B", 6, WIDTH, 224) and w.classes[2] == "n00000002\tanimal 2"

    img = tmp_path / "cat.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(img)
    r = cli("predict", str(out), str(img), "--q", "224", "--json")
    assert r.returncode == 0, r.stderr
    top = json.loads(r.stdout)[0]["top"]
    model = VGG(w.spec).eval()
    model.load_state_dict(w.state_dict)
    expected = dense_posteriors(model, load_image(img, 224, TORCHVISION_PREPROCESSING))[0]
    x = load_image(img, 224, TORCHVISION_PREPROCESSING)
    assert x.shape == (1, 3, 224, 299)
    with Image.open(img) as im:
        pixels = torch.from_numpy(np.asarray(rescale_shorter_side(im.convert("RGB"), 224), dtype=np.float32))
    torch.testing.assert_close(x[0, 1], (pixels[..., 1] / 255 - 0.456) / 0.224)  # 0–1 pixels, mean, std
    prob, idx = expected.topk(5)
    assert [t["class"] for t in top] == idx.tolist()
    np.testing.assert_allclose([t["probability"] for t in top], prob.tolist(), rtol=1e-4)
    assert top[0]["label"] == f"animal {idx[0]} (n{int(idx[0]):08d})"
    assert main("predict", str(out), str(img), "--q", "224") == 0
    printed = capsys.readouterr().out
    assert f"1. {prob[0]:.4f}  animal {int(idx[0])} (n{int(idx[0]):08d})" in printed


def test_import_refuses_the_wrong_configuration(tmp_path, capsys):
    tv = TorchvisionVGG("A", num_classes=6, width=WIDTH)
    path = tmp_path / "vgg11.pth"
    torch.save(tv.state_dict(), path)
    assert (
        main("import", str(path), "--from", "torchvision", "--config", "D", "--out", str(tmp_path / "x.pt"))
        == 2
    )
    err = capsys.readouterr().err
    assert "is not a torchvision D state_dict" in err and "check --config" in err


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EVAL_TEST_MARKER', '/nonexistent/x')}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_malicious_pickle_is_refused_everywhere(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVAL_TEST_MARKER", str(marker))
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Evil()}, evil)  # a torch file whose pickle calls os.system
    legacy = tmp_path / "legacy.pth"
    with open(legacy, "wb") as f:
        pickle.dump({"features.0.weight": _Evil()}, f)  # the same as a bare pickle
    for path in (evil, legacy):
        for args in (
            ("import", str(path), "--from", "torchvision", "--config", "D", "--out", str(tmp_path / "o.pt")),
            ("export", str(path), "--format", "torchvision", "--out", str(tmp_path / "o.pth")),
            ("predict", str(path), str(tmp_path / "none.jpg")),
        ):
            assert main(*args) == 2
            err = capsys.readouterr().err
            assert "could run code" in err or "not a readable torch file" in err, err
    assert not marker.exists()


def test_unknown_checkpoint_format_is_a_clear_error(tmp_path, capsys):
    odd = tmp_path / "odd.pt"
    torch.save({"weights": torch.zeros(3)}, odd)
    assert main("export", str(odd), "--format", "dist-vgg", "--out", str(tmp_path / "o.pt")) == 2
    err = capsys.readouterr().err
    assert f"{odd}: unknown checkpoint format" in err and "dist-vgg import" in err
