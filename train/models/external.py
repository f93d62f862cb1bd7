"""Models that are not registered here: by import path or from an installed package.

``resolve_model(name)`` is the one resolver behind every ``--model`` (export, the
benchmarks, training, evaluation); ``get_spec`` / ``build_model`` call it for any name the
registry does not hold. A name is one of:

- a registered model (``m2sformer``): its spec;
- ``package.module:factory``: ``factory`` imported from the module (``module:a.b`` for an
  attribute of an attribute), either a ``ModelSpec`` (used as it is, renamed to the path)
  or a callable (a function or a class) that builds the ``nn.Module``; ``--set KEY=VALUE``
  options are passed to it;
- ``imdlbenco:NAME``: a model of IMDL-BenCo's zoo by its registry name, where that optional
  package is installed (``train.models.imdlbenco``);
- a name an installed distribution registers in the ``imlkit.models`` entry-point group
  (``[project.entry-points."imlkit.models"] mynet = "mypkg.models:build"``), pointing at
  a factory or a ``ModelSpec`` in the same way.

A factory gets a default spec: input size ``DEFAULT_SIZE`` = 512 (IMDL-BenCo's training
and test size and QMA-Net's Table 10's; ``--size`` changes it), ImageNet mean / std
(``--mean``, ``--std``; what timm / torchvision backbones expect), no published figures.
A model whose spec's builder makes no ``predict`` method is wrapped in the output adapter
(``train.models.adapter``); the reserved option ``outputs=auto|logits|probs`` tells the
adapter how to read the model's outputs and is not passed to the factory.

Specs of import paths are kept for the process, so the ``--mean``/``--std`` given to a CLI
hold for every later ``get_spec`` of that name. Errors are ``ModelError`` (a ValueError)
with a one-line message.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.metadata
from typing import Any, Callable

import torch.nn as nn

from .adapter import OUTPUT_KINDS, ExternalModel
from .imdlbenco import PREFIX as ZOO_PREFIX, ZooError, zoo_factory
from .registry import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, is_registered, list_models, registered_spec

DEFAULT_SIZE = 512
ENTRY_POINT_GROUP = "imlkit.models"
PATH_FORM = "package.module:factory"
RESERVED_OPTIONS = ("outputs",)

_RESOLVED: dict[str, ModelSpec] = {}


class ModelError(ValueError):
    """A model name that cannot be resolved or built; the message is one line."""


def _first_line(err: BaseException) -> str:
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def entry_point_models() -> dict[str, importlib.metadata.EntryPoint]:
    """The models installed distributions register (``imlkit.models`` group), by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def known_names() -> list[str]:
    """Registered models and entry-point models, for messages."""
    return sorted(set(list_models()) | set(entry_point_models()))


def unknown_message(name: str) -> str:
    return (f"unknown model {name!r}; registered: {', '.join(known_names())}; "
            f"or name one by import path, {PATH_FORM}")


