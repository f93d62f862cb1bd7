"""The model spec (DESIGN.md contract 1): one record per paper model.

Everything outside ``train.models`` (export, bench, the runtime sidecar) reads the input
size, normalisation, outputs and published figures from here instead of repeating them.
``get_spec`` / ``build_model`` also take any name ``train.models.external`` resolves: an
import path ``package.module:factory`` or an ``imlkit.models`` entry point.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CONTRACT_OUTPUTS = {
    "prob": "tamper probability per pixel, (N, 1, H, W) float32 in [0, 1], at the input size",
    "score": "image-level tamper score, (N, 1) float32 in [0, 1]",
}


@dataclass(frozen=True)
class PaperFigure:
    """An efficiency figure a paper publishes for a model, with where it comes from.
    ``gflops`` is the paper's "FLOPs" column (one multiply-add counted once, i.e. GMACs,
    unless ``note`` says otherwise)."""

    source: str
    input_size: int
    params_m: float | None = None
    gflops: float | None = None
    note: str = ""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    paper: str  # file in shared/papers
    builder: Callable[..., nn.Module]
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    training_outputs: dict[str, str] = field(default_factory=dict)
    figures: tuple[PaperFigure, ...] = ()
    small: dict[str, Any] = field(default_factory=dict)  # same topology, small widths (tests)
    small_size: int = 64
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # named option sets
    # how the output adapter reads a built model without ``predict`` (train.models.adapter)
    output_kind: str = "auto"  # auto | logits | probs

    @property
    def outputs(self) -> dict[str, str]:
        return dict(CONTRACT_OUTPUTS)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """The registered (paper) models."""
    return sorted(_REGISTRY)


def is_registered(name: str) -> bool:
    return ":" not in name and name.lower() in _REGISTRY


def registered_spec(name: str) -> ModelSpec:
    return _REGISTRY[name.lower()]


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model, an import path or an entry-point model; raises
    ``train.models.external.ModelError`` (a ValueError, one line) for anything else."""
    if is_registered(name):
        return registered_spec(name)
    from .external import resolve_model

    return resolve_model(name)


def build_model(name: str, small: bool = False, **options: Any) -> nn.Module:
    """Build a registered model. ``small=True`` applies the spec's small configuration
    (same topology, smaller widths) under ``options``; ``pretrained`` passes through to
    the backbone (default off: no downloads)."""
    spec = get_spec(name)
    kwargs = {**(spec.small if small else {}), **options}
    return spec.builder(**kwargs)
