"""imlkit runtime: lean inference for exported image-manipulation-localization models.

Its own distribution, ``imlkit-runtime`` (``runtime/pyproject.toml``): numpy, pillow,
jsonschema (sidecars are checked against ``sidecar.schema.json``) and a backend from an
extra, ``cpu`` (onnxruntime) or ``gpu-cu12`` / ``gpu-cu13`` (onnxruntime-gpu, TensorRT and
cuda-python for that CUDA major); tqdm, where installed, draws the CLI's progress bar. It
never imports torch or the train/export/bench packages. onnxruntime itself is imported only
when a model is opened, so ``import runtime`` stays cheap.

    from runtime import Predictor
    pred = Predictor("model.onnx", threads=4).predict("photo.jpg")
    pred.prob, pred.mask, pred.score
"""

from . import errors
from .errors import BackendError, ImageError, ModelError, RuntimeInputError, SidecarError
from .io import load_image, save_png
from .predictor import Prediction, Predictor
from .sidecar import Sidecar, sidecar_path

__all__ = [
    "Predictor",
    "Prediction",
    "load_image",
    "save_png",
    "Sidecar",
    "sidecar_path",
    "errors",
    "RuntimeInputError",
    "ImageError",
    "SidecarError",
    "ModelError",
    "BackendError",
]
