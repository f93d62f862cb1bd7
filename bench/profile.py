"""``python -m bench.profile``: parameters and compute of a model at its paper input size,
beside the figures the papers publish.

Compute is counted twice, by maintained counters: fvcore's ``FlopCountAnalysis`` (one
multiply-add = one "flop", i.e. MACs: the convention of the IML codebases that publish a
counting script, and what the papers' "FLOPs" columns mean) and torch's
``FlopCounterMode`` (two per multiply-add; halved here to MACs). They differ where one
counts ops the other skips (fvcore counts normalisation and upsampling, torch does not).
FLOPs are reported as 2 x fvcore MACs. Attention stays fused (memory-friendly at large
inputs); fvcore gets a handle for ``scaled_dot_product_attention`` that counts its two
matrix products, as it counts them in the explicit MatMul form (tested).

``--model`` takes a registered name or ``package.module:factory`` (``train.models.external``;
``--set KEY=VALUE`` for the factory). A model read through the output adapter is broken
down by its own top-level children; for an IMDL-BenCo-form model the count includes the
loss its forward computes on the neutral targets (elementwise, a small share).
"""
from __future__ import annotations

import json
import sys
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from train.cli import ArgumentParser, interrupts_in_one_line, one_line_errors

interrupts_in_one_line(__name__)  # before the heavy imports

import torch
import torch.nn as nn

warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)

from fvcore.nn import FlopCountAnalysis  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from train.checkpoint import ModelBuild, check_size, model_from_checkpoint  # noqa: E402
from train.config import parse_assignments  # noqa: E402
from train.models import get_spec  # noqa: E402
from train.models.adapter import ExternalModel  # noqa: E402
from train.models.external import model_argument, resolve_model, triple_argument  # noqa: E402
from fvcore.nn.jit_handles import get_shape  # noqa: E402
from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_flop_count  # noqa: E402

# torch's counter has formulas for the CUDA SDPA kernels but not for the CPU flash kernel
# that F.scaled_dot_product_attention runs here; give it the same (FLOPs, 2 per MAC) formula.
_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _CPU_SDPA not in flop_registry:
    @register_flop_formula(_CPU_SDPA)
    def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)


