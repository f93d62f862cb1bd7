"""Image input/output: turn a file, PIL image or array into uint8 HxWx3 RGB, and save PNGs.

``load_image`` is the single entry point that decides how every kind of input
becomes the model's colour space.  The conversions are fixed and documented:

* EXIF orientation is applied (the array is what a viewer shows).  An EXIF
  block that cannot be parsed is ignored (orientation treated as normal).
* Multi-frame files (GIF, TIFF) use their first frame.
* Grayscale and bilevel (``1``, ``L``) and palette (``P``) images become RGB;
  gray values are replicated into the three channels.
* Images with alpha (``RGBA``, ``LA``, ``PA``, palette with transparency,
  4-channel arrays) are composited over a WHITE background:
  ``rgb * a + 255 * (1 - a)``.  Tampering is judged on what a viewer sees.
* 16-bit data (PIL modes ``I;16*``, ``I`` with values in 0..65535, uint16
  arrays) is scaled by its full bit depth, ``round(v / 257)`` so 65535 -> 255;
  nothing is clipped.  Mode ``I`` values outside 0..65535 are rejected.
* Floating-point data (PIL mode ``F``, float arrays) must be finite and in
  [0, 1]; it is mapped with ``round(v * 255)``.
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` are converted to RGB by PIL.
* Arrays may be HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA) with dtype uint8,
  uint16 or float (in [0, 1]); anything else is an ``ImageError``.

Every problem is an ``ImageError`` whose one-line message names the source and
says what is wrong: missing file, not an image, truncated or corrupt data,
fewer than ``MIN_SIDE`` pixels on a side, unsupported array.  Truncated files
are always errors: PIL's ``LOAD_TRUNCATED_IMAGES`` is forced off while decoding.

``check_image_file`` is the cheap check a batch tool runs on every file before it
writes anything: it reads the header and the container's checksums (PIL ``verify``:
PNG chunk CRCs up to ``IEND``, so a cut-off PNG fails here) but decodes no pixels.
Damage that only decoding shows (a JPEG cut off mid-scan, corrupt compressed data)
is found by ``load_image``.
"""

from __future__ import annotations

import os
import stat
import struct
import threading
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .atomic import atomic_write
from .errors import ImageError, one_line

__all__ = ["MIN_SIDE", "IMAGE_EXTENSIONS", "ImageSource", "check_image_file", "encode_png", "load_image", "save_png",
           "source_name"]

#: Smallest accepted width and height in pixels (a 1-pixel side cannot be resized meaningfully).
MIN_SIDE = 2
#: File name suffixes (lower case) that a folder walk takes as images.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)
_truncation_lock = threading.Lock()


def source_name(src: object) -> str:
    """How an input is named in messages: its path, or a placeholder for in-memory data."""
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, Image.Image):
        return getattr(src, "filename", "") or "<PIL image>"
    if isinstance(src, np.ndarray):
        return "<array>"
    return f"<{type(src).__name__}>"


def load_image(src: ImageSource, *, copy: bool = True) -> np.ndarray:
    """Decode ``src`` (path, PIL image or ndarray) to a fresh uint8 HxWx3 RGB array.

    ``copy=False`` lets an array that is already uint8 HxWx3 through as it is (for a
    caller that only reads it, like the predictor); every other input is converted."""
    name = source_name(src)
    if isinstance(src, np.ndarray):
        rgb = _array_to_rgb(src, name, copy)
    elif isinstance(src, Image.Image):
        rgb = _pil_to_rgb(_decode(src, name), name)
    elif isinstance(src, (str, os.PathLike)):
        rgb = _pil_to_rgb(_open(Path(src), name), name)
    else:
        raise ImageError(f"image {name}: expected a path, PIL image or numpy array, "
                         f"got {type(src).__name__}")
    _check_size(rgb.shape[0], rgb.shape[1], name)
    return rgb


