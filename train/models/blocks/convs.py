"""Convolutional building blocks shared by several paper models.

- ``conv_bn_act``: Conv2d -> BatchNorm2d -> activation, the unit of most CNN decoders
  (QMA-Net's DCM and edge heads, DiffForensics' UNet decoder).
- ``DnCNN``: the DnCNN residual extractor (Zhang et al., 2017) in the layout Noiseprint and
  Noiseprint++ use (TruFor: 17 layers, 64 channels, BN in the hidden layers, RGB in, one
  noise-residual channel out). Weights a user has (e.g. Noiseprint++ converted to this
  layout) load from a local file with ``DnCNN.load_weights``.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn


def conv_bn_act(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1,
                act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """Conv (no bias, "same" padding for odd kernels) -> BatchNorm -> activation
    (``act=None``: no activation)."""
    pad = dilation * (kernel // 2)
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, dilation=dilation,
                                         groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class DnCNN(nn.Module):
    """DnCNN: conv+ReLU, ``depth - 2`` x (conv+BN+ReLU), conv; all 3 x 3, ``width``
    channels. Its output is the (noise-)residual map itself, as Noiseprint++ uses it.

    The defaults (depth 17, width 64, 3 -> 1 channels) are Noiseprint++'s per TruFor
    (Guillaro et al., CVPR 2023). ``depth`` counts convolution layers."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, depth: int = 17, width: int = 64) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"DnCNN needs at least 2 layers, got {depth}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(conv_bn_act(width, width, 3))
        layers.append(nn.Conv2d(width, out_channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.depth, self.width = depth, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def load_weights(self, path: str | os.PathLike[str], strict: bool = True) -> None:
        """Load a state dict saved with ``torch.save`` from a local file. The dict may be
        nested under "state_dict" or "model", and its keys may carry a common prefix ending
        in "body." (e.g. "noiseprint.body.0.weight"); nothing is downloaded."""
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        own = {}
        for name, value in state.items():
            cut = name.find("body.")
            own[name[cut:] if cut >= 0 else name] = value
        self.load_state_dict(own, strict=strict)
