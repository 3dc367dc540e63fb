"""``stochastic-depth``: a residual network whose depth z is a per-input discrete latent.

Fits the model of :mod:`models.stochastic_depth` with the amortized ``q(z | x)`` of
:mod:`guides.stochastic_depth` (weights point-estimated), then reports these test-time rules:
(a) early exit at the mode of ``q(z | x)``, running only those blocks; (b) the mode of
``p(y, z | x)`` by enumeration; (c) a sample ``(y, z) ~ p(y, z | x)`` (its depth marginal is the
prior ``p(z)``: y is not observed); (d) the predictive ``sum_z p(z) p(y | x, z)`` (and the same
sum under ``q(z | x)``), beside the full-depth read-out of the same network.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bayesdl.guides.stochastic_depth as sd_guides
import bayesdl.models.stochastic_depth as sd
import bayesdl.workflows.metrics as metrics
from bayesdl.datasets.bundled import Split, image_classification
from bayesdl.datasets.io import load_arrays
from bayesdl.inference.errors import UserError
from bayesdl.inference.estimators import capabilities, names_with
from bayesdl.workflows.base import ImageDataOptions, Problem, Workflow, image_data_source
from bayesdl.workflows.registry import register


def _depth_stats(depth: torch.Tensor, blocks: int) -> dict[str, Any]:
    """Mean depth (blocks run), histogram over 1..L and the fraction of blocks skipped."""
    hist = torch.bincount(depth.cpu() - 1, minlength=blocks).tolist()
    mean = depth.float().mean().item()
    return {"mean_depth": mean, "depth_histogram": hist, "fraction_skipped": 1.0 - mean / blocks}


def _time_per_example(fn, repeats: int = 15) -> float:
    """Least wall time of ``fn()`` over ``repeats`` calls after a warm-up call (the minimum is
    the least disturbed by other processes on a shared machine)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(min(times))


@dataclass(frozen=True)
class StochasticDepthOptions(ImageDataOptions):
    """The data, the residual network and the depth prior."""

    max_train: int | None = field(
        default=None, metadata={"help": "use only the first N training examples"}
    )
    arch: str = field(
        default="auto",
        metadata={
            "help": "residual MLP or conv net (auto: conv for mnist, else mlp)",
            "choices": ("auto", "mlp", "conv"),
        },
    )
    blocks: int = field(
        default=8, metadata={"help": "L, the number of residual blocks (default 8)"}
    )
    width: int | None = field(
        default=None,
        metadata={"help": "hidden units (mlp, default 64) or channels (conv, default 32)"},
    )
    depth_prior: str = field(
        default="geometric",
        metadata={
            "help": "p(z): truncated geometric (default) or uniform on 1..L",
            "choices": ("geometric", "uniform"),
        },
    )
    depth_penalty: float = field(
        default=0.5,
        metadata={"help": "lambda: p(z) ∝ exp(-lambda (z - 1)), nats per block (default 0.5)"},
    )
    weight_prior_scale: float = field(
        default=1.0,
        metadata={"help": "s of the MAP weight prior N(0, s^2); 0 for maximum likelihood"},
    )
    fixed_depth: int | None = field(
        default=None, metadata={"help": "no latent: a plain network of this many blocks"}
    )
    guide_hidden: int = field(default=32, metadata={"help": "hidden units of q(z | x)"})


