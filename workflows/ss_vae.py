"""Semi-supervised VAE M2 (Kingma, Rezende, Mohamed, Welling 2014): a few labels per class, the
rest of the training images unlabelled; the label is summed out where unknown (``enum``).

Reports the test accuracy of ``q(y | x)`` beside the same network trained by maximum
likelihood on the labelled points alone (weight decay, full batch), and draws class-conditional
samples: one row per class, one style ``z ~ p(z)`` per column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bayesdl.datasets import bundled as datasets
from bayesdl.guides.ss_vae import LabelEncoder, SSVAEGuide
from bayesdl.inference.errors import UserError
from bayesdl.inference.files import write_with
from bayesdl.models.ss_vae import Classifier, ConditionalDecoder, SSVAEModel
from bayesdl.models.vae import ACTIVATIONS
from bayesdl.workflows.base import ImageDataOptions, Problem, Workflow, image_data_source
from bayesdl.workflows.figures import save
from bayesdl.workflows.registry import register
from bayesdl.workflows.vae import _grid, _hidden


@dataclass(frozen=True)
class SSVAEOptions(ImageDataOptions):
    """The labelled subset, the networks and the classifier weight."""

    labels_per_class: int = field(
        default=10,
        metadata={"help": "labelled training images per class; the rest are unlabelled"},
    )
    label_seed: int = field(
        default=0, metadata={"help": "seed of the draw of the labelled images (default 0)"}
    )
    alpha: float = field(
        default=0.1,
        metadata={
            "help": "classifier weight alpha / N: alpha E_labelled[log q(y|x)] joins the ELBO "
            "(the paper's alpha = 0.1 N; default 0.1)"
        },
    )
    labelled_weight: float | None = field(
        default=None,
        metadata={
            "help": "weight w of every labelled point's term L(x, y) + alpha/N log q(y|x) "
            "(default N_unlabelled / N_labelled: the labelled set weighs as much as the "
            "unlabelled one; 1: the paper's J^alpha, each point once)"
        },
    )
    sup_batch_size: int = field(
        default=100,
        metadata={"help": "labelled images per step (default 100, or all when fewer)"},
    )
    latent_dim: int | None = field(
        default=None, metadata={"help": "size of the style z (default 8 on digits, 50 on MNIST)"}
    )
    hidden: str | None = field(
        default=None,
        metadata={"help": "hidden widths of every network (default 256 on digits, 500 on MNIST)"},
    )
    activation: str = field(
        default="softplus",
        metadata={"help": "hidden activation (default softplus)", "choices": sorted(ACTIVATIONS)},
    )
    baseline_weight_decay: float = field(
        default=1e-3,
        metadata={"help": "L2 weight decay of the labelled-only baseline classifier"},
    )
    baseline_steps: int = field(
        default=1000,
        metadata={"help": "full-batch Adam steps of the labelled-only baseline (default 1000)"},
    )


def pick_labelled(y: torch.Tensor, per_class: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` training points of every class, drawn with ``seed``."""
    if per_class < 1:
        raise UserError(f"--labels-per-class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    y = y.numpy()
    chosen = []
    for c in range(num_classes):
        idx = np.flatnonzero(y == c)
        if len(idx) < per_class:
            raise UserError(
                f"--labels-per-class {per_class} is more than the {len(idx)} training images "
                f"of class {c}"
            )
        chosen.append(rng.choice(idx, per_class, replace=False))
    return torch.from_numpy(np.sort(np.concatenate(chosen)))


def train_classifier(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, weight_decay: float
) -> nn.Module:
    """The baseline: maximum likelihood (cross-entropy) with L2 weight decay on the labelled
    points only, full-batch Adam (lr 1e-3) for ``steps`` steps. A reference computation like a
    scikit-learn fit, not a Bayesian model, so it does not go through the engine."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` whose most probable class under ``net`` is ``y``."""
    with torch.no_grad():
        return (net(x).argmax(-1) == y).double().mean().item()


@register
class SSVAE(Workflow):
    """Semi-supervised VAE M2: labels where known, an enumerated discrete latent elsewhere."""

    name = "ss-vae"
    report = "ss_vae"
    description = "semi-supervised VAE (M2): K labels per class, the label enumerated elsewhere"
    latent = "mixed"
    default_estimator = "enum"
    guides = ("amortized",)
    default_guide = "amortized"
    options = SSVAEOptions
    fit_defaults = {
        "steps": 3000,
        "lr": 3e-3,
        "batch_size": 100,
        "log_every": 100,
        "checkpoint_every": 1000,
    }
    tour_runs = [["--labels-per-class", "10", "--steps", "1000"]]

    # -- data and networks --------------------------------------------------------------------
    def _source(self) -> str:
        return image_data_source(self.model_options)

    def _sizes(self) -> tuple[int, tuple[int, ...]]:
        o, mnist = self.model_options, self._source() == "mnist"
        latent = o.latent_dim if o.latent_dim is not None else (50 if mnist else 8)
        if latent < 1:
            raise UserError(f"--latent-dim must be >= 1, got {latent}")
        hidden = _hidden(o.hidden if o.hidden is not None else ("500" if mnist else "256"))
        return latent, hidden

    def split(self) -> tuple[datasets.Split, torch.Tensor, torch.Tensor]:
        """The data split, the indices of the labelled and of the unlabelled training points."""
        o = self.model_options
        split = datasets.image_classification(self._source(), o.data_dir, o.split_seed)
        lo, hi = float(split.x_train.min()), float(split.x_train.max())
        if lo < 0 or hi > 1:
            raise UserError(f"ss-vae needs pixels in [0, 1], the data span [{lo:.3g}, {hi:.3g}]")
        k = split.num_classes or int(split.y_train.max()) + 1
        split.num_classes = k
        ys = torch.cat([split.y_train, split.y_test])
        if int(ys.min()) < 0 or int(ys.max()) >= k:
            raise UserError(
                f"ss-vae needs labels 0..{k - 1} (the training labels' range), the data hold "
                f"{int(ys.min())}..{int(ys.max())}"
            )
        labelled = pick_labelled(split.y_train, o.labels_per_class, k, o.label_seed)
        mask = torch.ones(len(split.x_train), dtype=torch.bool)
        mask[labelled] = False
        unlabelled = mask.nonzero().squeeze(-1)
        if len(unlabelled) == 0:
            raise UserError(
                f"--labels-per-class {o.labels_per_class} labels every training image: "
                "nothing is left unlabelled"
            )
        return split, labelled, unlabelled

    def classifier(self, data_dim: int, num_classes: int) -> Classifier:
        """A fresh ``q(y | x)`` network from ``--seed`` (the baseline starts from the same)."""
        _, hidden = self._sizes()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.engine.seed)
            return Classifier(data_dim, hidden, num_classes, self.model_options.activation)

    def build(self) -> Problem:
        o = self.model_options
        if self.settings.guide not in self.guides:
            raise UserError(
                f"ss-vae has guides {', '.join(self.guides)}, not {self.settings.guide!r}"
            )
        if self.engine.estimator != "enum":
            raise UserError("ss-vae sums out the unknown labels: it needs --estimator enum")
        if o.alpha < 0 or not math.isfinite(o.alpha):
            raise UserError(f"--alpha must be >= 0, got {o.alpha}")
        if o.labelled_weight is not None and not (
            o.labelled_weight > 0 and math.isfinite(o.labelled_weight)
        ):
            raise UserError(f"--labelled-weight must be > 0, got {o.labelled_weight}")
        if o.sup_batch_size < 1:
            raise UserError(f"--sup-batch-size must be >= 1, got {o.sup_batch_size}")
        split, labelled, unlabelled = self.split()
        latent, hidden = self._sizes()
        d, k = split.x_train.shape[1], split.num_classes
        n_sup, n = len(labelled), len(split.x_train)
        sup_batch = o.sup_batch_size if o.sup_batch_size < n_sup else None
        classifier = self.classifier(d, k)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.engine.seed + 1)
            decoder = ConditionalDecoder(k, latent, tuple(reversed(hidden)), d, o.activation)
            encoder = LabelEncoder(d, k, hidden, latent, o.activation)
        # alpha = o.alpha * N on E_labelled = (1 / N_sup) sum_labelled: per point alpha / N_sup
        w = self.labelled_weight(n_sup, len(unlabelled))
        model = SSVAEModel(decoder, classifier, latent, o.alpha * n / n_sup, sup_batch, w)
        guide = SSVAEGuide(encoder, classifier, sup_batch, w)
        data = {
            "x": split.x_train[unlabelled],
            "x_sup": split.x_train[labelled],
            "y_sup": split.y_train[labelled],
        }
        extra = {
            "x_test": split.x_test,
            "y_test": split.y_test,
            "image_shape": split.image_shape,
            "num_classes": k,
            "source": self._source(),
        }
        return Problem(model, guide, data, data_size=len(unlabelled), extra=extra)

    def labelled_weight(self, n_sup: int, n_unsup: int) -> float:
        """``w`` of every labelled point: ``--labelled-weight``, by default ``N_u / N_l``.

        With ``w = 1`` (the paper's objective) the labelled points are ``N_l / N`` of every
        step's loss (0.17 % at 100 MNIST labels); while the decoder ignores ``y`` the unlabelled
        term only pulls ``q(y | x)`` toward uniform, so the decoder never learns to use ``y``
        and the classifier ends below the labels-only one. ``N_u / N_l`` gives the labelled
        and the unlabelled set equal weight (the per-batch means of both, as a minibatch
        semi-supervised loss usually has)."""
        a = self.model_options.labelled_weight
        return float(a) if a is not None else n_unsup / n_sup

    # -- numbers ------------------------------------------------------------------------------
    def baseline(self, problem: Problem) -> Classifier:
        """The same network as ``q(y | x)``, from the same initial weights, trained on the
        labelled points alone (:func:`train_classifier`)."""
        o, x, y = self.model_options, problem.data["x_sup"], problem.data["y_sup"]
        if o.baseline_steps < 1:
            raise UserError(f"--baseline-steps must be >= 1, got {o.baseline_steps}")
        net = self.classifier(x.shape[1], problem.extra["num_classes"]).to(x.device)
        with torch.random.fork_rng(devices=[]):
            return train_classifier(net, x, y, o.baseline_steps, o.baseline_weight_decay)

    def _accuracies(self, problem: Problem) -> dict[str, Any]:
        x, y = problem.extra["x_test"], problem.extra["y_test"]
        dev = next(problem.guide.parameters()).device
        x, y = x.to(dev), y.to(dev)
        m2 = accuracy(problem.guide.classifier, x, y)
        base = accuracy(self.baseline(problem), x, y)
        return {
            "accuracy": m2,
            "error_percent": 100 * (1 - m2),
            "baseline_accuracy": base,
            "baseline_error_percent": 100 * (1 - base),
            "n_test": len(y),
        }

    def summarize(self, problem: Problem) -> dict[str, Any]:
        d = problem.data
        n_sup = len(d["x_sup"])
        latent, hidden = self._sizes()
        return {
            "data": {
                "source": problem.extra["source"],
                "n_labelled": n_sup,
                "n_unlabelled": len(d["x"]),
                "n_test": len(problem.extra["x_test"]),
                "dim": d["x"].shape[1],
                "image_shape": problem.extra["image_shape"],
            },
            "labels_per_class": self.model_options.labels_per_class,
            "alpha": self.model_options.alpha * (n_sup + len(d["x"])),
            "labelled_weight": self.labelled_weight(n_sup, len(d["x"])),
            "latent_dim": latent,
            "hidden": list(hidden),
            "test": self._accuracies(problem),
        }

    def evaluate(self, problem: Problem, out: Path) -> dict[str, Any]:
        r = self._accuracies(problem)
        return {f"test_{k}" if k != "n_test" else k: v for k, v in r.items()}

    # -- pictures -----------------------------------------------------------------------------
    def _draw(self, problem: Problem, seed: int, styles: int = 10) -> np.ndarray:
        """``E[x | y, z]`` for every class (rows) and ``styles`` draws ``z ~ p(z)`` (columns)."""
        decoder = problem.model.decoder
        dev = next(decoder.parameters()).device
        k, latent = problem.extra["num_classes"], problem.model.latent_dim
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = torch.randn(styles, latent, device=dev)
            y = torch.arange(k, device=dev)
            flat = decoder.mean(y[:, None], z[None])  # (K, styles, D)
        shape = problem.extra["image_shape"]
        if shape is None:
            side = math.isqrt(flat.shape[-1])
            shape = (side, side) if side * side == flat.shape[-1] else (1, flat.shape[-1])
        return flat.reshape(k * styles, *shape).cpu().numpy()

    def _class_figure(self, problem: Problem, out: Path) -> str:
        images = self._draw(problem, self.engine.seed)
        title = "E[x | y, z]: one row per class y, one style z ~ p(z) per column"
        return save(_grid(images, 10, title), out, "ss_vae_classes.png")

    def sample(self, problem: Problem, out: Path) -> dict[str, Any]:
        images = self._draw(problem, self.engine.seed)
        path = Path(out) / "ss_vae_samples.npz"
        write_with(path, lambda f: np.savez_compressed(f, classes=images))
        return {
            "figures": [self._class_figure(problem, out)],
            "arrays": "ss_vae_samples.npz",
            "shape.classes": list(images.shape),
        }
