"""Dataset layouts on disk, read and written the IMDL-BenCo way, with every image/mask
pair checked.

Two layouts are read:
- a folder with ``Tp/`` (images) and ``Gt/`` (masks): a mask belongs to the image with the
  same file stem, or the stem plus ``_gt`` / ``_mask`` (CASIA names masks ``X_gt.png``);
  an authentic image has an all-zero mask;
- a JSON file holding a list of ``[image, mask]`` pairs, ``mask`` being ``"Negative"`` for
  an authentic image (no mask file); relative paths are relative to the JSON file.

A mask is read by its image mode (PNG, TIFF, BMP, ...), the same way for every file:

- bilevel (mode ``1``): set pixels are forged;
- palette (``P``): pixels whose palette colour is not black are forged (label maps with
  index 0 = black, black/white palettes);
- grayscale or colour (the largest channel counts): values all 0 or 1 are a 0/1 mask, 1 =
  forged; otherwise a pixel is forged above half the scale (> 127 for 8 bits, > 32767 for
  16 bits), which reads 0/255 masks and antialiased or JPEG-compressed ones;
- anything else, i.e. values above 1 but none above half the scale (a 0/2 label map, a
  mask drawn at gray 100), is a ``DataError`` naming the file: nothing could be told forged.

An authentic image has an all-zero mask (or ``"Negative"`` in a JSON list).

Every problem is a ``DataError`` whose one-line message names the file and what is wrong:
missing folder or file, empty folder, unpaired image or mask, unreadable or truncated
image, mask and image of different sizes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
NEGATIVE = "Negative"
MASK_SUFFIXES = ("", "_gt", "_mask")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError, Image.DecompressionBombError)


class DataError(ValueError):
    """A dataset problem; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path | None  # None: authentic ("Negative"); an all-black mask is authentic too


