"""The built-in networks of the ``bnn`` model, as plain ``torch.nn`` layers (made Bayesian by
:func:`bayesdl.bnn.bayesian`): an MLP over flattened inputs and Caffe's LeNet-5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Sequential):
    """``f(x) = W_L relu(... relu(W_1 x + b_1)) + b_L`` over flattened inputs, the widths
    ``sizes = (d_in, *hidden, classes)`` (LeNet-300-100: ``hidden = (300, 100)``).

    Laid out as ``nn.Sequential(Flatten, Linear, ReLU, ..., Linear)`` (so its parameters are
    ``1.weight``, ``3.weight``, ...), run without calling the shape-only modules."""

    def __init__(self, sizes: tuple[int, ...]):
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
        super().__init__(*layers)
        self.linear = [m for m in self if isinstance(m, nn.Linear)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        for layer in self.linear[:-1]:
            h = F.relu(layer(h))
        return self.linear[-1](h)


def lenet5(classes: int) -> nn.Sequential:
    """Caffe's LeNet-5 on 28 x 28 images: conv 20@5x5, pool, conv 50@5x5, pool, 500, classes."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 20, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500),
        nn.ReLU(),
        nn.Linear(500, classes),
    )
