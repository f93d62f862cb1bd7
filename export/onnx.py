"""``python -m export.onnx``: export a registered model to ONNX with its JSON sidecar.

Steps: build the model (optionally load a checkpoint), apply the named rewrites, export
the contract outputs (prob, score) with the TorchScript exporter at opset 17, run the ONNX
checker and strict shape inference, lint the ops, check parity of the runtime's
onnxruntime backend against PyTorch on a fixed input, then write the sidecar. Files appear
only when every check passed (written beside the target, then renamed into place).

The TorchScript-based exporter (``dynamo=False``) is used because it emits opset 17
directly; the torch.export-based exporter starts at opset 18 and reaches 17 only through
the ONNX version converter.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import timm
import torch
import torch.nn as nn

from runtime.atomic import mkstemp
from runtime.sidecar import Sidecar, sha256_file, sidecar_path
from train.checkpoint import CheckpointError, load_checkpoint, load_weights
from train.config import parse_assignments
from train.models import build_model, get_spec, list_models

from .verify import LintReport, Parity, check_model, lint, parity
from .ort_attention import DOMAIN as ORT_DOMAIN, OP as ORT_OP, use_ort_attention
from .rewrites import apply_rewrites

DEFAULT_OPSET = 17
EXPORTER = "torch.onnx (TorchScript tracer, dynamo=False)"


ATTENTION_CHOICES = ("explicit", "ort")
ORT_ALLOWED = frozenset({(ORT_DOMAIN, ORT_OP)})


class ExportError(RuntimeError):
    """A failed export step; the message is one line for the user."""


class ContractWrapper(nn.Module):
    """The export contract: image -> (prob, score) through the model's ``predict``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.predict(image)


@dataclass
class ExportResult:
    onnx_path: Path
    sidecar_path: Path
    parity: Parity
    lint: LintReport
    rewrites: dict[str, int]
    seconds: float