def read_samples(source: str | Path) -> list[Sample]:
    """The pairs of a dataset folder (``Tp/`` + ``Gt/``) or JSON list; DataError if the
    layout is broken or empty. File contents are checked by ``check_samples``."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_folder(path)
    if path.suffix.lower() == ".json":
        return _read_json(path)
    raise DataError(f"{path}: expected a dataset folder (Tp/ and Gt/) or a JSON list of [image, mask] pairs")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _read_folder(root: Path) -> list[Sample]:
    tp, gt = root / "Tp", root / "Gt"
    for sub in (tp, gt):
        if not sub.is_dir():
            raise DataError(f"{root}: expected the IMDL-BenCo folder layout, {sub.name}/ is missing "
                            "(Tp/ holds the images, Gt/ the masks)")
    images = _images_in(tp)
    if not images:
        raise DataError(f"{tp}: no images ({', '.join(IMAGE_SUFFIXES)})")
    masks: dict[str, Path] = {}
    for m in _images_in(gt):
        if m.stem in masks:
            raise DataError(f"{m}: two masks share the name {m.stem!r} ({masks[m.stem].name})")
        masks[m.stem] = m
    samples, used = [], set()
    for img in images:
        found = [masks[img.stem + s] for s in MASK_SUFFIXES if img.stem + s in masks]
        if not found:
            raise DataError(f"{img}: no mask in {gt} (looked for {img.stem}.*, {img.stem}_gt.*, {img.stem}_mask.*)")
        if len(found) > 1:
            raise DataError(f"{img}: several masks match ({', '.join(f.name for f in found)})")
        used.add(found[0].stem)
        samples.append(Sample(img, found[0]))
    orphans = sorted(set(masks) - used)
    if orphans:
        raise DataError(f"{masks[orphans[0]]}: mask without an image in {tp} ({len(orphans)} such mask(s))")
    return samples


def _read_json(path: Path) -> list[Sample]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a JSON list of [image, mask] pairs, got {type(entries).__name__}")
    if not entries:
        raise DataError(f"{path}: the list is empty")
    samples = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
            raise DataError(f"{path}: entry {i} is not an [image, mask] pair of strings: {entry!r:.80}")
        image = _resolve(path, entry[0])
        mask = None if entry[1] == NEGATIVE else _resolve(path, entry[1])
        for f in (image, mask):
            if f is not None and not f.is_file():
                raise DataError(f"{f}: no such file (entry {i} of {path})")
        samples.append(Sample(image, mask))
    return samples


def _resolve(json_path: Path, name: str) -> Path:
    p = Path(name)
    return p if p.is_absolute() else json_path.parent / p


def _open(path: Path, decode: bool) -> Image.Image:
    try:
        im = Image.open(path)
        if decode:
            im.load()
        return im
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except _DECODE_ERRORS as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a readable image ({reason})") from None


def check_samples(samples: Iterable[Sample], decode: bool = False) -> None:
    """Check every pair: both files open as images and the mask has the image's size; with
    ``decode`` both are fully decoded and the mask's values checked (``read_mask``). Raises
    DataError on the first problem."""
    for s in samples:
        with _open(s.image, decode) as im:
            size = im.size
        if s.mask is not None:
            with _open(s.mask, decode) as m:
                if m.size != size:
                    raise DataError(f"{s.mask}: mask is {m.size[0]}x{m.size[1]} but its image {s.image.name} "
                                    f"is {size[0]}x{size[1]}")
                if decode:
                    mask_from_image(m, s.mask)


def mask_from_image(m: Image.Image, path: str | Path) -> np.ndarray:
    """The bool H x W mask (True = forged) of a decoded mask image, by the rule in the
    module docstring; DataError naming ``path`` for a mask that is none of those forms."""
    mode = m.mode
    if mode == "1":
        return np.asarray(m, dtype=bool)
    if mode in ("P", "PA"):
        return np.asarray(m.convert("RGB")).max(axis=-1) > 0
    if mode in ("L", "LA", "La"):
        values = np.asarray(m.getchannel(0))
    elif mode.startswith("I") or mode == "F":
        values = np.asarray(m)
    else:
        values = np.asarray(m.convert("RGB")).max(axis=-1)
    top = values.max() if values.size else 0
    if values.dtype.kind == "f":
        full = 1.0 if top <= 1 else 255.0
        if np.all((values == 0) | (values == 1)):
            return values == 1
    else:
        full = 255 if values.dtype == np.uint8 or top <= 255 else 65535
        if top <= 1:
            return values == 1
    half = full / 2
    if top <= half:
        raise DataError(f"{path}: mask values 0..{top:g} (mode {mode}) are neither 0/1 nor 0/{full:g}: no pixel "
                        f"is 1 or above {half:g}, so none can be told forged (README, Datasets)")
    return values > half


def read_mask(path: str | Path) -> np.ndarray:
    """Decode a mask file into a bool H x W array (True = forged), checked by the rule in
    the module docstring."""
    with _open(Path(path), decode=True) as m:
        return mask_from_image(m, path)


def is_forged(sample: Sample) -> bool:
    """The image-level label ``ForgeryDataset`` gives ``sample`` (a forged mask pixel),
    read from the mask alone."""
    return sample.mask is not None and bool(read_mask(sample.mask).any())


def load_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Decode a pair: uint8 H x W x 3 RGB image and bool H x W mask (``read_mask``; no mask
    = all False)."""
    with _open(sample.image, decode=True) as im:
        image = np.asarray(im.convert("RGB"))
    if sample.mask is None:
        return image, np.zeros(image.shape[:2], dtype=bool)
    mask = read_mask(sample.mask)
    if mask.shape != image.shape[:2]:
        raise DataError(f"{sample.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                        f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}")
    return image, mask


def write_dataset(out: str | Path, items: Iterable[tuple[str, np.ndarray, np.ndarray, bool]],
                  meta: dict | None = None) -> list[Sample]:
    """Write ``(name, image, mask, forged)`` items in both layouts into the new folder
    ``out``: ``Tp/name.png`` and ``Gt/name.png`` (all black for authentic images),
    ``data.json`` (the JSON list, "Negative" for authentic) and ``meta.json`` (``meta``).
    The folder appears only once complete; it must not exist yet."""
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: already exists; choose a new output folder")
    pairs: list[list[str]] = []
    with atomic_path(out) as tmp:
        (tmp / "Tp").mkdir(parents=True)
        (tmp / "Gt").mkdir()
        for name, image, mask, forged in items:
            Image.fromarray(image).save(tmp / "Tp" / f"{name}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / "Gt" / f"{name}.png")
            pairs.append([f"Tp/{name}.png", f"Gt/{name}.png" if forged else NEGATIVE])
        (tmp / "data.json").write_text("[\n" + ",\n".join(json.dumps(p) for p in pairs) + "\n]\n", encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta or {}, indent=1) + "\n", encoding="utf-8")
    return read_samples(out / "data.json")

