"""``python -m train.evaluate``: localization and detection metrics of a trained
checkpoint on a dataset, optionally under the papers' distortions.

    python -m train.evaluate --model m2sformer --checkpoint runs/x/best.pt --data DATA \
        [--jpeg 90 70 50] [--blur 3 5 7] [--noise 5 10] [--resize 0.5 0.75] [--out DIR]

Each image is decoded, distorted (if asked), resized to the model's input size and run
through ``predict``; the probability map is resized back (bilinear) to the mask's own
size and scored there (``train.metrics``): pixel F1 at 0.5, best-threshold F1, AUC, IoU,
Dice, each per image averaged (IMDL-BenCo) and pooled over the dataset, and image-level
ACC / AUC / EER from the image score. The all-zero and all-one predictions are scored as
baselines. Writes ``metrics.json`` and overlay PNGs (prediction in red, ground-truth
outline in green) of the first ``--overlays`` images of the clean run to ``--out``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .cli import ArgumentParser, interrupts_in_one_line, one_line_errors, output_folder, positive_int

interrupts_in_one_line(__name__)  # before the heavy imports

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.segmentation import find_boundaries
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .atomic import atomic_path, write_json
from .checkpoint import model_from_checkpoint
from .config import check_device, parse_assignments
from .data.dataset import resize_image, to_tensor
from .data.distortions import Distortion
from .data.folders import Sample, check_samples, load_pair, read_samples
from .metrics import PIXEL_KEYS, PixelMetrics, image_metrics
from .models import get_spec
from .models.external import model_argument


class EvalDataset(Dataset):
    """Full-resolution pairs, the image distorted and resized to the model's input."""

    def __init__(self, samples: list[Sample], size: int, mean, std, distortion: Distortion, seed: int = 0) -> None:
        self.samples, self.size, self.mean, self.std = samples, size, mean, std
        self.distortion, self.seed = distortion, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = load_pair(self.samples[index])
        distorted = self.distortion.apply(image, seed=self.seed * 100_003 + index)
        return {"image": to_tensor(resize_image(distorted, self.size), self.mean, self.std), "mask": mask,
                "index": index}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"image": torch.stack([i["image"] for i in items]), "mask": [i["mask"] for i in items],
            "index": [i["index"] for i in items]}


def overlay_image(image: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """uint8 RGB: predicted forged pixels tinted red, ground-truth boundary in green."""
    out = image.astype(np.float32)
    out[pred] = 0.55 * out[pred] + 0.45 * np.array([255.0, 0.0, 0.0])
    out = np.rint(out).astype(np.uint8)
    out[find_boundaries(truth, mode="inner")] = (0, 255, 0)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, samples: list[Sample], size: int, mean, std,
             distortion: Distortion = Distortion(), device: str | torch.device = "cpu", batch_size: int = 8,
             workers: int = 0, overlay_dir: Path | None = None, overlays: int = 0, progress: bool = True,
             seed: int = 0) -> dict[str, Any]:
    """Metrics of ``model`` on ``samples`` under ``distortion`` (see the module docstring)."""
    model.eval().to(device)
    pixels, zeros, ones = PixelMetrics(), PixelMetrics(), PixelMetrics()
    scores, labels = [], []
    loader = DataLoader(EvalDataset(samples, size, mean, std, distortion, seed), batch_size=batch_size,
                        num_workers=workers, collate_fn=_collate)
    written = 0
    for batch in tqdm(loader, desc=f"evaluate ({distortion.label})", unit="batch", disable=not progress,
                      file=sys.stderr, leave=False):
        prob, score = model.predict(batch["image"].to(device))
        for j, mask in enumerate(batch["mask"]):
            p = F.interpolate(prob[j:j + 1].float(), size=mask.shape, mode="bilinear", align_corners=False)
            p = p[0, 0].clamp(0, 1).cpu().numpy()
            pixels.update(p, mask)
            zeros.update(np.zeros_like(p), mask)
            ones.update(np.ones_like(p), mask)
            scores.append(float(score[j].reshape(-1)[0]))
            labels.append(bool(mask.any()))
            if overlay_dir is not None and written < overlays:
                sample = samples[batch["index"][j]]
                image, _ = load_pair(sample)
                with atomic_path(overlay_dir / f"{sample.image.stem}_overlay.png", suffix=".png") as tmp:
                    Image.fromarray(overlay_image(image, p > pixels.threshold, mask)).save(tmp, format="PNG")
                written += 1
    return {"condition": distortion.label, "distortion": {"kind": distortion.kind, "value": distortion.value},
            "pixel": pixels.result(), "image": image_metrics(np.array(scores), np.array(labels)),
            "baselines": {"all_zero": zeros.result(), "all_one": ones.result()}}


