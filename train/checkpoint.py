"""Checkpoints: written atomically, read with a clear one-line error.

A training checkpoint is a dict: ``model`` (the state dict; ``export.onnx --checkpoint``
and ``train.evaluate`` read this key), ``config`` (``TrainConfig`` as a dict),
``state`` (epoch, batch within the epoch, global step, best validation F1) and, in
``last.pt`` only, ``optimizer``, ``scheduler`` and ``scaler`` for ``--resume``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .atomic import atomic_path
from .models import build_model, get_spec

FORMAT = "imlkit-train-1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model (one line)."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; a bare state dict is returned as ``{"model": state}``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(data).__name__}")
    if "model" not in data:
        data = {"model": data.get("state_dict", data)}
    return data


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: does not match the model ({first})") from None


def model_from_checkpoint(path: str | Path, name: str | None = None, small: bool | None = None,
                          options: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as (its saved config) and load the
    weights. ``name``/``small``/``options`` fill in for a bare state dict; a ``name``
    that contradicts the saved config is an error. Returns (model in eval mode, config)."""
    data = load_checkpoint(path)
    config = dict(data.get("config") or {})
    if name and config.get("model") and name.lower() != config["model"].lower():
        raise CheckpointError(f"{path}: trained as {config['model']!r}, not {name!r}")
    config.setdefault("model", name)
    if not config["model"]:
        raise CheckpointError(f"{path}: holds no config; pass the model name")
    if small is not None and "small" not in (data.get("config") or {}):
        config["small"] = small
    if options and not data.get("config"):
        config["options"] = options
    variant = config.get("variant")  # a named option set of the spec (e.g. train.convert's imports)
    variants = get_spec(config["model"]).variants
    if variant and variant not in variants:
        raise CheckpointError(f"{path}: model {config['model']!r} has no variant {variant!r}")
    options = {**(variants[variant] if variant else {}), **(config.get("options") or {})}
    model = build_model(config["model"], small=bool(config.get("small")), **options)
    load_weights(model, data["model"], path)
    return model.eval(), config
