"""``python -m export.onnx``: export a registered model to ONNX with its JSON sidecar.

``--model`` also takes ``package.module:factory`` (any PyTorch IML model, read through the
output adapter ``train.models.adapter``; ``--mean``/``--std`` for its normalisation) and the
names installed packages register (``train.models.external``).

Steps: build the model (optionally load a checkpoint), apply the named rewrites, export
the contract outputs (prob, score) with ``--exporter`` (``export.exporters``: torch.export
"dynamo" at opset 18, or the TorchScript tracer at opset 17), run the ONNX checker and
strict shape inference, lint the ops, check parity of the runtime's onnxruntime backend
against PyTorch on a fixed input, then write the sidecar (its ``exporter`` names which).
Files appear only when every check passed (written beside the target, then renamed into
place).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from train.cli import ArgumentParser, interrupts_in_one_line, one_line_errors, output_file

interrupts_in_one_line(__name__)  # before the heavy imports

import onnx
import timm
import torch
import torch.nn as nn

from runtime.atomic import mkstemp
from runtime.sidecar import Sidecar, sha256_file, sidecar_path
from train.checkpoint import (BuildError, CheckpointError, ModelBuild, check_size, load_checkpoint,
                              model_from_checkpoint)
from train.config import parse_assignments
from train.models import get_spec
from train.models.adapter import AdapterError, ExternalModel
from train.models.external import ModelError, file_stem, model_argument, resolve_model, triple_argument

from .verify import ExportParity, LintReport, Parity, check_model, export_parity, lint
from .exporters import (DEFAULT_EXPORTER, DEFAULT_OPSETS, EXPORTERS, LABELS, ExporterError, default_opset,
                        example_batch, export_graph)
from .ort_attention import CUSTOM_OP as ORT_CUSTOM_OP, DOMAIN as ORT_DOMAIN, OP as ORT_OP, use_ort_attention
from .rewrites import apply_rewrites



ATTENTION_CHOICES = ("explicit", "ort")
ORT_ALLOWED = frozenset({(ORT_DOMAIN, ORT_OP)})


class ExportError(RuntimeError):
    """A failed export step; the message is one line for the user."""


class ContractWrapper(nn.Module):
    """The export contract: image -> (prob, score) through the model's ``predict``; a
    model without one goes through the output adapter (``ExternalModel``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model if callable(getattr(model, "predict", None)) else ExternalModel(model)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.predict(image)


@dataclass
class ExportResult:
    onnx_path: Path
    sidecar_path: Path
    parity: Parity  # against the rewritten model that was traced
    lint: LintReport
    rewrites: dict[str, int]
    seconds: float
    parity_as_built: Parity | None = None  # against the model before the export rewrites


def export_model(name: str | None, out: str | Path, *, checkpoint: str | Path | None = None,
                 size: int | None = None, batch: int | str = 1, opset: int | None = None, small: bool = False,
                 variant: str | None = None, options: dict[str, Any] | None = None,
                 tolerance: float = 1e-4, seed: int = 0, attention: str = "explicit",
                 exporter: str = DEFAULT_EXPORTER) -> ExportResult:
    """Export ``name`` to ``out`` (+ sidecar) and verify it; raises ExportError.

    With a ``checkpoint`` the model is the one it records (``train.checkpoint``: name,
    small, variant, options, trained size); ``name``/``small``/``variant``/``options``/
    ``size`` may repeat or add to that, a contradiction is an error. ``name`` may be None
    then.

    ``exporter``: "dynamo" (torch.export) or "torchscript" (``export.exporters``); ``opset``
    defaults to the exporter's (18 for dynamo, 17 for TorchScript).

    ``attention``: "explicit" (default) exports every attention as Mul -> MatMul -> Softmax ->
    MatMul with standard ops only, for TensorRT and any ONNX runtime; "ort" exports the core
    of our attention layers as onnxruntime's fused ``com.microsoft::MultiHeadAttention``
    (``export.ort_attention``): memory linear in the tokens on onnxruntime, not for TensorRT."""
    if attention not in ATTENTION_CHOICES:
        raise ExportError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}, got {attention!r}")
    if batch != "dynamic" and (isinstance(batch, bool) or not str(batch).isdigit() or int(batch) < 1):
        raise ExportError(f"--batch {batch}: expected a positive integer or 'dynamic'")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    opset = opset or default_opset(exporter)
    start = time.perf_counter()
    torch.manual_seed(seed)
    try:
        if checkpoint:
            model, config = model_from_checkpoint(checkpoint, name, small=small or None, variant=variant,
                                                  options=options, size=size)
            build, size = ModelBuild.from_config(config), config["size"]
        else:
            if not name:
                raise ExportError("--model is required without --checkpoint")
            build = ModelBuild(name, small, variant, dict(options or {}))
            size = build.check(size)
            model = build.build(size)
    except (BuildError, CheckpointError, ModelError) as err:
        raise ExportError(str(err)) from None
    model.eval()
    spec = get_spec(build.name)
    opts = build.constructor_options(size)
    variant, small = build.variant, build.small
    ckpt_sha = sha256_file(checkpoint) if checkpoint else "random-init"
    out = Path(out)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # removed again on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ContractWrapper(model).eval()

    n = example_batch(exporter, batch)
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, size, size, generator=gen)
    mean = torch.tensor(spec.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(spec.std).reshape(1, 3, 1, 1)
    image = (image - mean) / std
    as_built = dict(zip(("prob", "score"), (t.numpy() for t in _forward(wrapper, image, build.name))))
    rewrites = apply_rewrites(model)  # the model as built is the first reference, the rewritten one the second
    if attention == "ort":
        rewrites["ort_attention"] = use_ort_attention(model)
    prob, score = _forward(wrapper, image, build.name)
    check_contract(build.name, prob, score, n, size)
    reference = {"prob": prob.numpy(), "score": score.numpy()}

    fd, tmp_name = mkstemp(prefix=f".{out.name}.", suffix=".tmp.onnx", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            export_graph(wrapper, image, tmp, exporter=exporter, opset=opset, dynamic_batch=batch == "dynamic",
                         custom_ops=(ORT_CUSTOM_OP,) if attention == "ort" else ())
        except ExporterError as err:
            raise ExportError(f"{out}: {err}") from None
        try:
            graph = check_model(tmp)
        except Exception as err:  # the checker and shape inference raise many types
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ExportError(f"{out}: export failed at opset {opset}: {type(err).__name__}: {first}") from None
        report = lint(graph, opset, allowed_custom=ORT_ALLOWED if attention == "ort" else frozenset())
        if not report.ok:
            raise ExportError(f"{out}: graph lint failed: {report.problems[0]} ({len(report.problems)} problem(s))")
        both: ExportParity = export_parity(tmp, as_built, reference, image.numpy(), tolerance)
        for what, result in (("the model as built", both.as_built), ("the rewritten model", both.rewritten)):
            if not result.passed:
                raise ExportError(f"{out}: parity failed against {what}: max |prob diff| {result.max_abs_prob:.3g}, "
                                  f"|score diff| {result.max_abs_score:.3g} > tolerance {tolerance:g}")
        result = both.rewritten
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
            "exporter": LABELS[exporter],
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "timm": timm.__version__,
                         "python": sys.version.split()[0]},
            "checkpoint": {"path": str(checkpoint) if checkpoint else None, "sha256": ckpt_sha},
            "parity": {"reference": "torch, as built and after the rewrites", "max_abs_diff": both.max_abs_diff,
                       "tolerance": tolerance, "passed": True},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "extra": {**adapter_note(wrapper.model), "rewrites": rewrites, "attention": attention,
                      "parity": both.as_dict(),
                      "attention_patterns": report.attention_patterns,
                      "nodes": sum(report.op_counts.values())},
        })
        os.replace(tmp, out)
        side.save(sidecar_path(out))
    finally:
        tmp.unlink(missing_ok=True)
        if not out.exists():
            for folder in created:  # deepest first; only the ones this call made, and only if empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return ExportResult(out, sidecar_path(out), result, report, rewrites, time.perf_counter() - start, both.as_built)