LABELS = {"f1": "pixel F1 @0.5", "f1_best": "pixel F1 best threshold", "auc": "pixel AUC",
          "iou": "pixel IoU @0.5", "dice": "pixel Dice @0.5"}


def format_report(result: dict[str, Any]) -> str:
    px, im = result["pixel"], result["image"]
    lines = [f"condition: {result['condition']}  ({im['images']} images: {px['forged_images']} forged, "
             f"{px['authentic_images']} authentic; pixel metrics on forged images)",
             f"  {'metric':<26}{'per-image mean (IMDL-BenCo)':>30}{'dataset (pixels pooled)':>26}"]
    for key in PIXEL_KEYS:
        lines.append(f"  {LABELS[key]:<26}{px['per_image'][key]:>30.4f}{px['dataset'][key]:>26.4f}")
    for key, name in (("acc", "image ACC @0.5"), ("auc", "image AUC"), ("eer", "image EER")):
        lines.append(f"  {name:<26}{'(one decision per image)':>30}{im[key]:>26.4f}")
    z, o = result["baselines"]["all_zero"], result["baselines"]["all_one"]
    lines.append(f"  baselines, pixel F1 @0.5: all-zero {z['per_image']['f1']:.4f} / {z['dataset']['f1']:.4f}, "
                 f"all-one {o['per_image']['f1']:.4f} / {o['dataset']['f1']:.4f} (per-image / dataset)")
    if px["authentic_images"]:
        lines.append(f"  authentic images: {100 * px['authentic_fp_rate']:.2f}% of pixels flagged on average")
    return "\n".join(lines)


def conditions_from_args(args: argparse.Namespace) -> list[Distortion]:
    out = [Distortion()]
    for kind in ("jpeg", "blur", "noise", "resize"):
        out += [Distortion(kind, float(v)) for v in getattr(args, kind) or []]
    return out


@one_line_errors(ValueError, OSError)
def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m train.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="best.pt / last.pt of a run, a converted checkpoint "
                    "(both rebuild the model they record), or a bare state dict")
    ap.add_argument("--data", required=True, help="folder (Tp/, Gt/) or JSON list")
    ap.add_argument("--model", type=model_argument, help="registered name or package.module:factory (only "
                    "needed for a bare state dict; must match the checkpoint's otherwise)")
    ap.add_argument("--small", action="store_true", help="small configuration (only for a bare state dict)")
    ap.add_argument("--variant", help="named option set (only for a bare state dict)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="model option (only for a bare state dict)")
    ap.add_argument("--size", type=positive_int, help="input size (default: the checkpoint's)")
    ap.add_argument("--out", help="output folder (default: eval-<data> beside the checkpoint)")
    ap.add_argument("--overlays", type=int, default=8, help="overlay PNGs to write (clean condition)")
    ap.add_argument("--jpeg", type=int, nargs="+", metavar="Q", help="also evaluate after JPEG at quality Q")
    ap.add_argument("--blur", type=int, nargs="+", metavar="K", help="... after Gaussian blur, kernel K")
    ap.add_argument("--noise", type=float, nargs="+", metavar="SIGMA", help="... after Gaussian noise (0..255)")
    ap.add_argument("--resize", type=float, nargs="+", metavar="F", help="... after resizing by factor F")
    ap.add_argument("--batch-size", type=positive_int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0, help="seed of the noise distortion")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    check_device(args.device)
    conditions = conditions_from_args(args)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{Path(args.data).stem}"
    output_folder(out)
    model, config = model_from_checkpoint(args.checkpoint, args.model, small=args.small or None,
                                          variant=args.variant, options=parse_assignments(args.set, "--set"),
                                          size=args.size)
    spec = get_spec(config["model"])
    size = config["size"]
    samples = read_samples(args.data)
    check_samples(samples)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    results = []
    for i, cond in enumerate(conditions):
        res = evaluate(model, samples, size, spec.mean, spec.std, cond, device, args.batch_size, args.workers,
                       out / "overlays" if i == 0 else None, args.overlays, not args.quiet, args.seed)
        print(format_report(res), flush=True)
        results.append(res)
    report = {"model": config["model"], "build": {k: config[k] for k in ("model", "small", "variant", "options")},
              "checkpoint": str(args.checkpoint), "data": str(args.data), "size": size,
              "threshold": 0.5, "conventions": {
                  "per_image": "metric computed per forged image, then averaged over images (IMDL-BenCo)",
                  "dataset": "metric computed once over all pixels of all forged images",
                  "image": "from the model's image score; ACC at 0.5"},
              "conditions": results}
    write_json(out / "metrics.json", report)
    print(f"wrote {out}/metrics.json and {min(args.overlays, len(samples))} overlay PNG(s) in {out}/overlays/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
