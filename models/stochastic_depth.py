"""Bayesian control flow: a residual network whose depth is a discrete latent variable.

Residual blocks ``H_l(h) = [l <= z] F_l(h) + h`` for ``l = 1..L``, so ``z`` is the number of
blocks that run, and a classifier head after every block gives

    p(z) = TruncGeom(z; lambda) ∝ exp(-lambda (z - 1)),  z in {1..L}   (uniform when lambda = 0)
    p(y | x, z) = Categorical(y | pi(x, z)),   pi(x, z) = softmax(head_z(H_z o ... o H_1(stem(x))))

with the network weights ``theta`` point estimates (MAP under ``theta ~ N(0, s^2)`` added as a
factor, or maximum likelihood when ``s`` is None). One forward pass yields ``pi(x, z)`` for every
``z`` (as in Depth Uncertainty Networks, Antoran et al. 2020), so the sum over ``z`` is exact and
costs one pass. At test time :func:`early_exit_logits` runs only the first ``z`` blocks of each
input (Figurnov et al. 2017, probabilistic adaptive computation time).

In code ``z`` is the Categorical index ``0..L-1`` (depth ``z + 1``); a relaxed estimator may
instead supply a point ``w`` of the simplex, read as the mixture ``sum_k w_k log pi(x, k)``
(:func:`select_depth`).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import nn


class HeadAtEveryDepth(nn.Module):
    """``h_0 = embed(x)``, ``h_l = h_{l-1} + F_l(h_{l-1})``, logits ``head_l(h_l)`` for every l:
    one pass gives ``p(y | x, z)`` for all depths z. Subclasses set ``stem``, ``blocks``,
    ``heads`` and ``embed``."""

    blocks: nn.ModuleList
    heads: nn.ModuleList

    @property
    def num_blocks(self) -> int:
        """L, the largest depth."""
        return len(self.blocks)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The residual stream before block 1."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at every depth, shape ``(B, L, K)``: one pass through all blocks."""
        h = self.embed(x)
        out = []
        for block, head in zip(self.blocks, self.heads, strict=True):
            h = h + block(h)
            out.append(head(h))
        return torch.stack(out, -2)


class ResidualMLP(HeadAtEveryDepth):
    """``stem -> L x (h + F_l(h))`` with ``F_l = Linear o ReLU o Linear o LayerNorm`` and a
    linear head after every block."""

    def __init__(self, in_dim: int, num_classes: int, blocks: int = 8, width: int = 64):
        super().__init__()
        self.stem = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)
            )
            for _ in range(blocks)
        )
        self.heads = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, num_classes)) for _ in range(blocks)
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's output (the residual stream before block 1)."""
        return self.stem(x)


class ResidualConvNet(HeadAtEveryDepth):
    """A small residual conv net: a 3x3 stem (stride 2 for images larger than 16 pixels), L
    pre-activation blocks ``h + conv(relu(conv(relu(h))))``, a pooled linear head after each."""

    def __init__(
        self, image_shape: tuple[int, int], num_classes: int, blocks: int = 8, width: int = 32
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        stride = 2 if min(self.image_shape) > 16 else 1
        self.stem = nn.Conv2d(1, width, 3, stride=stride, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
            )
            for _ in range(blocks)
        )
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)
            )
            for _ in range(blocks)
        )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's output; ``x`` is ``(B, H*W)`` or ``(B, H, W)``."""
        return self.stem(x.reshape(x.shape[0], 1, *self.image_shape))


def depth_prior_logits(blocks: int, penalty: float) -> torch.Tensor:
    """``log p(z)`` of the truncated geometric ``p(z) ∝ exp(-penalty (z - 1))`` on ``z = 1..L``
    (``penalty`` nats per block; 0 is uniform), normalized."""
    if blocks < 1:
        raise ValueError("blocks must be >= 1")
    logits = -penalty * torch.arange(blocks, dtype=torch.float32)
    return logits - logits.logsumexp(-1)


