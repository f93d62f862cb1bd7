"""Mask files in every form a dataset ships them (0/1, 0/255, bilevel, palette, 16-bit,
colour, antialiased) read as the same forged region, by the rule of train/data/folders.py
and the README; a mask that is none of them is a one-line error naming the file, also
through train.evaluate and train --check-data full."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from train.__main__ import main as train_main
from train.checkpoint import save_checkpoint
from train.data import DataError, check_samples, read_samples
from train.data.folders import Sample, is_forged, load_pair, read_mask
from train.evaluate import main as evaluate_main
from train.models import build_model

H, W = 24, 32
REGION = np.zeros((H, W), dtype=bool)
REGION[4:14, 6:20] = True


def _palette(index: np.ndarray, colours: list[tuple[int, int, int]]) -> Image.Image:
    im = Image.fromarray(index.astype(np.uint8), mode="P")
    im.putpalette([c for rgb in colours for c in rgb] + [0] * 3 * (256 - len(colours)))
    return im


def _rgb(region: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    out = np.zeros((*region.shape, 3), dtype=np.uint8)
    out[region] = colour
    return Image.fromarray(out)


def _antialiased(region: np.ndarray) -> Image.Image:
    """0/255 mask with a blurred (1..254) border, as a resize or JPEG leaves it."""
    m = region.astype(np.float32) * 255
    soft = (m + np.roll(m, 1, 0) + np.roll(m, -1, 0) + np.roll(m, 1, 1) + np.roll(m, -1, 1)) / 5
    soft[region] = np.maximum(soft[region], 200)  # inside stays above half the scale
    soft[~region] = np.minimum(soft[~region], 100)  # outside stays below it
    return Image.fromarray(np.rint(soft).astype(np.uint8))


FORMS = {
    "L 0/1": lambda r: Image.fromarray(r.astype(np.uint8)),
    "L 0/255": lambda r: Image.fromarray(r.astype(np.uint8) * 255),
    "bilevel mode 1": lambda r: Image.fromarray(r.astype(np.uint8) * 255).convert("1"),
    "palette index 1 = red": lambda r: _palette(r.astype(np.uint8), [(0, 0, 0), (255, 0, 0)]),
    "palette index 0 = white": lambda r: _palette((~r).astype(np.uint8), [(255, 255, 255), (0, 0, 0)]),
    "16-bit 0/65535": lambda r: Image.fromarray(r.astype(np.uint16) * 65535),
    "16-bit 0/1": lambda r: Image.fromarray(r.astype(np.uint16)),
    "RGB red on black": lambda r: _rgb(r, (255, 0, 0)),
    "RGB 0/1": lambda r: _rgb(r, (1, 1, 1)),
    "RGBA 0/255": lambda r: _rgb(r, (255, 255, 255)).convert("RGBA"),
    "antialiased 0..255": _antialiased,
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_mask_form_reads_as_the_same_region(tmp_path, form):
    path = tmp_path / "m.png"
    FORMS[form](REGION).save(path)
    mask = read_mask(path)
    assert mask.dtype == bool and mask.shape == (H, W)
    assert np.array_equal(mask, REGION)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "i.png")
    sample = Sample(tmp_path / "i.png", path)
    assert is_forged(sample)
    assert np.array_equal(load_pair(sample)[1], REGION)


@pytest.mark.parametrize("form", ["L 0/1", "L 0/255", "bilevel mode 1", "palette index 1 = red", "16-bit 0/1"])
def test_an_all_authentic_mask_reads_as_authentic(tmp_path, form):
    path = tmp_path / "m.png"
    FORMS[form](np.zeros((H, W), dtype=bool)).save(path)
    assert not read_mask(path).any()


@pytest.mark.parametrize("values", [(0, 2), (0, 100), (0, 127)], ids=["label-map-0-2", "gray-100", "gray-127"])
def test_a_mask_that_is_neither_is_named(tmp_path, values):
    path = tmp_path / "odd.png"
    Image.fromarray(np.where(REGION, values[1], values[0]).astype(np.uint8)).save(path)
    with pytest.raises(DataError) as info:
        read_mask(path)
    message = str(info.value)
    assert message.startswith(f"{path}: mask values 0..{values[1]}") and "\n" not in message
    assert "neither 0/1 nor 0/255" in message


def _dataset(root, mask_of):
    """A Tp/ + Gt/ folder of 6 images: 4 forged (masks written by ``mask_of``), 2 authentic."""
    (root / "Tp").mkdir(parents=True)
    (root / "Gt").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / "Tp" / f"{i}.png")
        region = np.zeros((40, 40), dtype=bool)
        if i < 4:
            region[5:20 + i, 8:30] = True
        mask_of(region).save(root / "Gt" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks-ckpt")
    torch.manual_seed(0)
    config = {"model": "m2sformer", "small": True, "variant": None, "options": {}, "size": 32}
    return save_checkpoint(root / "ckpt.pt", {"model": build_model("m2sformer", small=True).state_dict(),
                                               "config": config})


def test_evaluate_counts_the_forged_images_of_a_zero_one_dataset(tmp_path, checkpoint, capsys):
    # the issue: 0/1 masks were read as all authentic ("0 forged")
    data = _dataset(tmp_path / "d01", FORMS["L 0/1"])
    out = tmp_path / "eval"
    assert evaluate_main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out),
                          "--workers", "0", "--overlays", "0", "--quiet"]) == 0
    assert "6 images: 4 forged, 2 authentic" in capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    assert report["conditions"][0]["pixel"]["forged_images"] == 4


def test_evaluate_names_a_mask_that_is_neither(tmp_path, checkpoint, capsys):
    data = _dataset(tmp_path / "odd", lambda r: Image.fromarray(r.astype(np.uint8) * 2))
    rc = evaluate_main(["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "eval"),
                        "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {data / 'Gt' / '0.png'}: mask values 0..2")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_check_data_full_names_the_mask_before_training(tmp_path, capsys):
    data = _dataset(tmp_path / "odd", lambda r: Image.fromarray(r.astype(np.uint8) * 2))
    run = tmp_path / "run"
    rc = train_main(["--model", "m2sformer", "--small", "--size", "32", "--batch-size", "2", "--workers", "0",
                     "--data", str(data), "--check-data", "full", "--out", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "mask values 0..2" in err and "Gt" in err
    assert not (run / "last.pt").exists()
    with pytest.raises(DataError, match="mask values"):
        check_samples(read_samples(data), decode=True)
    check_samples(read_samples(data))  # the header check does not decode masks
