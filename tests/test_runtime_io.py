"""Image loading: every documented conversion and every error, with the file named."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from runtime.errors import ImageError, RuntimeInputError
from runtime.io import MIN_SIDE, load_image, save_png


def check_rgb(a: np.ndarray, h: int, w: int) -> None:
    assert a.dtype == np.uint8 and a.shape == (h, w, 3) and a.flags.c_contiguous


def test_rgb_png_is_exact(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    check_rgb(out, 7, 11)
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(load_image(str(tmp_path / "a.png")), rgb)


def test_grayscale_is_replicated(tmp_path):
    g = np.arange(6 * 5, dtype=np.uint8).reshape(6, 5) * 8
    Image.fromarray(g).save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    check_rgb(out, 6, 5)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], g)


def test_bilevel_mode_1(tmp_path):
    img = Image.new("1", (4, 3), 0)
    img.putpixel((1, 2), 1)
    img.save(tmp_path / "b.png")
    out = load_image(tmp_path / "b.png")
    check_rgb(out, 3, 4)
    assert out[2, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = [10, 20, 30, 255]  # opaque: unchanged
    rgba[0, 1] = [10, 20, 30, 0]  # transparent: white
    rgba[0, 2] = [0, 100, 200, 128]  # half: blend
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    check_rgb(out, 2, 3)
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [255, 255, 255]
    a = 128 / 255
    expect = np.rint(np.array([0, 100, 200]) * a + 255 * (1 - a))
    assert out[0, 2].tolist() == expect.tolist()


def test_la_is_composited_over_white(tmp_path):
    img = Image.new("LA", (3, 2), (40, 0))
    img.save(tmp_path / "la.png")
    out = load_image(tmp_path / "la.png")
    assert (out == 255).all()


def test_palette_image(tmp_path):
    img = Image.new("P", (4, 4))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((3, 3), 1)
    img.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    check_rgb(out, 4, 4)
    assert out[0, 0].tolist() == [255, 0, 0] and out[3, 3].tolist() == [0, 0, 255]


def test_palette_with_transparency_goes_over_white(tmp_path):
    img = Image.new("P", (4, 4))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((3, 3), 1)
    img.save(tmp_path / "pt.png", transparency=0)
    out = load_image(tmp_path / "pt.png")
    assert out[0, 0].tolist() == [255, 255, 255] and out[3, 3].tolist() == [0, 0, 255]


def test_16bit_png_scales_by_bit_depth(tmp_path):
    v = np.array([[0, 257, 32896], [65535, 65278, 128]], dtype=np.uint16)
    img = Image.fromarray(v)
    assert img.mode.startswith("I;16")
    img.save(tmp_path / "d.png")
    out = load_image(tmp_path / "d.png")
    check_rgb(out, 2, 3)
    assert out[:, :, 0].tolist() == [[0, 1, 128], [255, 254, 0]]  # /257, not clipped to 255
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])


def test_mode_i_and_f_pil_images():
    i_img = Image.fromarray(np.array([[0, 65535], [257, 514]], dtype=np.int32))
    assert i_img.mode == "I"
    assert load_image(i_img)[:, :, 1].tolist() == [[0, 255], [1, 2]]
    f_img = Image.fromarray(np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32))
    assert f_img.mode == "F"
    assert load_image(f_img)[:, :, 0].tolist() == [[0, 255], [128, 64]]
    with pytest.raises(ImageError, match="outside 0..65535"):
        load_image(Image.fromarray(np.array([[0, 70000], [1, 1]], dtype=np.int32)))


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")  # red in CMYK
    out = load_image(tmp_path / "c.jpg")
    check_rgb(out, 6, 8)
    r, g, b = out[3, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied(tmp_path):
    rgb = np.zeros((20, 40, 3), dtype=np.uint8)  # H=20, W=40
    rgb[:10, :10] = [255, 0, 0]  # red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "r.jpg")
    check_rgb(out, 40, 20)  # transposed
    assert out[2, 17, 0] > 200 and out[2, 2, 0] < 50  # red is now top-right
    # Without the tag the stored orientation is kept.
    Image.fromarray(rgb).save(tmp_path / "n.jpg", quality=95)
    check_rgb(load_image(tmp_path / "n.jpg"), 20, 40)


def test_pil_input_matches_path_input(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (9, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as img:
        np.testing.assert_array_equal(load_image(img), load_image(tmp_path / "a.png"))


def test_array_inputs():
    rgb = np.random.default_rng(3).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    out = load_image(rgb)
    np.testing.assert_array_equal(out, rgb)
    assert out is not rgb and not np.shares_memory(out, rgb)
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(load_image(gray)[:, :, 2], gray)
    np.testing.assert_array_equal(load_image(gray[:, :, None])[:, :, 1], gray)
    rgba = np.concatenate([rgb, np.full((4, 6, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(load_image(rgba), rgb)
    np.testing.assert_array_equal(load_image(rgb.astype(np.uint16) * 257), rgb)
    np.testing.assert_array_equal(load_image(rgb / 255.0), rgb)
    np.testing.assert_array_equal(load_image((rgb / 255.0).astype(np.float32)), rgb)
    np.testing.assert_array_equal(load_image(np.asfortranarray(rgb)), rgb)


@pytest.mark.parametrize(
    "array, fragment",
    [
        (np.zeros((4, 4, 2), np.uint8), "unsupported array shape"),
        (np.zeros((2, 4, 4, 3), np.uint8), "unsupported array shape"),
        (np.zeros((4, 4, 3), np.int32), "unsupported array dtype"),
        (np.zeros((4, 4, 3), bool), "unsupported array dtype"),
        (np.full((4, 4, 3), 1.5), "must lie in [0, 1]"),
        (np.full((4, 4, 3), np.nan), "NaN"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((1, 1, 3), np.uint8), "too small"),
    ],
)
def test_array_errors(array, fragment):
    with pytest.raises(ImageError) as e:
        load_image(array)
    assert fragment in str(e.value) and "<array>" in str(e.value)


def test_wrong_type():
    with pytest.raises(ImageError, match="expected a path"):
        load_image(42)


def test_missing_file(tmp_path):
    path = tmp_path / "missing.png"
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert str(e.value) == f"image {path}: file not found"


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "e.png")


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert str(path) in str(e.value) and "not an image" in str(e.value)


def _encoded(fmt: str) -> bytes:
    rgb = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_file(tmp_path, fmt, suffix):
    data = _encoded(fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as e:
        load_image(path)
    msg = str(e.value)
    assert str(path) in msg and "truncated" in msg and "\n" not in msg


def test_truncated_file_is_an_error_even_if_pil_was_told_to_allow_it(tmp_path):
    data = _encoded("JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(ImageError, match="truncated"):
            load_image(path)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_one_pixel_image_is_rejected(tmp_path):
    assert MIN_SIDE == 2
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(path)
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert str(path) in str(e.value) and "too small" in str(e.value) and "1x1" in str(e.value)
    Image.new("RGB", (2, 2)).save(tmp_path / "ok.png")
    check_rgb(load_image(tmp_path / "ok.png"), 2, 2)
    Image.new("RGB", (5, 1)).save(tmp_path / "line.png")
    with pytest.raises(ImageError, match="too small"):
        load_image(tmp_path / "line.png")


def test_errors_are_runtime_input_errors():
    assert issubclass(ImageError, RuntimeInputError) and issubclass(ImageError, ValueError)


def test_save_png_atomic_and_bool_mask(tmp_path):
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    path = save_png(tmp_path / "m.png", mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]
    with Image.open(path) as img:
        assert img.mode == "L"
        assert np.asarray(img).tolist() == (mask.astype(np.uint8) * 255).tolist()
    rgb = np.random.default_rng(5).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(save_png(tmp_path / "m.png", rgb)), rgb)
    with pytest.raises(ImageError):
        save_png(tmp_path / "f.png", np.zeros((3, 4), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]


# --------------------------------------------------------------------------- #
# check_image_file: the cheap check before a batch writes anything
# --------------------------------------------------------------------------- #


def test_check_image_file_reads_headers_only(tmp_path):
    from PIL import ImageFile

    from runtime.io import check_image_file

    path = tmp_path / "ok.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(path)
    original, loads = ImageFile.ImageFile.load, []
    ImageFile.ImageFile.load = lambda self: loads.append(1) or original(self)
    try:
        assert check_image_file(path) == (40, 30)
    finally:
        ImageFile.ImageFile.load = original
    assert loads == []


def test_check_image_file_finds_a_cut_png_but_only_decoding_finds_a_cut_jpeg(tmp_path):
    from runtime.io import check_image_file

    rng = np.random.default_rng(0)
    png, jpg = tmp_path / "a.png", tmp_path / "a.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(png)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpg, quality=90)
    png.write_bytes(png.read_bytes()[:-40])
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    with pytest.raises(ImageError, match=r"truncated or corrupt image file"):
        check_image_file(png)
    assert check_image_file(jpg) == (64, 64)
    with pytest.raises(ImageError, match=r"truncated or corrupt image data"):
        load_image(jpg)


@pytest.mark.parametrize("case, message", [("missing", "file not found"), ("empty", "file is empty"),
                                           ("text", "not an image"), ("tiny", "too small")])
def test_check_image_file_errors(tmp_path, case, message):
    from runtime.io import check_image_file

    path = tmp_path / "x.png"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("hello")
    elif case == "tiny":
        Image.fromarray(np.zeros((1, 5, 3), np.uint8)).save(path)
    with pytest.raises(ImageError, match=message):
        check_image_file(path)