def import_target(path: str) -> Any:
    """The object ``package.module:attr`` names; ModelError when it cannot be had."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ModelError(f"model {path!r}: expected {PATH_FORM}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ModelError(f"model {path!r}: no module named {err.name!r} (is its folder on PYTHONPATH?)") from None
        raise ModelError(f"model {path!r}: importing {module_name} failed: {_first_line(err)}") from None
    except Exception as err:  # any error of the user's module at import time
        raise ModelError(f"model {path!r}: importing {module_name} failed: {_first_line(err)}") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            where = getattr(module, "__file__", None) or module_name
            raise ModelError(f"model {path!r}: {module_name} ({where}) has no attribute {attr!r}") from None
    return target


def _builder(factory: Callable[..., Any], name: str, outputs: str, keep_predict: bool = False) -> Callable[..., nn.Module]:
    """The spec builder of a factory: calls it with the options (less the reserved ones),
    checks it made a module and wraps it in the adapter; with ``keep_predict`` (a
    ModelSpec's builder) a model with a ``predict`` method is taken as following the
    contract already, unless ``outputs`` is given."""

    @functools.wraps(factory)  # inspect.signature(builder) shows the factory's parameters
    def build(**options: Any) -> nn.Module:
        explicit = options.pop("outputs", None)
        kind = outputs if explicit is None else explicit
        if kind not in OUTPUT_KINDS:
            raise ModelError(f"model {name!r}: outputs must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")
        try:
            net = factory(**options)
        except Exception as err:  # the user's factory: any error is reported in one line
            raise ModelError(f"model {name!r}: the factory raised {_first_line(err)}") from None
        if not isinstance(net, nn.Module):
            raise ModelError(f"model {name!r}: the factory returned {type(net).__name__}, not a torch.nn.Module")
        if keep_predict and explicit is None and callable(getattr(net, "predict", None)):
            return net
        return ExternalModel(net, outputs=kind, name=name)

    return build


def _spec_from_target(name: str, target: Any, size: int | None, mean, std) -> ModelSpec:
    if isinstance(target, ModelSpec):
        if mean is not None or std is not None:
            raise ModelError(f"--mean/--std: model {name!r} is a ModelSpec with its own normalisation")
        spec = dataclasses.replace(target, name=name, builder=_builder(target.builder, name, target.output_kind, True))
        return dataclasses.replace(spec, input_size=size, small_size=size) if size else spec
    if isinstance(target, nn.Module) or not callable(target):
        raise ModelError(f"model {name!r}: is a {type(target).__name__}, not a factory (a function or class "
                         "that builds the nn.Module) or a ModelSpec")
    size = size or DEFAULT_SIZE
    return ModelSpec(name=name, title=f"{name} (by import path)", paper="", builder=_builder(target, name, "auto"),
                     input_size=size, small_size=size, mean=tuple(mean or IMAGENET_MEAN),
                     std=tuple(std or IMAGENET_STD))


def resolve_model(name: str, *, size: int | None = None, mean=None, std=None) -> ModelSpec:
    """The spec of ``name`` (see the module docstring); ``size``/``mean``/``std`` set a
    default spec's input size and normalisation (``mean``/``std`` are refused for a model
    with its own spec). Raises ModelError."""
    if is_registered(name):
        if mean is not None or std is not None:
            raise ModelError(f"--mean/--std: model {name!r} has its own normalisation in its spec")
        return registered_spec(name)
    for option, value in (("--mean", mean), ("--std", std)):
        if value is not None and (len(value) != 3 or (option == "--std" and min(value) <= 0)):
            raise ModelError(f"{option}: expected three values (R,G,B){', each > 0' if option == '--std' else ''}")
    if size is not None and size < 1:
        raise ModelError(f"--size: expected a positive integer, got {size}")
    key = name
    if key in _RESOLVED and size is None and mean is None and std is None:
        return _RESOLVED[key]
    if name.startswith(ZOO_PREFIX):
        try:
            target = zoo_factory(name)
        except ZooError as err:
            raise ModelError(str(err)) from None
    elif ":" in name:
        target = import_target(name)
    else:
        eps = entry_point_models()
        if name not in eps:
            raise ModelError(unknown_message(name))
        try:
            target = eps[name].load()
        except Exception as err:  # the registering package's import errors
            raise ModelError(f"model {name!r}: loading entry point {eps[name].value} failed: "
                             f"{_first_line(err)}") from None
    spec = _spec_from_target(name, target, size, mean, std)
    _RESOLVED[key] = spec
    return spec


def file_stem(name: str) -> str:
    """``name`` as a file-name stem (``pkg.mod:build`` -> ``pkg.mod.build``)."""
    return name.replace(":", ".")


def model_argument(text: str) -> str:
    """argparse ``type`` of ``--model``: the name, once it resolves (imports the module)."""
    try:
        resolve_model(text)
    except ModelError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text if ":" in text or not is_registered(text) else text.lower()


def triple_argument(text: str) -> tuple[float, float, float]:
    """argparse ``type`` of ``--mean``/``--std``: ``R,G,B`` floats."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers R,G,B, got {text!r}")
    return values  # type: ignore[return-value]
