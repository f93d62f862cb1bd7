"""The output adapter: a model that is not ours, seen through the export contract.

``ExternalModel(net)`` gives any PyTorch IML model the ``predict(image) -> (prob, score)``
of our models (``prob`` (N, 1, H, W) in [0, 1] at the input size, ``score`` (N, 1) in
[0, 1]), so export, the runtime sidecar, training and the benchmarks treat it like a
registered model. Forms of ``net``'s output that are taken:

- a tensor (N, 1, h, w): one map, sigmoid; (N, 2, h, w): two classes, softmax, class 1;
  (N, h, w) is read as (N, 1, h, w);
- a ``(prob, score)`` pair (tuple or list) of a map as above and a score of one value
  per image ((N,), (N, 1)) or two class values ((N, 2), softmax, class 1);
- the IMDL-BenCo form: a dict with ``pred_mask`` (a map as above) and ``pred_label``
  (a score as above, or None).

Probabilities or logits: told, never guessed from the values. ``outputs="auto"`` (the
default) reads a bare tensor as logits (what a network's last layer gives) and a pair or
a dict as probabilities (IMDL-BenCo's ``pred_mask`` / ``pred_label`` are probabilities);
``outputs="logits"`` or ``"probs"`` says it for every form (``--set outputs=logits``;
a ``ModelSpec`` field for packages that register a model). ``export.onnx`` refuses an
export whose outputs leave [0, 1], naming this option.

Without an image-level score (a bare map, ``pred_label`` None) the score is the map's
maximum, as IMDL-BenCo scores detection from a localization map (and MVSS-Net's global
max pooling does): one confidently forged pixel makes a forged image. A map of another
size than the input is resized to it bilinearly (``align_corners=False``).

Inputs: ``forward``'s signature is read (``inspect``). The image goes first; the training
inputs IMDL-BenCo models name get neutral values of the right shape: ``mask`` and
``edge_mask`` zeros (N, 1, H, W), ``label`` zeros (N,) (float, what their BCE takes) — also
where the parameter defaults to None, since their forwards compute the loss regardless
(ManTra-Net's ``mask=None`` fails otherwise) — and ``shape``, the input size (N, 2), only
where it has no default (None means "no crop" there). A model
that needs any other input (CAT-Net's JPEG ``DCT_coef`` and ``qtables``) is refused when
it is built, in one line naming them: the contract's one input is an RGB image.

Training (``forward``): the same outputs as a dict, and where ``net`` is of the IMDL-BenCo
form and the objective passes the real targets (``mask``, ``edge_mask``, ``label``), the
model's own ``backward_loss`` as ``loss`` (``train.losses``' ``contract`` objective).

The state dict is ``net``'s own (no prefix), so a checkpoint of the original project
loads into the adapted model and ours into the original.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

OUTPUT_KINDS = ("auto", "logits", "probs")
TRAINING_INPUTS = ("mask", "edge_mask", "label", "shape")
FORMS = ("a tensor (N,1,H,W) of logits or (N,2,H,W) of class logits, a (prob, score) pair, "
         "or an IMDL-BenCo dict with pred_mask and pred_label")


class AdapterError(ValueError):
    """A model whose inputs or outputs the contract cannot take; the message is one line."""


def call_plan(net: nn.Module, name: str = "model") -> list[str]:
    """The training inputs ``net.forward`` needs besides the image (names, in order);
    raises AdapterError naming any other input it needs."""
    try:
        params = list(inspect.signature(net.forward).parameters.values())
    except (TypeError, ValueError):
        return []  # no readable signature (a C++ module): the image alone
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise AdapterError(f"{name}: forward takes no positional image argument")
    named = [p for p in params[1:] if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    required = [p for p in named if p.default is inspect.Parameter.empty]
    other = [p.name for p in required if p.name not in TRAINING_INPUTS]
    if other:
        raise AdapterError(f"{name}: forward needs {', '.join(other)} besides the image; the export contract's one "
                           f"input is an RGB image (training inputs filled in: {', '.join(TRAINING_INPUTS)})")
    if any(p.kind == inspect.Parameter.POSITIONAL_ONLY for p in required):
        raise AdapterError(f"{name}: forward takes positional-only inputs besides the image")
    return [p.name for p in named if p.name in TRAINING_INPUTS
            and (p.default is inspect.Parameter.empty or (p.name != "shape" and p.default is None))]


def neutral_input(name: str, image: torch.Tensor) -> torch.Tensor:
    """The value a training input gets at inference (see the module docstring)."""
    n, _, h, w = image.shape
    if name in ("mask", "edge_mask"):
        return image.new_zeros(n, 1, h, w)
    if name == "label":
        return image.new_zeros(n)
    if name == "shape":
        return torch.tensor([[h, w]], device=image.device).expand(n, 2)
    raise KeyError(name)


def _map(t: Any, kind: str, size: tuple[int, int], where: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() not in (3, 4) or (t.dim() == 4 and t.shape[1] not in (1, 2)):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise AdapterError(f"{where} is {got}, not a map (N,1,H,W), (N,2,H,W) or (N,H,W); taken: {FORMS}")
    t = t.float()
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.shape[1] == 2:
        t = torch.softmax(t, dim=1)[:, 1:] if kind == "logits" else t[:, 1:]
    elif kind == "logits":
        t = torch.sigmoid(t)
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t


def _score(t: Any, kind: str, n: int, where: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.numel() not in (n, 2 * n):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise AdapterError(f"{where} is {got}, not a score per image ((N,), (N,1) or (N,2)); taken: {FORMS}")
    t = t.float().reshape(n, -1)
    if t.shape[1] == 2:
        return torch.softmax(t, dim=1)[:, 1:] if kind == "logits" else t[:, 1:]
    return torch.sigmoid(t) if kind == "logits" else t


def to_contract(out: Any, image: torch.Tensor, outputs: str = "auto",
                name: str = "model") -> tuple[torch.Tensor, torch.Tensor, str]:
    """(prob, score, form) of one output of ``net`` for ``image``; ``form`` names what was
    read (for the sidecar). Raises AdapterError for any other output."""
    if outputs not in OUTPUT_KINDS:
        raise AdapterError(f"{name}: outputs must be one of {', '.join(OUTPUT_KINDS)}, got {outputs!r}")
    n, size = image.shape[0], tuple(image.shape[-2:])
    if isinstance(out, torch.Tensor):
        kind, form, score = ("logits" if outputs == "auto" else outputs), "tensor", None
        prob = _map(out, kind, size, f"{name}: output")
    elif isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out):
        kind, form = ("probs" if outputs == "auto" else outputs), "pair"
        prob = _map(out[0], kind, size, f"{name}: output[0]")
        score = _score(out[1], kind, n, f"{name}: output[1]")
    elif isinstance(out, dict) and "pred_mask" in out:
        kind, form = ("probs" if outputs == "auto" else outputs), "imdl-benco"
        prob = _map(out["pred_mask"], kind, size, f"{name}: pred_mask")
        label = out.get("pred_label")
        score = None if label is None else _score(label, kind, n, f"{name}: pred_label")
    else:
        what = type(out).__name__ + (f" with keys {sorted(map(str, out))[:6]}" if isinstance(out, dict) else "")
        raise AdapterError(f"{name}: unsupported output ({what}); taken: {FORMS}")
    form = f"{form} ({kind})"
    if score is None:
        form += ", score = max of the map"
        score = prob.amax(dim=(2, 3))
    return prob, score, form


class ExternalModel(nn.Module):
    """``net`` with the contract's ``predict``; see the module docstring."""

    def __init__(self, net: nn.Module, outputs: str = "auto", name: str = "model") -> None:
        super().__init__()
        if outputs not in OUTPUT_KINDS:
            raise AdapterError(f"{name}: outputs must be one of {', '.join(OUTPUT_KINDS)}, got {outputs!r}")
        self.net = net
        self.outputs, self.label = outputs, name
        self.extra_inputs = call_plan(net, name)
        self.form: str | None = None  # what the last call read, e.g. "imdl-benco (probs)"
        self.register_state_dict_post_hook(ExternalModel._drop_prefix)
        self.register_load_state_dict_pre_hook(ExternalModel._add_prefix)

    def _run(self, image: torch.Tensor, targets: dict[str, torch.Tensor]) -> Any:
        kwargs = {k: targets[k] if k in targets else neutral_input(k, image) for k in self.extra_inputs}
        named = inspect.signature(self.net.forward).parameters if targets else {}
        kwargs.update({k: v for k, v in targets.items() if k in named and k not in kwargs})
        return self.net(image, **kwargs)

    def predict(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prob, score, self.form = to_contract(self._run(image, {}), image, self.outputs, self.label)
        return prob, score

    def forward(self, image: torch.Tensor, **targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training: {"prob", "score"} and, for a model that computes its own loss from the
        targets given (IMDL-BenCo's ``backward_loss``), "loss"."""
        out = self._run(image, targets)
        prob, score, self.form = to_contract(out, image, self.outputs, self.label)
        result = {"prob": prob, "score": score}
        if targets and isinstance(out, dict) and isinstance(out.get("backward_loss"), torch.Tensor):
            result["loss"] = out["backward_loss"]
        return result

    # the state dict is net's own (hooks: the same at any nesting, e.g. inside the export wrapper)
    @staticmethod
    def _drop_prefix(module, state_dict, prefix, local_metadata) -> None:
        inner = prefix + "net."
        items = [(prefix + k[len(inner):] if k.startswith(inner) else k, v) for k, v in state_dict.items()]
        state_dict.clear()
        state_dict.update(items)

    @staticmethod
    def _add_prefix(module, state_dict, prefix, *args) -> None:
        inner = prefix + "net."
        for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
            state_dict[inner + key[len(prefix):]] = state_dict.pop(key)
