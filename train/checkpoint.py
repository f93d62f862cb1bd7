"""Checkpoints: what built the model, written atomically, read back into the same model
with one-line errors.

A checkpoint is a dict written by ``save_checkpoint(path, payload)``:

- ``model``: the state dict (what ``export.onnx --checkpoint``, ``train.evaluate`` and
  ``bench.profile --checkpoint`` load);
- ``config``: what built the model (``ModelBuild``), at least
    ``model``   the registered name, e.g. ``"m2sformer"``;
    ``small``   True for the spec's small configuration;
    ``variant`` a named option set of the spec (``ModelSpec.variants``), or None;
    ``options`` constructor options on top of the variant (``--set KEY=VALUE``);
  and optionally ``size``, the input size it was trained at (None or missing: the spec's
  default for ``small``). A training run stores its whole ``TrainConfig`` (these keys and
  the schedule); a converted checkpoint stores just these, e.g. ``{"model": "m2sformer",
  "small": False, "variant": "authors", "options": {}}``;
- ``state`` (epoch, batch within the epoch, global step, best validation F1) and, in a
  run's ``last.pt`` only, ``optimizer``, ``scheduler`` and ``scaler`` for ``--resume``.

``model_from_checkpoint`` rebuilds exactly that model and loads the weights. Flags a user
gives (model name, ``--small``, ``--variant``, ``--set``) may repeat the config or add an
option it does not record, never contradict it; a bare state dict (no config) needs them.
Every problem is one ``CheckpointError`` line naming both sides, e.g. ``runs/x/best.pt:
trained as m2sformer small=True, not --model qmanet`` or, for weights that do not fit,
the first tensor with its shape in the checkpoint and in the model.

``ModelBuild`` also checks an input size (at least ``MIN_SIZE``; a multiple of the model's
``size_multiple`` where it has one, e.g. a ViT's patch) and sets the constructor option a
model names in ``input_size_option`` (MGQFormer's ViT ``img_size``) from it, so train,
export and profile build a ViT for the size they run at.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import torch
import torch.nn as nn

from .atomic import atomic_path
from .models import build_model, get_spec
from .models.external import RESERVED_OPTIONS, ModelError
from .models.registry import is_registered

FORMAT = "imlkit-train-1"
MIN_SIZE = 32  # one pixel at stride 32, the deepest encoder stride of the registered models


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the model (one line)."""


class BuildError(ValueError):
    """A model that cannot be built as asked: an unknown variant or option, a size it cannot
    take, pretrained weights that cannot be fetched (one line)."""


