"""Fixed and constrained convolution filters used by forensic models.

- ``Sobel``: first and second derivatives (fixed 3 x 3 kernels), curvature and edge maps.
- ``SRMConv``: the three classic SRM high-pass residual kernels (Fridrich & Kodovsky 2012,
  as used by RGB-N, MVSS-Net, TruFor and QMA-Net).
- ``BayarConv``: Bayar & Stamm's constrained convolution (centre -1, the rest sums to 1).
  The constraint is computed from free parameters at every forward, so a constant-folded
  ONNX export holds one plain Conv with a constant weight; ``BayarConv.to_conv()`` also
  materialises it into an ``nn.Conv2d`` for export.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


SOBEL_PADDINGS = ("replicate", "zeros")


class Sobel(nn.Module):
    """Depthwise Sobel derivatives of a (N, C, H, W) map. ``padding``: "replicate" (the
    border continues the image: no gradient across the frame) or "zeros" (what
    ``F.conv2d(..., padding=1)`` does, e.g. M2SFormer's public code: a non-zero map gets a
    step at the frame)."""

    def __init__(self, padding: str = "replicate") -> None:
        super().__init__()
        if padding not in SOBEL_PADDINGS:
            raise ValueError(f"padding must be one of {SOBEL_PADDINGS}, got {padding!r}")
        self.padding = padding
        gx = torch.tensor(SOBEL_X)
        kernel = torch.stack([gx, gx.t()]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
        self.register_buffer("kernel", kernel, persistent=False)

    def gradients(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        mode = "replicate" if self.padding == "replicate" else "constant"
        y = F.conv2d(F.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode=mode), self.kernel.to(x.dtype))
        y = y.reshape(n, c, 2, h, w)
        return y[:, :, 0], y[:, :, 1]

    def magnitude(self, x: torch.Tensor) -> torch.Tensor:
        gx, gy = self.gradients(x)
        return torch.sqrt(gx * gx + gy * gy + 1e-12)

    def curvature(self, x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """Curvature of the level sets of ``x`` from Sobel first and second derivatives:
        k = (fx^2 fyy - 2 fx fy fxy + fy^2 fxx) / ((fx^2 + fy^2)^1.5 + eps).

        Always computed in at least float32, autocast off: in float16 ``eps`` rounds to 0
        and flat regions would give 0/0 = NaN."""
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        no_autocast = (torch.autocast(device_type=x.device.type, enabled=False)
                       if x.device.type in ("cpu", "cuda") else contextlib.nullcontext())  # e.g. meta tensors
        with no_autocast:
            fx, fy = self.gradients(x)
            fxx, fxy = self.gradients(fx)
            _, fyy = self.gradients(fy)
            num = fx * fx * fyy - 2.0 * fx * fy * fxy + fy * fy * fxx
            return num / ((fx * fx + fy * fy) ** 1.5 + eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.magnitude(x)


def srm_kernels() -> torch.Tensor:
    """The three 5 x 5 SRM residual kernels, shape (3, 5, 5)."""
    k1 = torch.zeros(5, 5)
    k1[1:4, 1:4] = torch.tensor([[-1.0, 2.0, -1.0], [2.0, -4.0, 2.0], [-1.0, 2.0, -1.0]])
    k1 /= 4.0
    k2 = torch.tensor(
        [
            [-1.0, 2.0, -2.0, 2.0, -1.0],
            [2.0, -6.0, 8.0, -6.0, 2.0],
            [-2.0, 8.0, -12.0, 8.0, -2.0],
            [2.0, -6.0, 8.0, -6.0, 2.0],
            [-1.0, 2.0, -2.0, 2.0, -1.0],
        ]
    ) / 12.0
    k3 = torch.zeros(5, 5)
    k3[2, 1:4] = torch.tensor([1.0, -2.0, 1.0]) / 2.0
    return torch.stack([k1, k2, k3])


class SRMConv(nn.Module):
    """Fixed SRM high-pass filtering: 3 output residual maps, each kernel applied to every
    input channel and summed (the RGB-N / MVSS-Net arrangement). Not trainable."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        weight = srm_kernels().unsqueeze(1).repeat(1, in_channels, 1, 1)
        self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, padding=2)


class BayarConv(nn.Module):
    """Constrained convolution (Bayar & Stamm 2018): per (out, in) kernel the centre tap is
    -1 and the other taps are normalised to sum to 1. Only the non-centre taps are free
    parameters; the constraint holds exactly at every forward, in training and export."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, kernel_size: int = 5,
                 padding: int | None = None) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError("BayarConv needs an odd kernel size")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.padding = kernel_size // 2 if padding is None else padding
        self.free = nn.Parameter(torch.rand(out_channels, in_channels, kernel_size * kernel_size - 1))

    def constrained_weight(self) -> torch.Tensor:
        k = self.kernel_size
        free = self.free / self.free.sum(dim=-1, keepdim=True)
        centre = (k * k) // 2
        minus_one = -torch.ones_like(free[..., :1])
        flat = torch.cat([free[..., :centre], minus_one, free[..., centre:]], dim=-1)
        return flat.reshape(self.out_channels, self.in_channels, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.constrained_weight(), padding=self.padding)

    def to_conv(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding the constrained weight (for export)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                         padding=self.padding, bias=False)
        with torch.no_grad():
            conv.weight.copy_(self.constrained_weight())
        return conv.to(self.free.device)
