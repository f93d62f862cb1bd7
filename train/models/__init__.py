"""Paper models and their registry: ``build_model(name, **options)``, ``list_models()``,
``get_spec(name)``. Importing this package registers every model."""
from .registry import ModelSpec, PaperFigure, build_model, get_spec, list_models, register

from . import m2sformer, transforensics, mgqformer, qmanet, diffforensics  # noqa: E402,F401  (register)

__all__ = ["ModelSpec", "PaperFigure", "build_model", "get_spec", "list_models", "register"]