def select_depth(per_depth: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Read ``per_depth`` (``(B, L, K)``) at depth index ``z``.

    ``z`` integer, shape ``(..., B)`` (enumerated or sampled): ``per_depth[b, z_b]``, shape
    ``(..., B, K)``. ``z`` a float point of the simplex, shape ``(..., B, L)`` (a relaxed sample):
    ``sum_k z_bk per_depth[b, k]``, equal to the integer read-out at a vertex.
    """
    if z.is_floating_point():
        return (z.unsqueeze(-1) * per_depth).sum(-2)
    batch = torch.arange(per_depth.shape[0], device=per_depth.device)
    return Vindex(per_depth)[batch, z]


def gaussian_log_density(params, scale: float) -> torch.Tensor:
    """``sum_i log N(theta_i; 0, scale^2)`` over every entry of ``params``."""
    params = list(params)
    sq = sum((p**2).sum() for p in params)
    n = sum(p.numel() for p in params)
    return -0.5 * sq / scale**2 - n * (math.log(scale) + 0.5 * math.log(2 * math.pi))


class StochasticDepthModel(nn.Module):
    """``z ~ p(z)``, ``y | x, z ~ Categorical(pi(x, z))`` per datum; weights point-estimated.

    :param fixed_depth: when set, no latent: the network of exactly that many blocks (the
        fixed-depth baselines).
    :param weight_scale: ``s`` of the Gaussian weight prior (MAP); None for maximum likelihood.
    """

    def __init__(
        self,
        net: nn.Module,
        prior_logits: torch.Tensor,
        weight_scale: float | None = 1.0,
        fixed_depth: int | None = None,
    ):
        super().__init__()
        self.net = net
        self.register_buffer("prior_logits", prior_logits)
        self.weight_scale = weight_scale
        self.fixed_depth = fixed_depth

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The generative story; ``x`` is ``(N, D)``, ``y`` ``(N,)`` class labels."""
        pyro.module("net", self.net)
        if self.weight_scale is not None:
            pyro.factor(
                "weight_prior", gaussian_log_density(self.net.parameters(), self.weight_scale)
            )
        with pyro.plate("data", x.shape[0]) as idx:
            log_pi = self.net(x[idx]).log_softmax(-1)  # (B, L, K): every depth in one pass
            if self.fixed_depth is not None:
                logits = log_pi[:, self.fixed_depth - 1]
            else:
                z = pyro.sample("z", dist.Categorical(logits=self.prior_logits))
                logits = select_depth(log_pi, z)
            pyro.sample("y", dist.Categorical(logits=logits), obs=None if y is None else y[idx])


@torch.no_grad()
def early_exit_logits(net: nn.Module, x: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Logits of ``head_{depth_b}`` for each input, running only blocks ``1..depth_b`` of it.

    Inputs are sorted by depth (deepest first) so block ``l`` runs on a prefix of the batch: the
    work done is ``sum_b depth_b`` block evaluations instead of ``B * L``. ``depth`` in ``1..L``.
    """
    order = torch.argsort(depth, descending=True)
    counts = [
        int(c) for c in (depth[:, None] > torch.arange(net.num_blocks, device=depth.device)).sum(0)
    ]
    h = net.embed(x[order])
    out = None
    for l, (block, head) in enumerate(zip(net.blocks, net.heads, strict=True)):
        n = counts[l]
        if n == 0:
            break
        h = h[:n]
        h = h + block(h)
        m = counts[l + 1] if l + 1 < len(counts) else 0
        if m < n:
            logits = head(h[m:n])
            if out is None:
                out = logits.new_empty(x.shape[0], logits.shape[-1])
            out[m:n] = logits
    result = torch.empty_like(out)
    result[order] = out
    return result


@torch.no_grad()
def full_depth_logits(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of the full-depth network: all L blocks and the last head only."""
    h = net.embed(x)
    for block in net.blocks:
        h = h + block(h)
    return net.heads[-1](h)