def export_model(name: str, out: str | Path, *, checkpoint: str | Path | None = None, size: int | None = None,
                 batch: int | str = 1, opset: int = DEFAULT_OPSET, small: bool = False,
                 variant: str | None = None, options: dict[str, Any] | None = None,
                 tolerance: float = 1e-4, seed: int = 0, attention: str = "explicit") -> ExportResult:
    """Export ``name`` to ``out`` (+ sidecar) and verify it; raises ExportError.

    ``attention``: "explicit" (default) exports every attention as Mul -> MatMul -> Softmax ->
    MatMul with standard ops only, for TensorRT and any ONNX runtime; "ort" exports the core
    of our attention layers as onnxruntime's fused ``com.microsoft::MultiHeadAttention``
    (``export.ort_attention``): memory linear in the tokens on onnxruntime, not for TensorRT."""
    if attention not in ATTENTION_CHOICES:
        raise ExportError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}, got {attention!r}")
    start = time.perf_counter()
    spec = get_spec(name)
    if variant and variant not in spec.variants:
        raise ExportError(f"model {name} has no variant {variant!r}; known: {', '.join(sorted(spec.variants))}")
    opts = dict(spec.variants[variant]) if variant else {}
    opts.update(options or {})
    size = size or (spec.small_size if small else spec.input_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(seed)
    model = build_model(name, small=small, **opts).eval()
    ckpt_sha = "random-init"
    if checkpoint:
        try:
            load_weights(model, load_checkpoint(checkpoint)["model"], checkpoint)
        except CheckpointError as err:
            raise ExportError(str(err)) from None
        ckpt_sha = sha256_file(checkpoint)
    rewrites = apply_rewrites(model)
    if attention == "ort":
        rewrites["ort_attention"] = use_ort_attention(model)
    wrapper = ContractWrapper(model).eval()

    n = 1 if batch == "dynamic" else int(batch)
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, size, size, generator=gen)
    mean = torch.tensor(spec.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(spec.std).reshape(1, 3, 1, 1)
    image = (image - mean) / std
    with torch.no_grad():
        prob, score = wrapper(image)
    reference = {"prob": prob.numpy(), "score": score.numpy()}

    dynamic = {"image": {0: "batch"}, "prob": {0: "batch"}, "score": {0: "batch"}} if batch == "dynamic" else None
    fd, tmp_name = mkstemp(prefix=f".{out.name}.", suffix=".tmp.onnx", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes on shape arithmetic; parity is checked below
                torch.onnx.export(wrapper, (image,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=["image"], output_names=["prob", "score"],
                                  dynamic_axes=dynamic, do_constant_folding=True,
                                  custom_opsets={ORT_DOMAIN: 1} if attention == "ort" else None)
            graph = check_model(tmp)
        except Exception as err:  # the tracer, exporter, checker and shape inference raise many types
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ExportError(f"{out}: export failed at opset {opset}: {type(err).__name__}: {first}") from None
        report = lint(graph, opset, allowed_custom=ORT_ALLOWED if attention == "ort" else frozenset())
        if not report.ok:
            raise ExportError(f"{out}: graph lint failed: {report.problems[0]} ({len(report.problems)} problem(s))")
        result = parity(tmp, reference, image.numpy(), tolerance)
        if not result.passed:
            raise ExportError(f"{out}: parity failed: max |prob diff| {result.max_abs_prob:.3g}, "
                              f"|score diff| {result.max_abs_score:.3g} > tolerance {tolerance:g}")
        shape_n: int | str = "batch" if batch == "dynamic" else n
        side = Sidecar.from_dict({
            "schema": "iml-sidecar", "version": 1,
            "model": spec.name,
            "variant": {**({"variant": variant} if variant else {}), **opts, **({"small": True} if small else {})},
            "artifact": {"file": out.name, "format": "onnx", "sha256": sha256_file(tmp)},
            "input": {"name": "image", "shape": [shape_n, 3, size, size], "dtype": "float32",
                      "layout": "NCHW", "color": "RGB"},
            "preprocess": {"size": [size, size], "scale": 1.0 / 255.0, "mean": list(spec.mean),
                           "std": list(spec.std), "resize": "bilinear"},
            "outputs": [
                {"name": "prob", "shape": [shape_n, 1, size, size], "dtype": "float32",
                 "meaning": spec.outputs["prob"]},
                {"name": "score", "shape": [shape_n, 1], "dtype": "float32", "meaning": spec.outputs["score"]},
            ],
            "threshold": 0.5,
            "opset": opset,
            "exporter": EXPORTER,
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "timm": timm.__version__,
                         "python": sys.version.split()[0]},
            "checkpoint": {"path": str(checkpoint) if checkpoint else None, "sha256": ckpt_sha},
            "parity": {"reference": "torch", "max_abs_diff": max(result.max_abs_prob, result.max_abs_score),
                       "tolerance": tolerance, "passed": True},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "extra": {"rewrites": rewrites, "attention": attention,
                      "attention_patterns": report.attention_patterns,
                      "nodes": sum(report.op_counts.values())},
        })
        os.replace(tmp, out)
        side.save(sidecar_path(out))
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, sidecar_path(out), result, report, rewrites, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=list_models())
    parser.add_argument("--checkpoint", help="state dict to load (default: random init)")
    parser.add_argument("--out", help="ONNX path (default: artifacts/MODEL.onnx)")
    parser.add_argument("--size", type=int, help="input size (default: the paper's)")
    parser.add_argument("--batch", default="1", help="batch size N, or 'dynamic'")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--variant", help="a named option set of the model (e.g. TransForensics c3)")
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="model constructor option (repeatable)")
    parser.add_argument("--small", action="store_true", help="the small test configuration")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="parity tolerance (max abs diff)")
    parser.add_argument("--attention", choices=ATTENTION_CHOICES, default="explicit",
                        help="explicit: standard ops, for TensorRT and any runtime (default); ort: onnxruntime's "
                             "fused MultiHeadAttention for our attention layers (CPU deployments; not TensorRT)")
    args = parser.parse_args(argv)
    if args.batch != "dynamic" and not args.batch.isdigit():
        parser.error("--batch takes a positive integer or 'dynamic'")
    out = Path(args.out or f"artifacts/{args.model}.onnx")
    try:
        res = export_model(args.model, out, checkpoint=args.checkpoint, size=args.size, batch=args.batch,
                           opset=args.opset, small=args.small, variant=args.variant,
                           options=parse_assignments(args.options, "--set"), tolerance=args.tolerance,
                           attention=args.attention)
    except (ExportError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    ops = ", ".join(f"{k}x{v}" for k, v in sorted(res.lint.op_counts.items()))
    print(f"wrote {res.onnx_path} and {res.sidecar_path} in {res.seconds:.1f} s")
    print(f"rewrites: {res.rewrites}; attention patterns: {res.lint.attention_patterns}")
    print(f"ops (opset {res.lint.opset}): {ops}")
    print(f"parity vs torch: max |prob diff| {res.parity.max_abs_prob:.2e}, "
          f"max |score diff| {res.parity.max_abs_score:.2e} (tolerance {res.parity.tolerance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
