"""Synthetic forgeries, dataset layouts and their error messages, distortions, the
resumable sampler and Simplex noise."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from train.data import DataError, check_samples, load_pair, read_samples
from train.data.dataset import ForgeryDataset, ResumableSampler
from train.data.distortions import Distortion, gaussian_blur, jpeg, kernel_sigma, resize
from train.data.forge import KINDS, ForgeryConfig, ForgeryGenerator
from train.data.simplex import simplex_noise
from train.synth import generate, main as synth_main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, 12, size=48, seed=3, progress=False)
    return out


def test_generator_is_deterministic_and_draws_every_kind():
    gen = ForgeryGenerator(ForgeryConfig(size=48), seed=5)
    samples = [gen.sample(i) for i in range(40)]
    again = ForgeryGenerator(ForgeryConfig(size=48), seed=5).sample(7)
    assert np.array_equal(again.image, samples[7].image) and np.array_equal(again.mask, samples[7].mask)
    assert not np.array_equal(ForgeryGenerator(ForgeryConfig(size=48), seed=6).sample(7).image, samples[7].image)
    assert {s.kind for s in samples} == set(KINDS)
    for s in samples:
        assert s.image.dtype == np.uint8 and s.image.shape[2] == 3 and s.mask.shape == s.image.shape[:2]
        assert s.mask.any() == (s.kind != "authentic")
        if s.kind != "authentic":
            assert 0.005 < s.mask.mean() < 0.6


def test_forged_region_differs_from_the_source_photo():
    cfg = ForgeryConfig(size=64, weights=(1, 0, 0, 0), p_resize=0, p_blur=0, p_noise=0, p_jpeg=0)
    f = ForgeryGenerator(cfg, seed=0).sample(0)
    assert f.kind == "splice" and f.ops["donor"] != f.ops["photo"]
    inside = f.image[f.mask].astype(float)
    assert inside.std() > 0  # real content was pasted, not a flat fill


def test_synth_writes_both_layouts_with_the_same_pairs(dataset):
    folder, listed = read_samples(dataset), read_samples(dataset / "data.json")
    assert [s.image.name for s in folder] == [s.image.name for s in listed]
    entries = json.loads((dataset / "data.json").read_text())
    meta = json.loads((dataset / "meta.json").read_text())
    for (img, mask), record in zip(entries, meta["samples"]):
        assert (mask == "Negative") == (record["kind"] == "authentic")
    for a, b in zip(folder, listed):
        ia, ma = load_pair(a)
        ib, mb = load_pair(b)
        assert np.array_equal(ia, ib) and np.array_equal(ma, mb)


def test_synth_cli_refuses_an_existing_folder(dataset, capsys):
    assert synth_main(["--out", str(dataset), "--n", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(dataset) in err and "already exists" in err


def _copy_layout(src, dst):
    (dst / "Tp").mkdir(parents=True)
    (dst / "Gt").mkdir()
    for sub in ("Tp", "Gt"):
        for p in sorted((src / sub).iterdir())[:3]:
            (dst / sub / p.name).write_bytes(p.read_bytes())
    return dst


def test_corrupt_image_is_named(dataset, tmp_path):
    root = _copy_layout(dataset, tmp_path / "d")
    bad = sorted((root / "Tp").iterdir())[1]
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=rf"^{bad}: not a readable image"):
        check_samples(read_samples(root))


def test_truncated_image_is_named_when_decoded(dataset, tmp_path):
    root = _copy_layout(dataset, tmp_path / "d")
    bad = sorted((root / "Tp").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    samples = read_samples(root)
    with pytest.raises(DataError, match=rf"^{bad}: not a readable image"):
        check_samples(samples, decode=True)
    with pytest.raises(DataError, match=rf"^{bad}:"):
        load_pair(samples[0])


def test_mask_of_the_wrong_size_is_named(dataset, tmp_path):
    root = _copy_layout(dataset, tmp_path / "d")
    mask = sorted((root / "Gt").iterdir())[2]
    Image.new("L", (10, 7)).save(mask)
    with pytest.raises(DataError, match=rf"^{mask}: mask is 10x7 but its image .* is \d+x\d+"):
        check_samples(read_samples(root))


def test_empty_and_unpaired_folders_are_named(dataset, tmp_path):
    (tmp_path / "empty" / "Tp").mkdir(parents=True)
    (tmp_path / "empty" / "Gt").mkdir()
    with pytest.raises(DataError, match=r"Tp: no images"):
        read_samples(tmp_path / "empty")
    with pytest.raises(DataError, match=r"Gt/ is missing"):
        (tmp_path / "half" / "Tp").mkdir(parents=True)
        read_samples(tmp_path / "half")
    root = _copy_layout(dataset, tmp_path / "d")
    orphan = sorted((root / "Gt").iterdir())[0]
    orphan.unlink()
    with pytest.raises(DataError, match=r": no mask in "):
        read_samples(root)
    bad_json = tmp_path / "list.json"
    bad_json.write_text("[]")
    with pytest.raises(DataError, match=rf"^{bad_json}: the list is empty"):
        read_samples(bad_json)
    bad_json.write_text('[["missing.png", "Negative"]]')
    with pytest.raises(DataError, match=r"missing.png: no such file \(entry 0"):
        read_samples(bad_json)


def test_masks_named_like_casia_are_paired(tmp_path):
    (tmp_path / "Tp").mkdir()
    (tmp_path / "Gt").mkdir()
    Image.new("RGB", (8, 6)).save(tmp_path / "Tp" / "Tp_S_001.jpg")
    Image.new("L", (8, 6), 255).save(tmp_path / "Gt" / "Tp_S_001_gt.png")
    (s,) = read_samples(tmp_path)
    image, mask = load_pair(s)
    assert image.shape == (6, 8, 3) and mask.all()


def test_dataset_items_and_flip_follow_the_seed(dataset):
    samples = read_samples(dataset)
    ds = ForgeryDataset(samples, 32, (0.5,) * 3, (0.5,) * 3, augment=True, seed=1)
    item = ds[(2, 0)]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(ds[(2, 0)]["image"], item["image"])
    flips = [torch.equal(ds[(2, e)]["image"], ds[2]["image"].flip(-1)) for e in range(12)]
    assert any(flips) and not all(flips)


def test_resumable_sampler_skips_exactly_the_consumed_samples(dataset):
    ds = list(range(10))
    full = ResumableSampler(ds, shuffle=True, seed=4)
    full.set_position(3)
    order = list(full)
    part = ResumableSampler(ds, shuffle=True, seed=4)
    part.set_position(3, skip=4)
    assert list(part) == order[4:] and len(part) == 6
    assert {i for i, e in order} == set(range(10)) and {e for _, e in order} == {3}
    shards = [list(ResumableSampler(ds, num_replicas=2, rank=r, seed=4)) for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1])


def test_distortions():
    rng = np.random.default_rng(0)
    img = (rng.random((40, 30, 3)) * 255).astype(np.uint8)
    assert kernel_sigma(3) == pytest.approx(0.8) and kernel_sigma(7) == pytest.approx(1.4)
    assert np.array_equal(gaussian_blur(img, 1), img)
    blurred = gaussian_blur(img, 5)
    assert blurred.shape == img.shape and blurred.std() < img.std() * 0.7
    assert jpeg(img, 50).shape == img.shape and not np.array_equal(jpeg(img, 50), img)
    assert resize(img, 0.5).shape == (20, 15, 3)
    noisy = Distortion("noise", 10).apply(np.full((64, 64, 3), 128, np.uint8), seed=1)
    assert abs(noisy.astype(float).std() - 10) < 0.5
    assert Distortion().apply(img) is img and Distortion("jpeg", 90).label == "jpeg 90"
    with pytest.raises(ValueError, match="unknown distortion"):
        Distortion("sharpen", 1)


def test_simplex_noise_is_seeded_standardised_and_smooth():
    a = simplex_noise((2, 3, 48, 48), torch.Generator().manual_seed(0))
    b = simplex_noise((2, 3, 48, 48), torch.Generator().manual_seed(0))
    c = simplex_noise((2, 3, 48, 48), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(a.pow(2).mean(dim=(2, 3)), torch.ones(2, 3), atol=1e-4)
    lag1 = torch.corrcoef(torch.stack([a[..., :-1].flatten(), a[..., 1:].flatten()]))[0, 1]
    assert lag1 > 0.5  # low-frequency structure, unlike white Gaussian noise (about 0)
    assert not torch.allclose(a[0, 0], a[0, 1])  # every field has its own seed
