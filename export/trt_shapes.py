"""Optimization-profile shapes for TensorRT builds: read the ONNX input, parse ``--shapes``,
check the profile against the graph, and write it as trtexec flags or plain data.

``--shapes`` grammar: ``[NAME:]OPT`` or ``[NAME:]MIN,OPT,MAX``, each shape ``NxCxHxW``
(``1x3x256x256,4x3x256x256,8x3x256x256``), as trtexec's ``--optShapes`` alone or all three.
Without it, static input dims are kept, a dynamic batch gets 1 / ``opt_batch`` /
``max_batch`` and dynamic height/width take the sidecar's preprocess size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import onnx

Dims = tuple[int, ...]


class ShapeError(ValueError):
    """A profile that does not fit the graph; the message is one line."""


@dataclass(frozen=True)
class ShapeProfile:
    input: str
    min: Dims
    opt: Dims
    max: Dims
    graph_static: bool = False  # the graph fixes every input dim: no profile needed

    @property
    def dynamic(self) -> bool:
        return self.min != self.max

    @property
    def needs_profile(self) -> bool:
        """A dynamic graph input needs an optimization profile, even a fixed one."""
        return not self.graph_static

    @property
    def max_batch(self) -> int:
        return self.max[0]

    def trtexec_build_flags(self) -> list[str]:
        return [f"--minShapes={self.input}:{_fmt(self.min)}", f"--optShapes={self.input}:{_fmt(self.opt)}",
                f"--maxShapes={self.input}:{_fmt(self.max)}"]

    def trtexec_run_flag(self) -> str:
        """Inference shape for a benchmark run: the optimum of the profile."""
        return f"--shapes={self.input}:{_fmt(self.opt)}"

    def as_dict(self) -> dict[str, object]:
        return {"input": self.input, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def _fmt(dims: Dims) -> str:
    return "x".join(str(d) for d in dims)


def graph_input(model: onnx.ModelProto) -> tuple[str, tuple[int | str | None, ...]]:
    """The graph's single real input: its name and dims (int, or the symbolic name / None)."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ShapeError(f"expected one graph input, found {len(inputs)}: {', '.join(i.name for i in inputs)}")
    dims = []
    for d in inputs[0].type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or None)
    return inputs[0].name, tuple(dims)


def parse_dims(text: str) -> Dims:
    parts = text.strip().lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ShapeError(f"shape {text!r} is not NxCxHxW integers") from None
    if any(d < 1 for d in dims):
        raise ShapeError(f"shape {text!r} has a dimension < 1")
    return dims


def parse_shapes(spec: str | None, name: str, declared: Sequence[int | str | None], *,
                 size: tuple[int, int] | None = None, opt_batch: int = 1, max_batch: int = 8) -> ShapeProfile:
    """Build and check the profile for input ``name`` with ``declared`` dims (see module doc)."""
    if spec:
        given_name, sep, rest = spec.rpartition(":")
        if sep and given_name and given_name != name:
            raise ShapeError(f"--shapes names input {given_name!r}, the graph's input is {name!r}")
        shapes = [parse_dims(s) for s in (rest if sep else spec).split(",")]
        if len(shapes) == 1:
            lo = opt = hi = shapes[0]
        elif len(shapes) == 3:
            lo, opt, hi = shapes
        else:
            raise ShapeError(f"--shapes takes OPT or MIN,OPT,MAX, got {len(shapes)} shapes")
    else:
        if not 1 <= opt_batch <= max_batch:
            raise ShapeError(f"batch range 1 <= opt {opt_batch} <= max {max_batch} does not hold")
        lo, opt, hi = [], [], []
        for k, d in enumerate(declared):
            if isinstance(d, int):
                triple = (d, d, d)
            elif k == 0:
                triple = (1, opt_batch, max_batch)
            elif size is not None and k in (len(declared) - 2, len(declared) - 1):
                v = size[k - (len(declared) - 2)]
                triple = (v, v, v)
            else:
                raise ShapeError(f"input {name} dim {k} is dynamic ({d}): give --shapes")
            lo.append(triple[0]), opt.append(triple[1]), hi.append(triple[2])
        lo, opt, hi = tuple(lo), tuple(opt), tuple(hi)
    profile = ShapeProfile(name, lo, opt, hi, graph_static=all(isinstance(d, int) for d in declared))
    check_profile(profile, declared)
    return profile


def check_profile(profile: ShapeProfile, declared: Sequence[int | str | None]) -> None:
    rank = len(declared)
    for label, dims in (("min", profile.min), ("opt", profile.opt), ("max", profile.max)):
        if len(dims) != rank:
            raise ShapeError(f"{label} shape {_fmt(dims)} has rank {len(dims)}, input {profile.input} has rank {rank}")
    for k, d in enumerate(declared):
        lo, opt, hi = profile.min[k], profile.opt[k], profile.max[k]
        if not lo <= opt <= hi:
            raise ShapeError(f"dim {k}: min {lo} <= opt {opt} <= max {hi} does not hold")
        if isinstance(d, int) and not lo == opt == hi == d:
            raise ShapeError(f"dim {k} of input {profile.input} is fixed at {d} in the graph, "
                             f"the profile asks {lo}/{opt}/{hi} (export with --batch dynamic for a batch range)")


def batch_range_problem(declared: Sequence[int | str | None], opt_batch: int, max_batch: int) -> str | None:
    """Why a batch range cannot apply to a graph with a static batch, else None: the profile
    keeps the graph's batch, so asking for another range must be said, not dropped."""
    if not declared or not isinstance(declared[0], int):
        return None
    fixed = declared[0]
    if (opt_batch, max_batch) == (fixed, fixed):
        return None
    return (f"batch range opt {opt_batch} / max {max_batch} cannot apply: the ONNX has a static batch of {fixed}, "
            f"so the engine takes batch {fixed} only (export with --batch dynamic for a batch range)")