class _Predict(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        return self.model.predict(x)


@dataclass
class Profile:
    model: str
    input_size: int
    params_m: float
    gmacs_fvcore: float
    gmacs_torch: float
    # top-level submodules: name -> (params M, fvcore GMACs); says which part holds the cost
    components: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def gflops(self) -> float:
        return 2.0 * self.gmacs_fvcore

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gflops": self.gflops}


def _sdpa_macs(inputs, outputs) -> int:
    """fvcore handle: MACs of softmax(Q K^T) V, i.e. N*M*d for Q K^T plus N*M*dv for the
    product with V, per batch and head (softmax and the scale are not counted, as in the
    explicit form)."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    lead = 1
    for dim in q[:-2]:
        lead *= dim
    n, d, m, dv = q[-2], q[-1], k[-2], v[-1]
    return lead * n * m * (d + dv)


def components_of(model: nn.Module) -> tuple[str, nn.Module]:
    """(module path prefix under the count's wrapper, module) whose children are the
    components: the model itself, or the network inside the output adapter."""
    return ("model.net.", model.net) if isinstance(model, ExternalModel) else ("model.", model)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, x: torch.Tensor, by_module: dict[str, float] | None = None) -> tuple[float, float]:
    """(fvcore MACs, torch FlopCounterMode MACs) of ``model.predict(x)``; fills
    ``by_module`` (when given) with fvcore MACs per top-level submodule of ``model``."""
    wrapper = _Predict(model).eval()
    # FlopCounterMode's module tracker hooks tensors that require grad; a parameter passed
    # as a module input (learned queries) trips it under no_grad, so freeze while counting.
    requires = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        return _count(wrapper, x, model, by_module)
    finally:
        for p, flag in zip(model.parameters(), requires):
            p.requires_grad_(flag)


def _count(wrapper: nn.Module, x: torch.Tensor, model: nn.Module,
           by_module: dict[str, float] | None) -> tuple[float, float]:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(wrapper, (x,)).set_op_handle(
            "aten::scaled_dot_product_attention", _sdpa_macs)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        fv = float(analysis.total())
        if by_module is not None:
            per = analysis.by_module()
            prefix, root = components_of(model)
            for name, _ in root.named_children():
                by_module[name] = float(per.get(f"{prefix}{name}", 0))
        with FlopCounterMode(display=False) as counter:
            wrapper(x)
    return fv, counter.get_total_flops() / 2.0


def profile(name: str, size: int | None = None, small: bool = False, variant: str | None = None,
            **options: Any) -> Profile:
    """Params and MACs of ``name`` (small configuration, named ``variant``, constructor
    ``options``) at ``size`` (default: the paper's), built as train and export build it
    (``train.checkpoint.ModelBuild``: a ViT's ``img_size`` follows ``size``)."""
    spec = get_spec(name)
    build = ModelBuild(spec.name, small, variant, options)
    size = build.check(size)
    torch.manual_seed(0)
    model = build.build(size, for_weights=True).eval()  # weights do not change the counts: nothing fetched
    return profile_model(model, spec.name, size)


def profile_model(model: torch.nn.Module, name: str, size: int) -> Profile:
    """Params and MACs of an already built ``model`` (registered as ``name``) at ``size``: a
    checkpoint's model is counted as loaded, without building it a second time."""
    per_module: dict[str, float] = {}
    fv, tc = count_macs(model, torch.rand(1, 3, size, size), per_module)
    components = {name: (count_params(child) / 1e6, per_module.get(name, 0.0) / 1e9)
                  for name, child in components_of(model)[1].named_children()}
    return Profile(name, size, count_params(model) / 1e6, fv / 1e9, tc / 1e9, components)


def _delta(ours: float, paper: float | None) -> str:
    if paper is None:
        return "-"
    return f"{paper:g} ({100.0 * (ours - paper) / paper:+.1f}%)"


def _gap(prof: Profile, fig, threshold: float = 0.10) -> str:
    """Name the component holding most of the cost where ours and a figure differ by more
    than ``threshold`` (relative)."""
    if not prof.components:
        return ""
    off = [(what, ours, theirs) for what, ours, theirs in
           (("params", prof.params_m, fig.params_m), ("GMACs", prof.gmacs_fvcore, fig.gflops))
           if theirs and abs(ours - theirs) / theirs > threshold]
    if not off:
        return ""
    parts = []
    for what, ours, theirs in off:
        index = 0 if what == "params" else 1
        name, values = max(prof.components.items(), key=lambda kv: kv[1][index])
        parts.append(f"{what} {ours:.2f} vs {theirs:g}: '{name}' alone holds {values[index]:.2f} "
                     f"({100 * values[index] / ours:.0f}% of ours)")
    return "gap: " + "; ".join(parts)


def format_profile(prof: Profile) -> str:
    spec = get_spec(prof.model)
    lines = [
        f"{spec.title} at {prof.input_size} x {prof.input_size}, batch 1",
        f"  params          {prof.params_m:8.2f} M",
        f"  GMACs (fvcore)  {prof.gmacs_fvcore:8.2f}    <- the papers' \"FLOPs\" convention",
        f"  GMACs (torch)   {prof.gmacs_torch:8.2f}    (FlopCounterMode / 2; skips norm/upsample ops)",
        f"  GFLOPs (2xMACs) {prof.gflops:8.2f}",
    ]
    if prof.components:
        lines.append("  by component (params M / fvcore GMACs; training-only parts show 0 GMACs):")
        ranked = sorted(prof.components.items(), key=lambda kv: (kv[1][1], kv[1][0]), reverse=True)
        for name, (params, gmacs) in ranked:
            if params or gmacs:
                lines.append(f"    {name:<24} {params:8.2f} M {gmacs:8.2f} G")
    figures = [f for f in spec.figures if f.input_size == prof.input_size]
    if figures:
        lines.append("  published figures (ours vs theirs, difference in % of theirs):")
        for fig in figures:
            if fig.params_m is None and fig.gflops is None:
                lines.append(f"    {fig.source}: {fig.note}")
                continue
            lines.append(f"    {fig.source}: params {_delta(prof.params_m, fig.params_m)} M, "
                         f"FLOPs {_delta(prof.gmacs_fvcore, fig.gflops)} G (as GMACs)"
                         + (f"  [{fig.note}]" if fig.note else ""))
            gap = _gap(prof, fig)
            if gap:
                lines.append(f"      {gap}")
    elif spec.figures:
        lines.append(f"  published figures are at other sizes: {sorted({f.input_size for f in spec.figures})}")
    else:
        lines.append("  no published efficiency figure for this model")
    return "\n".join(lines)


@one_line_errors(ValueError, OSError)
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=model_argument,
                        help="registered name or package.module:factory (default: the checkpoint's)")
    parser.add_argument("--checkpoint", help="profile the model a checkpoint records (small, variant, options, size)")
    parser.add_argument("--size", type=int, help="input size (default: the checkpoint's, else the paper's)")
    parser.add_argument("--variant", help="a named option set of the model")
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="model constructor option (repeatable)")
    parser.add_argument("--small", action="store_true", help="the small test configuration")
    parser.add_argument("--mean", type=triple_argument, help="R,G,B mean of a model without a spec (unused "
                        "by the count; accepted like export.onnx's)")
    parser.add_argument("--std", type=triple_argument, help="R,G,B std of a model without a spec")
    parser.add_argument("--json", action="store_true", help="print the profile as JSON")
    args = parser.parse_args(argv)
    options = parse_assignments(args.options, "--set")
    check_size(args.size)
    if args.model:
        resolve_model(args.model, mean=args.mean, std=args.std)
    loaded = None
    if args.checkpoint:  # the build and size it records, checked against the flags
        loaded, config = model_from_checkpoint(args.checkpoint, args.model, small=args.small or None,
                                               variant=args.variant, options=options, size=args.size)
        build, size = ModelBuild.from_config(config), config["size"]
    elif args.model:
        build, size = ModelBuild(args.model, args.small, args.variant, options), args.size
    else:
        parser.error("--model is required without --checkpoint")
    try:
        result = (profile_model(loaded, get_spec(build.name).name, size) if loaded is not None else
                  profile(build.name, size, build.small, build.variant, **build.options))
    except ValueError:  # ModelError, BuildError and the adapter's errors: one line already
        raise
    except Exception as err:  # the model's own forward under the counters' tracing: any error, one line
        first = (str(err).strip().splitlines() or [""])[0]
        raise ValueError(f"{build.name}: counting failed: {type(err).__name__}: {first}") from None
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_profile(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