@register
class StochasticDepth(Workflow):
    """``z ~ TruncGeom(lambda)``, ``y | x, z ~ Cat(pi(x, z))``, blocks ``[l <= z] F_l + id``."""

    name = "stochastic-depth"
    report = "stochastic_depth"
    description = "residual net whose depth is a discrete latent: early exit by amortized q(z | x)"
    latent = "discrete"
    default_estimator = "enum"
    guides = ("amortized",)
    default_guide = "amortized"
    options = StochasticDepthOptions
    fit_defaults = {
        "steps": 1000,
        "lr": 3e-3,
        "batch_size": 256,
        "log_every": 100,
        "max_plate_nesting": 1,
    }
    tour_runs = [["--steps", "600", "--depth-penalty", "0.01"]]

    # -- data and model -----------------------------------------------------------------------
    def _split(self) -> Split:
        o = self.model_options
        split = image_classification(image_data_source(o), o.data_dir, o.split_seed)
        if o.max_train is not None:
            if o.max_train < 1:
                raise UserError(f"--max-train must be >= 1, got {o.max_train}")
            split.x_train, split.y_train = (
                split.x_train[: o.max_train],
                split.y_train[: o.max_train],
            )
        return split

    def _arch(self, split: Split) -> str:
        arch = self.model_options.arch
        if arch == "auto":
            arch = "conv" if image_data_source(self.model_options) == "mnist" else "mlp"
        if arch == "conv" and split.image_shape is None:
            raise UserError("--arch conv needs image data (digits or mnist)")
        return arch

    def build(self) -> Problem:
        o = self.model_options
        if self.settings.guide not in self.guides:
            raise UserError(
                f"stochastic-depth has guide {', '.join(self.guides)}, not {self.settings.guide!r}"
            )
        if o.blocks < 1:
            raise UserError(f"--blocks must be >= 1, got {o.blocks}")
        if o.depth_penalty < 0:
            raise UserError(f"--depth-penalty must be >= 0, got {o.depth_penalty}")
        if o.weight_prior_scale < 0:
            raise UserError(f"--weight-prior-scale must be >= 0, got {o.weight_prior_scale}")
        if o.fixed_depth is not None and not 1 <= o.fixed_depth <= o.blocks:
            raise UserError(
                f"--fixed-depth must be in 1..--blocks ({o.blocks}), got {o.fixed_depth}"
            )
        caps = capabilities(self.engine.estimator)
        if caps.stateful and self.engine.particles > 1 and self.engine.vectorize_particles:
            raise UserError(
                f"--estimator {self.engine.estimator} with --particles > 1 needs "
                "--no-vectorize-particles (the per-input baseline is not broadcast over particles)"
            )
        if not caps.discrete and o.fixed_depth is None:
            *rest, last = names_with("discrete")
            raise UserError(f"depth is discrete: use --estimator {', '.join(rest)} or {last}")
        split = self._split()
        k = split.num_classes or int(split.y_train.max()) + 1
        torch.manual_seed(self.engine.seed)  # the networks' initial weights
        d = split.x_train.shape[1]
        if self._arch(split) == "conv":
            net = sd.ResidualConvNet(split.image_shape, k, o.blocks, o.width or 32)
        else:
            net = sd.ResidualMLP(d, k, o.blocks, o.width or 64)
        penalty = 0.0 if o.depth_prior == "uniform" else o.depth_penalty
        model = sd.StochasticDepthModel(
            net,
            sd.depth_prior_logits(o.blocks, penalty),
            weight_scale=o.weight_prior_scale or None,
            fixed_depth=o.fixed_depth,
        )
        guide = (
            sd_guides.no_latent
            if o.fixed_depth
            else sd_guides.AmortizedDepthGuide(d, o.blocks, o.guide_hidden)
        )
        return Problem(
            model,
            guide,
            {"x": split.x_train, "y": split.y_train},
            data_size=len(split.x_train),
            extra={
                "x_test": split.x_test,
                "y_test": split.y_test,
                "image_shape": split.image_shape,
            },
        )

    # -- test-time rules ----------------------------------------------------------------------
    def _q_depth(self, problem: Problem, x: torch.Tensor) -> torch.Tensor:
        """Depth (1..L) at the mode of q(z | x); the fixed depth when there is no latent."""
        if self.model_options.fixed_depth:
            return torch.full(
                (len(x),), self.model_options.fixed_depth, dtype=torch.long, device=x.device
            )
        return problem.guide.logits(x).argmax(-1) + 1

    @torch.no_grad()
    def rules(
        self, problem: Problem, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """Every test-time rule on inputs ``x``: prediction, probabilities, depth statistics
        and (given labels ``y``) accuracy and NLL, keyed by rule."""
        net, L = problem.model.net, self.model_options.blocks
        log_pi = net(x).log_softmax(-1)  # (B, L, K)
        log_prior = problem.model.prior_logits.to(x.device)
        out: dict[str, Any] = {}
        depth_q = self._q_depth(problem, x)
        exit_logits = sd.early_exit_logits(net, x, depth_q).log_softmax(-1)
        joint = log_prior[None, :, None] + log_pi  # log p(y, z | x)
        flat = joint.reshape(len(x), -1).argmax(-1)
        depth_joint, y_joint = flat // joint.shape[-1] + 1, flat % joint.shape[-1]
        batch = torch.arange(len(x), device=x.device)
        probs = {
            "early_exit_q_mode": exit_logits.exp(),
            "joint_mode": log_pi[batch, depth_joint - 1].exp(),
            "predictive_prior": (log_prior[None, :, None] + log_pi).logsumexp(1).exp(),
            "full_depth_readout": log_pi[:, -1].exp(),
        }
        # a sample of p(y, z | x) = p(z) p(y | x, z), reproducible from --seed
        gen = torch.Generator(device=x.device).manual_seed(self.engine.seed)
        drawn = torch.multinomial(joint.reshape(len(x), -1).exp(), 1, generator=gen).squeeze(-1)
        depth_sample, y_sample = drawn // joint.shape[-1] + 1, drawn % joint.shape[-1]
        probs["joint_sample"] = log_pi[batch, depth_sample - 1].exp()
        depths = {
            "early_exit_q_mode": depth_q,
            "joint_mode": depth_joint,
            "joint_sample": depth_sample,
        }
        if not self.model_options.fixed_depth:
            log_q = problem.guide.logits(x).log_softmax(-1)
            probs["predictive_q"] = (log_q[:, :, None] + log_pi).logsumexp(1).exp()
        for rule, p in probs.items():
            row: dict[str, Any] = {}
            if rule == "joint_mode":  # the joint argmax (= the argmax of p(y | x, z*))
                row["prediction"] = y_joint
            elif rule == "joint_sample":  # the sampled label, not the argmax at the sampled z
                row["prediction"] = y_sample
            else:
                row["prediction"] = p.argmax(-1)
            row["probs"] = p
            if y is not None:
                row["accuracy"] = (row["prediction"] == y).float().mean().item()
                row["nll"] = metrics.nll(p, y)
            if rule in depths:
                row.update(_depth_stats(depths[rule], L))
            else:
                row.update({"mean_depth": float(L), "fraction_skipped": 0.0})
            out[rule] = row
        return out

    def _timing(self, problem: Problem, x: torch.Tensor) -> dict[str, float]:
        """Measured seconds per example: early exit (q's mode + only those blocks) against the
        full-depth network (all blocks, last head), same inputs, one batch."""
        net = problem.model.net

        def early():
            with torch.no_grad():
                sd.early_exit_logits(net, x, self._q_depth(problem, x))

        def full():
            with torch.no_grad():
                sd.full_depth_logits(net, x)

        te, tf = _time_per_example(early), _time_per_example(full)
        return {
            "early_exit_s_per_example": te / len(x),
            "full_depth_s_per_example": tf / len(x),
            "speedup": tf / te,
            "batch": len(x),
            "threads": torch.get_num_threads(),
        }

    # -- reports ------------------------------------------------------------------------------
    def summarize(self, problem: Problem) -> dict[str, Any]:
        x, y = problem.extra["x_test"], problem.extra["y_test"]
        dev = next(problem.model.net.parameters()).device
        rules = self.rules(problem, x.to(dev), y.to(dev))
        return {
            "test": {
                r: {k: v for k, v in row.items() if k not in ("prediction", "probs")}
                for r, row in rules.items()
            },
            "blocks": self.model_options.blocks,
            "depth_penalty": 0.0
            if self.model_options.depth_prior == "uniform"
            else self.model_options.depth_penalty,
        }

    def evaluate(self, problem: Problem, out: Path) -> dict[str, Any]:
        result = self.summarize(problem)
        dev = next(problem.model.net.parameters()).device
        result["timing"] = self._timing(problem, problem.extra["x_test"].to(dev))
        return result

    def predict(self, problem: Problem, path: Path) -> dict[str, Any]:
        arrays = load_arrays(path)
        x = arrays.get("x", next(iter(arrays.values())))
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        d = problem.data["x"].shape[1]
        if x.shape[1] != d:
            raise UserError(f"inputs in {path} have {x.shape[1]} features; the model takes {d}")
        dev = next(problem.model.net.parameters()).device
        rules = self.rules(problem, torch.from_numpy(x).to(dev))
        ee = rules["early_exit_q_mode"]
        return {
            "early_exit_depth": self._q_depth(problem, torch.from_numpy(x).to(dev)).tolist(),
            "early_exit_class": ee["prediction"].tolist(),
            "early_exit_probs": ee["probs"].tolist(),
            "predictive_class": rules["predictive_prior"]["prediction"].tolist(),
            "predictive_probs": rules["predictive_prior"]["probs"].tolist(),
        }
