"""An example of bringing your own model: a small forgery-localization network defined
outside the kit, named by import path.

    PYTHONPATH=examples python -m export.onnx --model my_model:build --size 256 --out artifacts/my_model.onnx
    python -m export.check artifacts/my_model.onnx --target trt10.3 --target trt10.16 --target trt11
    python -m runtime.predict artifacts/my_model.onnx photo.jpg --out masks/
    PYTHONPATH=examples python -m bench.profile --model my_model:build --size 256

``build`` returns a plain ``nn.Module`` whose ``forward(image)`` gives a tensor of logits
(N, 1, H/4, W/4): the kit's output adapter applies the sigmoid, resizes the map to the
input and scores the image by the map's maximum. ``--set width=32`` reaches ``build``.
Nothing here imports the kit.
"""
import torch.nn as nn


class TinyLocalizer(nn.Module):
    """Two strided conv stages (the encoder) and a 1x1 head, at a quarter of the input size."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(2 * width, 1, 1)

    def forward(self, image):
        return self.head(self.encoder(image))


def build(width: int = 16) -> nn.Module:
    return TinyLocalizer(width)