def _forward(wrapper: nn.Module, image: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(prob, score) of the wrapped model on ``image``; any error of the model's own forward
    (or of the output adapter) is one ExportError line."""
    try:
        with torch.no_grad():
            return wrapper(image)
    except AdapterError as err:
        raise ExportError(str(err)) from None
    except Exception as err:  # the model's own forward: any error, one line
        first = (str(err).strip().splitlines() or [""])[0]
        raise ExportError(f"{name}: forward failed on a {tuple(image.shape)} image: {type(err).__name__}: {first}") \
            from None


def check_contract(name: str, prob: torch.Tensor, score: torch.Tensor, n: int, size: int) -> None:
    """The contract's shapes and range on the reference outputs; ExportError otherwise."""
    if tuple(prob.shape) != (n, 1, size, size) or tuple(score.shape) != (n, 1):
        raise ExportError(f"{name}: predict gave prob {tuple(prob.shape)} and score {tuple(score.shape)}, "
                          f"not ({n}, 1, {size}, {size}) and ({n}, 1)")
    for what, t in (("prob", prob), ("score", score)):
        if not bool(torch.isfinite(t).all()) or float(t.min()) < 0.0 or float(t.max()) > 1.0:
            raise ExportError(f"{name}: {what} leaves [0, 1] (min {float(t.min()):.3g}, max {float(t.max()):.3g}); "
                              "if the model's outputs are logits, --set outputs=logits")


def adapter_note(model: nn.Module) -> dict[str, Any]:
    """What the sidecar records of a model read through the output adapter."""
    if not isinstance(model, ExternalModel):
        return {}
    return {"adapter": {"read": model.form, "outputs": model.outputs, "filled_inputs": model.extra_inputs,
                        "class": f"{type(model.net).__module__}.{type(model.net).__qualname__}"}}


def checkpoint_model_name(checkpoint: str | Path) -> str:
    """The model a checkpoint records (for the default output path)."""
    try:
        config = load_checkpoint(checkpoint).get("config") or {}
    except CheckpointError as err:
        raise ExportError(str(err)) from None
    if not config.get("model"):
        raise ExportError(f"{checkpoint}: holds no config (a bare state dict); pass --model "
                          "(and --small / --variant / --set as it was trained)")
    return str(config["model"])


RANDOM_WEIGHTS_WARNING = ("warning: no --checkpoint: exporting the untrained model (random weights); its masks "
                          "mean nothing (export a run's best.pt for a working model)")


@one_line_errors(ExportError, ValueError, OSError)
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m export.onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=model_argument,
                        help="registered name or package.module:factory (default: the checkpoint's)")
    parser.add_argument("--mean", type=triple_argument, help="R,G,B normalisation mean of a model without a spec "
                        "(default ImageNet's)")
    parser.add_argument("--std", type=triple_argument, help="R,G,B normalisation std (default ImageNet's)")
    parser.add_argument("--checkpoint", help="checkpoint of a run (best.pt) or a converted one: rebuilds the model "
                                             "it records; a bare state dict needs --model etc. (default: random init)")
    parser.add_argument("--out", help="ONNX path ending in .onnx (default: artifacts/MODEL.onnx)")
    parser.add_argument("--size", type=int, help="input size (default: the checkpoint's, else the paper's)")
    parser.add_argument("--batch", default="1", help="batch size N, or 'dynamic'")
    parser.add_argument("--exporter", choices=EXPORTERS, default=DEFAULT_EXPORTER,
                        help=f"dynamo: torch.export; torchscript: the TorchScript tracer (default {DEFAULT_EXPORTER})")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's, "
                        + ", ".join(f"{e} {o}" for e, o in DEFAULT_OPSETS.items()) + ")")
    parser.add_argument("--variant", help="a named option set of the model (e.g. TransForensics c3)")
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="model constructor option (repeatable)")
    parser.add_argument("--small", action="store_true", help="the small test configuration")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="parity tolerance (max abs diff)")
    parser.add_argument("--attention", choices=ATTENTION_CHOICES, default="explicit",
                        help="explicit: standard ops, for TensorRT and any runtime (default); ort: onnxruntime's "
                             "fused MultiHeadAttention for our attention layers (CPU deployments; not TensorRT)")
    args = parser.parse_args(argv)
    if args.batch != "dynamic" and not (args.batch.isdigit() and int(args.batch) >= 1):
        parser.error(f"argument --batch: expected a positive integer or 'dynamic', got {args.batch!r}")
    options = parse_assignments(args.options, "--set")
    if args.model or ((args.mean or args.std) and args.checkpoint):  # a checkpoint's model takes --mean/--std too
        resolve_model(args.model or checkpoint_model_name(args.checkpoint), mean=args.mean, std=args.std)
    check_size(args.size)
    if not args.checkpoint:
        if not args.model:
            parser.error("--model is required without --checkpoint")
        ModelBuild(args.model, args.small, args.variant, options).check(args.size)  # before the work
    name = args.model or (None if args.out else checkpoint_model_name(args.checkpoint))
    out = output_file(args.out or f"artifacts/{file_stem(name)}.onnx", suffix=".onnx")
    res = export_model(args.model, out, checkpoint=args.checkpoint, size=args.size, batch=args.batch,
                       opset=args.opset, small=args.small, variant=args.variant, options=options,
                       tolerance=args.tolerance, attention=args.attention, exporter=args.exporter)
    ops = ", ".join(f"{k}x{v}" for k, v in sorted(res.lint.op_counts.items()))
    print(f"wrote {res.onnx_path} and {res.sidecar_path} in {res.seconds:.1f} s")
    print(f"rewrites: {res.rewrites}; attention patterns: {res.lint.attention_patterns}")
    print(f"ops (opset {res.lint.opset}): {ops}")
    print(f"parity vs torch: max |prob diff| {res.parity.max_abs_prob:.2e}, "
          f"max |score diff| {res.parity.max_abs_score:.2e} (tolerance {res.parity.tolerance:g}); vs the model "
          f"before the rewrites: {res.parity_as_built.max_abs_prob:.2e}, {res.parity_as_built.max_abs_score:.2e}")
    if not args.checkpoint:
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