def save_png(path: str | os.PathLike, array: np.ndarray, compress_level: int = 6) -> Path:
    """Atomically write a uint8 HxW (gray), HxWx3 (RGB) or HxWx4 (RGBA) array as PNG.

    A bool HxW array is written as a 0/255 gray mask. ``compress_level`` is zlib's, 0..9
    (6, PIL's default, is the usual size/time balance; 1 writes a large image about 2.3x
    as fast for a file 15-35% bigger).
    """
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageError(f"image {path}: can only save uint8 HxW, HxWx3 or HxWx4 arrays, "
                         f"got {a.dtype} {a.shape}")
    if not (isinstance(compress_level, int) and 0 <= compress_level <= 9):
        raise ImageError(f"image {path}: compress_level must be an integer 0..9, got {compress_level!r}")
    return atomic_write(path, lambda fh: encode_png(a, fh, compress_level))


def encode_png(array: np.ndarray, fh: BinaryIO, compress_level: int = 6) -> None:
    """Write a uint8 HxW, HxWx3 or HxWx4 (or bool HxW) array to ``fh`` as PNG (not atomic:
    for a caller that stages the file itself, as ``runtime.atomic.atomic_files`` does)."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageError(f"PNG: can only write uint8 HxW, HxWx3 or HxWx4 arrays, got {a.dtype} {a.shape}")
    if not (isinstance(compress_level, int) and 0 <= compress_level <= 9):
        raise ImageError(f"PNG: compress_level must be an integer 0..9, got {compress_level!r}")
    Image.fromarray(np.ascontiguousarray(a)).save(fh, format="PNG", compress_level=compress_level)


def check_image_file(path: str | os.PathLike) -> tuple[int, int]:
    """Check an image file without decoding its pixels; returns its (width, height).

    Raises ``ImageError`` for a missing, empty or unreadable file, a header PIL does not
    recognise, too few pixels, or a container that fails PIL's ``verify`` (e.g. a PNG cut
    off before ``IEND`` or with a bad chunk CRC).
    """
    path = Path(path)
    name = str(path)
    with _open_file(path, name) as fh:
        img = _identify(fh, name)
        size = img.size
        _check_size(size[1], size[0], name)
        _strictly(img.verify, name, "truncated or corrupt image file")
    return size


# --------------------------------------------------------------------------- #
# Decoding
# --------------------------------------------------------------------------- #


def _open_file(path: Path, name: str) -> BinaryIO:
    """The file opened for reading (the caller closes it): missing, a folder, unreadable or
    empty is an ``ImageError``."""
    if not path.exists():
        raise ImageError(f"image {name}: file not found")
    if path.is_dir():
        raise ImageError(f"image {name}: is a directory, not an image file")
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise ImageError(f"image {name}: cannot read ({one_line(e)})") from None
    info = os.fstat(fh.fileno())
    if stat.S_ISREG(info.st_mode) and info.st_size == 0:  # (a pipe reports 0 too)
        fh.close()
        raise ImageError(f"image {name}: file is empty (0 bytes)")
    return fh


def _identify(fh, name: str) -> Image.Image:
    try:
        return Image.open(fh)
    except UnidentifiedImageError:
        raise ImageError(f"image {name}: not an image (format not recognised)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"image {name}: too large to decode ({one_line(e)})") from None
    except _DECODE_ERRORS as e:
        raise ImageError(f"image {name}: corrupt image header ({one_line(e)})") from None


def _open(path: Path, name: str) -> Image.Image:
    """Open and fully decode the file (read from disk as it decodes, not copied whole first)."""
    with _open_file(path, name) as fh:
        return _decode(_identify(fh, name), name)


def _decode(img: Image.Image, name: str) -> Image.Image:
    """Force decoding of the (first frame of the) image; truncation is an error."""
    _strictly(img.load, name, "truncated or corrupt image data")
    return img


def _strictly(action, name: str, problem: str) -> None:
    """Run PIL's ``action`` (``verify`` or ``load``) with truncated files refused; its errors
    become one-line ``ImageError``s (``problem`` names a decode failure)."""
    with _truncation_lock:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            action()
        except Image.DecompressionBombError as e:
            raise ImageError(f"image {name}: too large to decode ({one_line(e)})") from None
        except _DECODE_ERRORS as e:
            raise ImageError(f"image {name}: {problem} ({one_line(e)})") from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _pil_to_rgb(img: Image.Image, name: str) -> np.ndarray:
    _check_size(img.height, img.width, name)
    try:
        img = ImageOps.exif_transpose(img) or img
    except _DECODE_ERRORS + (KeyError, TypeError):
        pass  # unreadable EXIF: keep the stored orientation
    mode = img.mode
    if mode == "RGB":
        return np.array(img, dtype=np.uint8)
    if mode in ("1", "L"):
        return _gray_to_rgb(np.asarray(img.convert("L"), dtype=np.uint8))
    if mode.startswith("I;16"):
        return _gray_to_rgb(_u16_to_u8(np.asarray(img).astype(np.uint16)))
    if mode == "I":
        v = np.asarray(img)
        if v.size and (v.min() < 0 or v.max() > 65535):
            raise ImageError(f"image {name}: 32-bit integer pixels outside 0..65535 "
                             "are not supported")
        return _gray_to_rgb(_u16_to_u8(v.astype(np.uint16)))
    if mode == "F":
        return _gray_to_rgb(_float_to_u8(np.asarray(img), name))
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        mode == "P" and "transparency" in img.info)
    if has_alpha:
        return _composite_white(np.asarray(img.convert("RGBA"), dtype=np.uint8))
    try:
        return np.array(img.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError) as e:
        raise ImageError(f"image {name}: unsupported colour mode {mode} "
                         f"({one_line(e)})") from None


# --------------------------------------------------------------------------- #
# Arrays
# --------------------------------------------------------------------------- #


def _array_to_rgb(a: np.ndarray, name: str, copy: bool = True) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageError(f"image {name}: unsupported array shape {a.shape} "
                         "(expected HxW, HxWx1, HxWx3 or HxWx4)")
    _check_size(a.shape[0], a.shape[1], name)
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.uint16:
        u8 = _u16_to_u8(a)
    elif np.issubdtype(a.dtype, np.floating):
        u8 = _float_to_u8(a, name)
    else:
        raise ImageError(f"image {name}: unsupported array dtype {a.dtype} "
                         "(expected uint8, uint16 or float in [0, 1])")
    if u8.ndim == 2:
        return _gray_to_rgb(u8)
    if u8.shape[2] == 4:
        return _composite_white(u8)
    if copy and u8 is a:
        return np.array(u8, dtype=np.uint8, order="C")  # the caller's own array is not handed back
    return np.ascontiguousarray(u8)


def _u16_to_u8(v: np.ndarray) -> np.ndarray:
    """Full 16-bit range to 8 bit: round(v / 257), so 0 -> 0 and 65535 -> 255."""
    return ((v.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)


def _float_to_u8(v: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ImageError(f"image {name}: float pixels contain NaN or infinity")
    if v.size and (v.min() < 0.0 or v.max() > 1.0):
        raise ImageError(f"image {name}: float pixels must lie in [0, 1], "
                         f"found {v.min():.4g}..{v.max():.4g}")
    return np.rint(v * 255.0).astype(np.uint8)


def _gray_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[:, :, None], 3, axis=2)


def _composite_white(rgba: np.ndarray) -> np.ndarray:
    """Blend RGBA uint8 over a white background."""
    rgb = rgba[:, :, :3].astype(np.float32)
    a = rgba[:, :, 3:4].astype(np.float32) / 255.0
    return np.rint(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)


def _check_size(h: int, w: int, name: str) -> None:
    if h == 0 or w == 0:
        raise ImageError(f"image {name}: image is empty ({w}x{h} pixels)")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ImageError(f"image {name}: image is too small ({w}x{h} pixels, "
                         f"minimum is {MIN_SIDE}x{MIN_SIDE})")


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_files(folder: str | os.PathLike, skip: Path | None = None) -> list[Path]:
    """Image files (``IMAGE_EXTENSIONS``, any case) under ``folder``, recursively, sorted by
    path, without hidden files and folders or the folder ``skip`` (a resolved path)."""
    found = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (skip is None or (here / d).resolve() != skip))
        found.extend(here / f for f in sorted(files) if _is_image_name(f) and (here / f).is_file())
    return sorted(found)