def _fmt(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


@dataclass(frozen=True)
class ModelBuild:
    """What builds a model: registered ``name``, ``small`` configuration, named ``variant``
    and constructor ``options`` on top of it (the keys of a checkpoint's ``config``)."""

    name: str
    small: bool = False
    variant: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ModelBuild":
        return cls(str(config["model"]), bool(config.get("small")), config.get("variant") or None,
                   dict(config.get("options") or {}))

    def to_config(self) -> dict[str, Any]:
        return {"model": self.name, "small": self.small, "variant": self.variant, "options": dict(self.options)}

    def describe(self) -> str:
        """``m2sformer small=True variant=c3 --set k=v``: the model in words, for messages."""
        words = [self.name, f"small={self.small}"]
        if self.variant:
            words.append(f"variant={self.variant}")
        words += [f"--set {k}={_fmt(v)}" for k, v in self.options.items()]
        return " ".join(words)

    def default_size(self) -> int:
        spec = get_spec(self.name)
        return spec.small_size if self.small else spec.input_size

    def _parameters(self) -> dict[str, inspect.Parameter] | None:
        """The builder's keyword parameters; None when it takes any (``**kwargs``)."""
        params = inspect.signature(get_spec(self.name).builder).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        return dict(params)

    def check(self, size: int | None = None) -> int:
        """Check the name, variant, option names and input size without building; returns
        the input size (``size`` or the default). Raises BuildError."""
        try:
            spec = get_spec(self.name)
        except (KeyError, ModelError) as err:
            raise BuildError(err.args[0]) from None
        if self.variant and self.variant not in spec.variants:
            known = ", ".join(sorted(spec.variants)) or "none"
            raise BuildError(f"--variant {self.variant}: {spec.name} has no such variant (known: {known})")
        params = self._parameters()
        if params is not None:
            for key, value in self.options.items():
                if key not in params and (is_registered(spec.name) or key not in RESERVED_OPTIONS):
                    raise BuildError(f"--set {key}={_fmt(value)}: {spec.name} takes no option {key!r} "
                                     f"(options: {', '.join(p for p in params if p != 'self')})")
        size = self.default_size() if size is None else check_size(size)
        option = getattr(spec.builder, "input_size_option", None)
        if option and option in self.options and self.options[option] != size:
            raise BuildError(f"--set {option}={_fmt(self.options[option])}: contradicts the input size {size} "
                             f"({spec.name}'s {option} follows --size; drop --set {option})")
        return size

    def constructor_options(self, size: int) -> dict[str, Any]:
        """The options ``build_model`` gets (over the small configuration, if any): the
        variant's, then ``options``, then the input-size option of the model, if it has one."""
        spec = get_spec(self.name)
        opts = {**(spec.variants[self.variant] if self.variant else {}), **self.options}
        option = getattr(spec.builder, "input_size_option", None)
        if option:
            opts[option] = size
        return opts

    def build(self, size: int | None = None, for_weights: bool = False) -> nn.Module:
        """The model for input ``size`` (default: the spec's). ``for_weights``: its weights
        come from a checkpoint next, so no pretrained backbone is fetched. Raises BuildError."""
        size = self.check(size)
        opts = self.constructor_options(size)
        if for_weights and "pretrained" in opts:
            opts["pretrained"] = False
        pretrained = opts.get("pretrained")
        try:
            with _quiet_hub() if pretrained else contextlib.nullcontext():
                model = build_model(self.name, small=self.small, **opts)
        except OSError as err:  # hub downloads (offline, no cache), transformers' from_pretrained
            if not pretrained:
                raise BuildError(f"{self.describe()}: cannot be built ({type(err).__name__}: {_first(err)})") from None
            raise BuildError(
                f"--set pretrained={_fmt(pretrained)}: {self.name}'s pretrained backbone weights could not be "
                f"downloaded ({type(err).__name__}; offline?). Fetch them once with network access (they are "
                "cached under HF_HOME, default ~/.cache/huggingface) or, for SegFormer/MiT encoders, pass a "
                "local folder: --set pretrained=PATH") from None
        except ModelError as err:  # an import-path model's own one-line error (the factory raised, ...)
            raise BuildError(str(err)) from None
        except (TypeError, ValueError, RuntimeError, AssertionError) as err:
            raise BuildError(f"{self.describe()}: cannot be built ({type(err).__name__}: {_first(err)})") from None
        multiple = getattr(model, "size_multiple", 1)
        if size % multiple:
            lower = max(multiple, size // multiple * multiple)
            raise BuildError(f"--size {size}: {self.name} takes multiples of {multiple} (its patch size), "
                             f"e.g. {lower} or {lower + multiple}")
        return model


def check_size(size: int | None) -> int | None:
    """An input size given by a user: None (the default) or an integer >= ``MIN_SIZE``."""
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < MIN_SIZE):
        raise BuildError(f"--size {size}: an input size must be an integer of at least {MIN_SIZE}")
    return size


def _first(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] if text else type(err).__name__


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """Hide the hub's per-retry warnings while fetching weights (the error says it all)."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


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
    if not isinstance(data["model"], dict):
        raise CheckpointError(f"{path}: its 'model' entry is a {type(data['model']).__name__}, not a state dict")
    return data


def _shape(t: Any) -> list[int] | str:
    return list(t.shape) if hasattr(t, "shape") else type(t).__name__


def weights_mismatch(model: nn.Module, state: dict[str, Any]) -> str | None:
    """Why ``state`` does not fit ``model``, naming the first tensor, or None if it fits."""
    own = model.state_dict()
    shapes = [k for k in own if k in state and _shape(state[k]) != _shape(own[k])]
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if shapes:
        k = shapes[0]
        return (f"{k} is {_shape(state[k])} in the checkpoint, {_shape(own[k])} in the model "
                f"({len(shapes)} tensor(s) differ in shape)")
    if missing:
        return f"the model's {missing[0]} is not in the checkpoint ({len(missing)} missing)"
    if extra:
        return f"the checkpoint's {extra[0]} is not in the model ({len(extra)} extra)"
    return None


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str | None = None,
                 hint: str = "") -> None:
    """Load ``state`` into ``model`` strictly; CheckpointError naming the first tensor that
    does not fit (``what``: the model in words, ``hint``: appended to the message)."""
    problem = weights_mismatch(model, state)
    if problem is None:
        try:
            model.load_state_dict(state, strict=True)
            return
        except RuntimeError as err:
            problem = _first(err)
    target = f"does not fit {what}" if what else "does not fit the model"
    raise CheckpointError(f"{path}: {target}: {problem}{hint}") from None


class LoadedModel(NamedTuple):
    """``model_from_checkpoint``'s result; unpacks as ``model, config``."""

    model: nn.Module
    config: dict[str, Any]  # the checkpoint's config with model/small/variant/options/size resolved

    @property
    def build(self) -> ModelBuild:
        return ModelBuild.from_config(self.config)

    @property
    def size(self) -> int:
        return int(self.config["size"])


def resolve_build(path: str | Path, data: dict[str, Any], name: str | None = None, small: bool | None = None,
                  variant: str | None = None, options: dict[str, Any] | None = None) -> tuple[ModelBuild, int | None]:
    """The ``ModelBuild`` a checkpoint (already loaded as ``data``) records, with the user's
    flags checked against it (see the module docstring), and the size it was trained at."""
    saved = data.get("config") or {}
    options = dict(options or {})
    if not saved.get("model"):
        if not name:
            raise CheckpointError(f"{path}: holds no config (a bare state dict); pass --model "
                                  "(and --small / --variant / --set as it was trained)")
        return ModelBuild(name, bool(small), variant, options), None
    try:
        recorded = ModelBuild.from_config(saved)
        recorded = replace(recorded, name=get_spec(recorded.name).name)
    except (KeyError, ModelError) as err:
        raise CheckpointError(f"{path}: trained as {saved.get('model')!r}, which this kit does not know "
                              f"({err.args[0] if err.args else err})") from None
    conflicts = []
    if name:
        try:
            given = get_spec(name).name
        except (KeyError, ModelError):
            given = name
        if given != recorded.name:
            conflicts.append(f"--model {name}")
    if small and not recorded.small:
        conflicts.append("--small")
    if variant and variant != recorded.variant:
        conflicts.append(f"--variant {variant}")
    conflicts += [f"--set {k}={_fmt(v)}" for k, v in options.items() if k in recorded.options
                  and recorded.options[k] != v]
    if conflicts:
        raise CheckpointError(f"{path}: trained as {recorded.describe()}, not {' '.join(conflicts)}")
    added = {k: v for k, v in options.items() if k not in recorded.options}
    return replace(recorded, options={**recorded.options, **added}), saved.get("size")


def model_from_checkpoint(path: str | Path, name: str | None = None, small: bool | None = None,
                          variant: str | None = None, options: dict[str, Any] | None = None,
                          size: int | None = None) -> LoadedModel:
    """Rebuild the model a checkpoint records (its ``config``; module docstring) for input
    ``size`` (default: the size it was trained at, else the spec's) and load the weights.
    ``name``/``small``/``variant``/``options`` are the user's flags: checked against the
    config, or used for a bare state dict. Returns (model in eval mode, resolved config)."""
    data = load_checkpoint(path)
    try:
        build, trained_size = resolve_build(path, data, name, small, variant, options)
        size = build.check(size or trained_size)
        model = build.build(size, for_weights=True)
    except BuildError as err:
        raise CheckpointError(f"{path}: {err}") from None
    hint = ""
    option = getattr(get_spec(build.name).builder, "input_size_option", None)
    if option and trained_size and size != trained_size:
        hint = f" (trained at {trained_size} px, and {build.name}'s weights fix its input size: use --size {trained_size})"
    load_weights(model, data["model"], path, what=f"{build.describe()} at {size} px", hint=hint)
    config = {**(data.get("config") or {}), **build.to_config(), "size": size}
    return LoadedModel(model.eval(), config)
