"""Paper models and their registry: ``build_model(name, **options)``, ``list_models()``,
``get_spec(name)``. Importing this package registers every model. Models of other projects
come in by import path or entry point (``external.resolve_model``) through the output
adapter (``adapter.ExternalModel``)."""
from .registry import ModelSpec, PaperFigure, build_model, get_spec, list_models, register
from .external import ModelError, resolve_model

from . import m2sformer, transforensics, mgqformer, qmanet, diffforensics  # noqa: E402,F401  (register)

__all__ = ["ModelError", "ModelSpec", "PaperFigure", "build_model", "get_spec", "list_models", "register",
           "resolve_model"]
