"""What a benchmark measures: one model build (registry name, named variant, constructor
options, small test configuration) at one input size and batch.

Also the two ways its compute is counted here: ``bench.profile`` (fvcore MACs, the papers'
convention; runs the model once, so results are cached per code version), and
``meta_gmacs`` (torch ``FlopCounterMode`` on the meta device: no memory, no compute, any
input size, which is how the scaling suite counts TransForensics at 1024 x 1024).
Importing this module loads no torch (a fresh process measuring the runtime uses ``Subject``).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED = 0
SUBJECT_SYNTAX = "MODEL[VARIANT]@SIZE (variant and size optional), e.g. transforensics[c3]@512"
_SUBJECT = re.compile(r"^(?P<model>[^\[\]@]+?)(?:\[(?P<variant>[^\[\]@]+)\])?(?:@(?P<size>[^@]+))?$")


@dataclass(frozen=True)
class Subject:
    model: str
    size: int
    batch: int = 1
    small: bool = False
    variant: str | None = None
    options: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def paper(cls, model: str, small: bool = False, batch: int = 1, variant: str | None = None,
              **options: Any) -> "Subject":
        """``model`` at its paper input size (the spec's small size when ``small``)."""
        from train.models import get_spec

        spec = get_spec(model)
        return cls(model, spec.small_size if small else spec.input_size, batch, small, variant,
                   tuple(sorted(options.items())))

    @classmethod
    def parse(cls, text: str, small: bool = False) -> "Subject":
        """A subject from ``MODEL[VARIANT]@SIZE`` (``SUBJECT_SYNTAX``): a registered model or
        import path, one of its named variants, a positive input size (default: the paper's, or
        the small configuration's with ``small``). ValueError, in one line, for anything else."""
        from train.models import get_spec
        from train.models.external import model_argument

        found = _SUBJECT.match(text.strip())
        if not found:
            raise ValueError(f"{text!r} is not {SUBJECT_SYNTAX}")
        try:
            model = model_argument(found["model"].strip())
        except Exception as err:  # argparse.ArgumentTypeError: the resolver's one line
            raise ValueError(f"{text!r}: {err}") from None
        variant = found["variant"] and found["variant"].strip().lower()
        if variant is not None and variant not in get_spec(model).variants:
            known = ", ".join(sorted(get_spec(model).variants)) or "none"
            raise ValueError(f"{text!r}: {model} has no variant {variant!r} (known: {known})")
        size = found["size"]
        if size is not None and not (size.strip().isdigit() and int(size) > 0):
            raise ValueError(f"{text!r}: the size after @ must be a positive integer, got {size!r}")
        base = cls.paper(model, small=small, variant=variant)
        return base if size is None else cls(model, int(size), 1, small, variant)

    @classmethod
    def parse_list(cls, text: str, small: bool = False) -> list["Subject"]:
        """A comma list of ``parse``'s specs, duplicates dropped; ValueError names the bad spec."""
        subjects = []
        for spec in (t for t in text.split(",") if t.strip()):
            try:
                subjects.append(cls.parse(spec, small=small))
            except ValueError as err:
                hint = "" if SUBJECT_SYNTAX in str(err) else f" (expected {SUBJECT_SYNTAX})"
                raise ValueError(f"{err}{hint}") from None
        return list(dict.fromkeys(subjects))

    @classmethod
    def measured(cls, models: list[str], subjects: list["Subject"], small: bool = False
                 ) -> tuple[list[str], list["Subject"]]:
        """What the core suites measure: (``models`` plus any model only ``subjects`` names,
        the subjects in model order), a model named in ``subjects`` measured as those, the
        others at their paper build and size."""
        models = list(models) + [m for m in dict.fromkeys(s.model for s in subjects) if m not in models]
        chosen = [s for m in models for s in ([t for t in subjects if t.model == m] or [cls.paper(m, small=small)])]
        return models, chosen

    @property
    def label(self) -> str:
        extra = ([self.variant] if self.variant else []) + [f"{k}={v}" for k, v in self.options]
        return self.model + (f"[{','.join(extra)}]" if extra else "")

    def build_options(self) -> dict[str, Any]:
        """Constructor options: the variant's, then ``options``, then the input size for
        models whose builder fixes it (an ``img_size`` argument, e.g. a ViT's position grid)."""
        from train.models import get_spec

        spec = get_spec(self.model)
        if self.variant and self.variant not in spec.variants:
            raise KeyError(f"model {self.model} has no variant {self.variant!r}; known: {sorted(spec.variants)}")
        opts = {**(spec.variants[self.variant] if self.variant else {}), **dict(self.options)}
        if "img_size" in inspect.signature(spec.builder).parameters and "img_size" not in opts:
            opts["img_size"] = self.size
        return opts

    def build(self):
        """The model in eval mode, seeded, on the CPU."""
        import torch

        from train.models import build_model

        torch.manual_seed(SEED)
        return build_model(self.model, small=self.small, **self.build_options()).eval()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Subject":
        return cls(d["model"], int(d["size"]), int(d.get("batch", 1)), bool(d.get("small", False)),
                   d.get("variant"), tuple(sorted(d.get("options", {}).items())))

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "label": self.label, "size": self.size, "batch": self.batch,
                "small": self.small, "variant": self.variant, "options": dict(self.options)}


def is_default_variant(model: str, variant: str) -> bool:
    """Whether ``variant``'s options equal the builder's defaults (it builds the model itself,
    e.g. TransForensics' C2 branch)."""
    from train.models import get_spec

    spec = get_spec(model)
    defaults = {k: p.default for k, p in inspect.signature(spec.builder).parameters.items()}
    return all(defaults.get(k, object()) == v for k, v in spec.variants[variant].items())


def meta_gmacs(subject: Subject) -> float:
    """GMACs of ``predict`` per batch, counted by torch's FlopCounterMode (halved to MACs)
    on the meta device with attention in its explicit MatMul form."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from train.models.blocks.attention import set_fused_attention

    model = subject.build()
    set_fused_attention(model, False)
    model = model.to("meta").requires_grad_(False)
    x = torch.empty(subject.batch, 3, subject.size, subject.size, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.predict(x)
    return counter.get_total_flops() / 2e9


def _profile_file(subject: Subject, cache_dir: str | Path, fingerprint: str) -> tuple[Path, str]:
    key = json.dumps({**subject.as_dict(), "batch": 1, "code": fingerprint}, sort_keys=True)
    return Path(cache_dir) / f"profile-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json", key


def _stored_profile(path: Path, key: str) -> dict[str, Any] | None:
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return stored["profile"]
    return None


def is_profile_cached(subject: Subject, cache_dir: str | Path, fingerprint: str) -> bool:
    return _stored_profile(*_profile_file(subject, cache_dir, fingerprint)) is not None


def cached_profile(subject: Subject, cache_dir: str | Path, fingerprint: str) -> dict[str, Any]:
    """``bench.profile.profile`` of the subject (params, fvcore and torch GMACs at batch 1),
    cached in ``cache_dir`` under the code fingerprint."""
    from .profile import profile

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    path, key = _profile_file(subject, cache_dir, fingerprint)
    stored = _stored_profile(path, key)
    if stored is not None:
        return stored
    opts = subject.build_options()
    prof = profile(subject.model, subject.size, subject.small, **opts).as_dict()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "profile": prof}))
    os.replace(tmp, path)
    return prof
