"""Bayesian neural network: ``y | x, theta ~ p(y | f_theta(x))``, ``theta ~ p(theta)``,
predicted by ``p(y | x, D) ~= 1/M sum_m p(y | x, theta_m)``, ``theta_m ~ q(theta)``.

Every run fits the network made Bayesian by :func:`bayesdl.bnn.bayesian`
(:mod:`bayesdl.workflows.bnn_net`: the built-in MLP / LeNet-5 as plain ``torch.nn`` layers or
the user's ``--net FILE.py:make_net``, every guide, any likelihood). Run folders made before
(bayesdl up to commit af75b74, on the layer classes) load, evaluate and predict through
:mod:`bayesdl.workflows.bnn_legacy`: their ``config.json`` has no ``stack`` entry, which
:attr:`BNN.record_defaults` reads as ``layers``; a new run records ``net``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import bayesdl.workflows.bayesian_net as anynet
import bayesdl.workflows.bnn_legacy as legacy
import bayesdl.workflows.bnn_net as net_stack
import bayesdl.workflows.metrics as metrics
from bayesdl.bnn import PRIORS
from bayesdl.datasets.io import load_arrays
from bayesdl.inference.errors import UserError
from bayesdl.models.bayesian_net import LIKELIHOODS
from bayesdl.workflows.base import ImageDataOptions, Problem, Workflow, image_data_source
from bayesdl.workflows.bnn_net import BUILT_IN_GUIDES
from bayesdl.workflows.figures import plt, save
from bayesdl.workflows.registry import register

if TYPE_CHECKING:
    from bayesdl.workflows.fit_options import FitOptions

#: guides only the any-network path (:func:`bayesdl.bnn.bayesian`) has
NEW_GUIDES = ("flipout", "mc-dropout", "dropconnect", "concrete-dropout", "gaussian-dropout")
OOD_MAX = 2000  # in- and out-of-domain inputs compared for the OOD check

# Molchanov, Ashukha, Vetrov (ICML 2017), table 1: (test accuracy, compression)
PAPER = {
    ("mlp", "sparse-vd"): (0.9808, 68.0),
    ("mlp", "mle"): (0.9836, 1.0),
    ("lenet5", "sparse-vd"): (0.9925, 280.0),
    ("lenet5", "mle"): (0.9920, 1.0),
}


@dataclass(frozen=True)
class BNNOptions(ImageDataOptions):
    """The data, the architecture and the guides' settings."""

    arch: str = field(
        default="mlp",
        metadata={"help": "mlp (default) or lenet5 (28x28 images)", "choices": ("mlp", "lenet5")},
    )
    hidden: str | None = field(
        default=None,
        metadata={
            "help": "MLP hidden widths (default 300,100 = LeNet-300-100 for mnist, 100 otherwise)"
        },
    )
    prior_scale: float | None = field(
        default=None,
        metadata={
            "help": "s of the N(0, s^2 / fan_in) prior of meanfield and map (default 30; "
            "10 with --net)"
        },
    )
    local_reparam: bool = field(
        default=True,
        metadata={"help": "meanfield: sample the weights (one latent site theta per step)"},
    )
    dropout: float = field(
        default=0.05,
        metadata={
            "help": "dropout, mc-dropout, dropconnect: probability p of dropping each layer input "
            "(weight); concrete-dropout, gaussian-dropout: its starting value (default 0.05)"
        },
    )
    alpha_per: str = field(
        default="layer",
        metadata={
            "help": "gaussian-dropout: one learned alpha per layer (default) or per weight",
            "choices": ("layer", "weight"),
        },
    )
    prune_threshold: float = field(
        default=3.0,
        metadata={"help": "sparse-vd: prune weights with log alpha >= this (default 3)"},
    )
    samples: int = field(
        default=100, metadata={"help": "posterior samples M of the predictive (default 100)"}
    )
    net: str | None = field(
        default=None,
        metadata={
            "help": "FILE.py:make_net -- your nn.Module (make_net() returns it), made Bayesian",
            "type": "code",
        },
    )
    likelihood: str = field(
        default="categorical",
        metadata={
            "help": "with --net: p(y | f) (default categorical)",
            "choices": tuple(LIKELIHOODS),
        },
    )
    prior: str | None = field(
        default=None,
        metadata={
            "help": "with --net: normal (default), scale-mixture, log-uniform (sparse-vd's)",
            "choices": PRIORS,
        },
    )
    noise: str = field(
        default="learned",
        metadata={"help": "gaussian likelihood: noise sd, a number, learned or predicted"},
    )
    exclude: str | None = field(
        default=None,
        metadata={"help": "with --net: modules kept deterministic (names or class names, a,b)"},
    )
    only: str | None = field(
        default=None,
        metadata={"help": "with --net: only these modules Bayesian (names or class names)"},
    )
    x_cols: str | None = field(
        default=None, metadata={"help": "with --net and a .csv --data: columns -> x"}
    )
    y_col: str | None = field(
        default=None, metadata={"help": "with --net and a .csv --data: column -> y"}
    )
    stack: str | None = field(
        default=None,
        metadata={
            "help": "recorded, not chosen: net (every run since issue 20), or layers (a run "
            "made before, on the layer classes: it loads, evaluates and predicts)",
            "choices": ("layers", "net"),
            "hidden": True,
        },
    )


@register
class BNN(Workflow):
    """Bayesian neural network for classification (MLP or LeNet-5)."""

    name = "bnn"
    description = (
        "Bayesian neural network (any nn.Module with --net): mean field, Flipout, dropout "
        "(MC, DropConnect, concrete, Gaussian), sparse VD, MAP, MLE"
    )
    latent = "continuous"
    default_estimator = "reparam"
    guides = ("meanfield", "dropout", "sparse-vd", "map", "mle", *NEW_GUIDES)
    default_guide = "meanfield"
    options = BNNOptions
    #: runs made before ``stack`` was recorded were on the layer classes (bnn_legacy)
    record_defaults = {"stack": "layers"}
    fit_defaults = {
        "steps": 3000,
        "lr": 1e-2,
        "batch_size": 128,
        "kl_warmup": 500,
        "log_every": 100,
        "checkpoint_every": 5000,
    }
    tour_runs = [
        ["--guide", g, "--steps", "2000"]
        for g in ("meanfield", "gaussian-dropout", "sparse-vd", "mle")
    ]

    # -- building ------------------------------------------------------------------------------

    @property
    def prior_scale(self) -> float:
        """``--prior-scale``, else 10 for a ``--net`` of the user's, else 30."""
        scale = self.model_options.prior_scale
        if scale is None:
            return 10.0 if self.model_options.net else 30.0
        return scale

    def derive(self) -> FitOptions:
        """The options with the prior scale resolved and ``stack="net"`` (``config.json``
        records both; a folder without ``stack`` is one of the layer classes')."""
        stack = self.stack if self.settings.guide in BUILT_IN_GUIDES else None
        return self.settings.replace(prior_scale=self.prior_scale, stack=stack)

    @property
    def hidden(self) -> str:
        """The MLP's hidden widths: ``--hidden``, else LeNet-300-100 on MNIST, else 100."""
        if self.model_options.hidden:
            return self.model_options.hidden
        return "300,100" if image_data_source(self.model_options) == "mnist" else "100"

    @property
    def stack(self) -> str:
        """``net`` (:func:`bayesdl.bnn.bayesian`), or ``layers`` for a run folder made on the
        layer classes before issue 20 (:mod:`bayesdl.workflows.bnn_legacy`; built-in guides
        only)."""
        o = self.model_options
        legacy_run = o.stack == "layers" and self.settings.guide in BUILT_IN_GUIDES
        return "layers" if legacy_run and not o.net else "net"

    def _net(self) -> bool:
        """Whether this run goes through :func:`bayesdl.bnn.bayesian`."""
        return self.stack == "net"

    def build(self) -> Problem:
        o = self.model_options
        if self.settings.guide not in self.guides:
            raise UserError(f"bnn has guides {', '.join(self.guides)}, not {self.settings.guide!r}")
        if o.samples < 1:
            raise UserError(f"--samples must be >= 1, got {o.samples}")
        if self._net():
            return net_stack.build(self)
        return legacy.build(self)

    @staticmethod
    def _any_net(problem: Problem) -> bool:
        """Whether the summary is the any-network one (``--net``, or a guide only
        :func:`bayesdl.bnn.bayesian` has); the built-in guides report as the layers do."""
        return bool(problem.extra.get("net")) and not problem.extra.get("built_in")

    def _classifies(self, problem: Problem) -> bool:
        return not problem.extra.get("net") or problem.model.likelihood.classification

    # -- prediction ----------------------------------------------------------------------------

    @torch.no_grad()
    def probs(
        self, problem: Problem, x: torch.Tensor, samples: int | None = None, mean_net: bool = False
    ) -> torch.Tensor:
        """``p(y | x, theta_m)`` for ``m = 1..M``, shape ``(M, N, K)``; ``mean_net``: the
        network at the mean of ``q`` (pruned for sparse VD), ``M = 1``."""
        if problem.extra.get("net"):
            return self._net_probs(problem, x, samples, mean_net)
        point = mean_net or self.settings.guide in ("map", "mle")
        m = 1 if point else (samples or self.model_options.samples)
        return legacy.probs(problem, x, m, mean_net)

    def _net_outputs(
        self, problem: Problem, x: torch.Tensor, samples: int | None = None, mean_net: bool = False
    ) -> torch.Tensor:
        """Network outputs ``[M, N, *out]`` of the any-network path."""
        return net_stack.outputs(self, problem, x, samples, mean_net)

    def _net_probs(self, problem, x, samples=None, mean_net=False) -> torch.Tensor:
        return problem.model.likelihood.probs(self._net_outputs(problem, x, samples, mean_net))

    def sparsity(self, problem: Problem) -> dict[str, Any] | None:
        """Per-layer (per parameter with ``--net``) and total fraction of pruned weights and
        the compression ratio."""
        if problem.extra.get("net"):
            return net_stack.sparsity(problem)
        return legacy.sparsity(problem)

    def _ood_inputs(self, problem: Problem) -> dict[str, torch.Tensor]:
        split = problem.extra["split"]
        x = split.x_test[:OOD_MAX]
        lo, hi = float(split.x_train.min()), float(split.x_train.max())
        g = torch.Generator().manual_seed(1234)
        out = {"noise": lo + (hi - lo) * torch.rand(x.shape, generator=g), "inverted": lo + hi - x}
        if split.image_shape is not None:
            out["flipped"] = x.reshape(len(x), *split.image_shape).flip(-1).reshape(x.shape)
        return out

    def _report(self, problem: Problem) -> dict[str, Any]:
        """Test metrics, OOD entropies and sparsity; computed once per problem."""
        if "report" in problem.extra:
            return problem.extra["report"]
        if not self._classifies(problem):
            return self._regression_report(problem)
        split = problem.extra["split"]
        yte = split.y_test
        p = self.probs(problem, split.x_test).cpu()
        h_in = metrics.entropy(p)
        test = {
            "n": len(yte),
            "samples": p.shape[0],
            "accuracy": metrics.accuracy(p, yte),
            "nll": metrics.nll(p, yte),
            "ece": metrics.ece(p, yte, bins=15),
            "brier": metrics.brier(p, yte),
            "entropy": h_in.mean().item(),
            "mutual_information": metrics.mutual_information(p).mean().item(),
        }
        n_in = min(len(yte), OOD_MAX)
        mi_in = metrics.mutual_information(p[:, :n_in])
        ood, h_out = {}, {}
        for kind, xo in self._ood_inputs(problem).items():
            po = self.probs(problem, xo).cpu()
            h_out[kind] = metrics.entropy(po)
            mi = metrics.mutual_information(po)
            ood[kind] = {
                "entropy": h_out[kind].mean().item(),
                "mutual_information": mi.mean().item(),
                "auroc_entropy": metrics.auroc(h_in[:n_in], h_out[kind]),
                "auroc_mutual_information": metrics.auroc(mi_in, mi) if p.shape[0] > 1 else None,
            }
        report: dict[str, Any] = {"test": test, "ood": ood}
        if (sp := self.sparsity(problem)) is not None:
            report["sparsity"] = sp
            report["test"]["accuracy_pruned_mean_network"] = metrics.accuracy(
                self.probs(problem, split.x_test, mean_net=True).cpu(), yte
            )
        if self._any_net(problem):
            test["expected_entropy"] = test["entropy"] - test["mutual_information"]
            report["bayesian_net"] = anynet.net_summary(problem)
        problem.extra["report"] = report
        problem.extra["arrays"] = {"probs": p, "entropy_in": h_in[:n_in], "entropy_out": h_out}
        return report

    def _regression_report(self, problem: Problem) -> dict[str, Any]:
        """Test RMSE, log-likelihood, 95 % coverage and the predictive sd split into its noise
        and model parts."""
        split = problem.extra["split"]
        f = self._net_outputs(problem, split.x_test).cpu()
        sigma = anynet.fitted_sigma(problem)
        lik = problem.model.likelihood
        report = {
            "test": anynet.scores(lik, f, split.y_test, None if sigma is None else sigma.cpu()),
            "bayesian_net": anynet.net_summary(problem),
        }
        problem.extra["report"] = report
        problem.extra["arrays"] = {"f": f, "sigma": sigma}
        return report

    # -- reports -------------------------------------------------------------------------------

    def summarize(self, problem: Problem) -> dict[str, Any]:
        o = self.model_options
        split = problem.extra["split"]
        if self._any_net(problem):
            return {
                "data": {
                    "name": image_data_source(o),
                    "train": len(split.y_train),
                    "test": len(split.y_test),
                },
                "net": o.net or f"built-in {o.arch}",
                **self._report(problem),
            }
        return {
            "data": {
                "name": image_data_source(o),
                "train": len(split.y_train),
                "test": len(split.y_test),
            },
            "arch": o.arch if o.arch == "lenet5" else f"mlp {self.hidden}",
            "local_reparam": o.local_reparam if self.settings.guide == "meanfield" else None,
            **self._report(problem),
        }

    def evaluate(self, problem: Problem, out: Path) -> dict[str, Any]:
        return self._report(problem)

    def figures(self, problem: Problem, out: Path) -> list[str]:
        self._report(problem)
        if not self._classifies(problem):
            return [self._regression_figure(problem, out)]
        arrays, split = problem.extra["arrays"], problem.extra["split"]
        rel = metrics.reliability(arrays["probs"], split.y_test, bins=15)
        fig, ax = plt.subplots(figsize=(4.2, 4))
        edges, count = np.array(rel["edges"]), np.array(rel["count"])
        shown = count > 0
        mids = (edges[:-1] + edges[1:]) / 2
        ax.bar(
            mids[shown],
            np.array(rel["accuracy"])[shown],
            width=1 / 15,
            edgecolor="k",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax.set_xlabel("confidence (max predictive probability)")
        ax.set_ylabel("accuracy")
        ece = problem.extra["report"]["test"]["ece"]
        ax.set_title(f"bnn {self.settings.guide}: reliability, ECE {ece:.3f}")
        ax.legend(fontsize=8)
        names = [save(fig, out, "bnn_reliability.png")]

        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        hmax = float(np.log(arrays["probs"].shape[-1]))
        bins = np.linspace(0, hmax, 31)
        ax.hist(arrays["entropy_in"].numpy(), bins, alpha=0.6, density=True, label="test digits")
        for kind, h in arrays["entropy_out"].items():
            auc = problem.extra["report"]["ood"][kind]["auroc_entropy"]
            ax.hist(
                h.numpy(),
                bins,
                histtype="step",
                lw=2,
                density=True,
                label=f"{kind} (AUROC {auc:.2f})",
            )
        ax.set_xlabel("predictive entropy (nats)")
        ax.set_ylabel("density")
        ax.set_title(f"bnn {self.settings.guide}: in- vs out-of-domain")
        ax.legend(fontsize=8)
        names.append(save(fig, out, "bnn_entropy_ood.png"))

        if (
            self.settings.guide == "sparse-vd"
            and self.model_options.arch == "mlp"
            and split.image_shape
            and not self.model_options.net
        ):
            names.append(self._mask_figure(problem, out, split.image_shape))
        return names

    def _regression_figure(self, problem: Problem, out: Path) -> str:
        """The predictive mean with +-2 sd bands, total and noise only (1-D inputs), or the
        predicted against the observed test targets with +-2 sd bars."""
        split = problem.extra["split"]
        lik = problem.model.likelihood
        sigma = problem.extra["arrays"]["sigma"]
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        x_tr = split.x_train.reshape(len(split.x_train), -1)
        if x_tr.shape[1] == 1:
            lo, hi = float(x_tr.min()), float(x_tr.max())
            pad = 0.5 * (hi - lo)
            grid = torch.linspace(lo - pad, hi + pad, 200, dtype=split.x_train.dtype)[:, None]
            grid = grid.reshape(-1, *split.x_train.shape[1:])
            f = self._net_outputs(problem, grid).cpu()
            u = anynet.split_uncertainty(lik, f, None if sigma is None else sigma.cpu())
            g, m = grid.reshape(-1).numpy(), u["mean"].reshape(-1).numpy()
            sd, sn = u["sd"].reshape(-1).numpy(), u["sd_noise"].reshape(-1).numpy()
            ax.fill_between(g, m - 2 * sd, m + 2 * sd, alpha=0.25, label="+-2 sd (noise + model)")
            ax.fill_between(g, m - 2 * sn, m + 2 * sn, alpha=0.35, label="+-2 sd noise only")
            ax.plot(g, m, "k", lw=1.5, label="predictive mean")
            ax.plot(
                x_tr[:, 0].numpy(),
                split.y_train.reshape(-1).numpy(),
                ".",
                ms=3,
                c="C3",
                label="data",
            )
            ax.set_xlabel("x")
            ax.set_ylabel("y")
        else:
            f = problem.extra["arrays"]["f"]
            u = anynet.split_uncertainty(lik, f, None if sigma is None else sigma.cpu())
            y = split.y_test.reshape(-1).numpy()
            ax.errorbar(
                y,
                u["mean"].reshape(-1).numpy(),
                yerr=2 * u["sd"].reshape(-1).numpy(),
                fmt=".",
                ms=3,
                alpha=0.5,
            )
            lim = [float(y.min()), float(y.max())]
            ax.plot(lim, lim, "--", color="grey")
            ax.set_xlabel("observed y (test)")
            ax.set_ylabel("predictive mean +- 2 sd")
        t = problem.extra["report"]["test"]
        ax.set_title(
            f"bnn {self.settings.guide}: RMSE {t['rmse']:.3g}, log-lik {t['log_likelihood']:.3g}"
        )
        ax.legend(fontsize=7)
        return save(fig, out, "bnn_regression.png")

    def _mask_figure(self, problem: Problem, out: Path, shape: tuple[int, ...]) -> str:
        """First layer's kept weights, one image per hidden unit (most kept first)."""
        stack = net_stack if problem.extra.get("net") else legacy
        mask = stack.first_mask(problem).cpu()
        order = mask.sum(1).argsort(descending=True)[:64]
        cols = 8
        rows = max(1, (len(order) + cols - 1) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.5))
        for i, ax in enumerate(np.atleast_1d(axes).ravel()):
            ax.axis("off")
            if i < len(order):
                j = order[i]
                ax.imshow(mask[j].reshape(shape), cmap="gray_r", vmin=0, vmax=1)
        kept = int(mask.sum())
        fig.suptitle(
            f"sparse VD, first layer: {kept} of {mask.numel()} weights kept; "
            f"{int((mask.sum(1) > 0).sum())} of {len(mask)} units alive",
            fontsize=9,
        )
        return save(fig, out, "bnn_sparsity_mask.png")

    def predict(self, problem: Problem, path: Path) -> dict[str, Any]:
        if problem.extra.get("net") and self.model_options.net:
            from bayesdl.workflows.user_data import read_data

            suffix = Path(path).suffix.lower()
            inputs = (
                read_data(
                    path, self.model_options.x_cols, self.model_options.y_col, require_y=False
                )
                if suffix != ".npz"
                else {k: v for k, v in read_data(path).items() if k in ("x", "table")}
            )
            return anynet.predict_file(problem, inputs, str(path))
        arrays = load_arrays(path)
        x = arrays.get("x", arrays.get("table"))
        if x is None:
            raise UserError(f"{path}: needs an array `x` (an .npz) or a table (.csv)")
        d = problem.extra["split"].x_train.shape[1]
        x = (
            np.asarray(x, dtype=np.float32).reshape(len(x), -1)
            if np.ndim(x) > 1
            else np.asarray(x, dtype=np.float32).reshape(1, -1)
        )
        if x.shape[1] != d:
            raise UserError(f"{path}: inputs have {x.shape[1]} features, the network takes {d}")
        p = self.probs(problem, torch.from_numpy(x)).cpu()
        mean = metrics.mean_probs(p)
        return {
            "samples": p.shape[0],
            "probs": mean.tolist(),
            "predicted": mean.argmax(-1).tolist(),
            "entropy": metrics.entropy(p).tolist(),
            "mutual_information": metrics.mutual_information(p).tolist(),
        }

    def comparison(self, summary: dict[str, Any]) -> list[tuple]:
        t = summary["test"]
        if "rmse" in t:
            return [
                ("test RMSE", None, t["rmse"]),
                ("test log-likelihood per datum", None, t["log_likelihood"]),
                ("95 % interval coverage", 0.95, t["coverage_95"], "ideal"),
                ("predictive sd: noise part", None, t["sd_noise"]),
                ("predictive sd: model part", None, t["sd_model"]),
            ]
        mnist = image_data_source(self.model_options) == "mnist"
        paper = PAPER.get((self.model_options.arch, self.settings.guide)) if mnist else None
        # rows (quantity, reference, fitted, kind[, accepted range]); kinds as the tour's
        # table labels them (bayesdl.reports.page.comparison_row)
        if paper:
            acc = ("test accuracy", f"{paper[0]} (Molchanov et al. 2017)", t["accuracy"], "paper")
        else:
            acc = ("test accuracy", ">= 0.93 (issue #3 target)", t["accuracy"], "target",
                   (0.93, 1.0))  # fmt: skip
        rows = [
            acc,
            ("test NLL (nats)", None, t["nll"]),
            ("ECE (15 bins)", 0.0, t["ece"], "ideal"),
            ("Brier score", None, t["brier"]),
            ("mutual information (test)", None, t["mutual_information"]),
        ]
        for kind, o in summary["ood"].items():
            rows.append((f"OOD AUROC of entropy: {kind}", 1.0, o["auroc_entropy"], "ideal"))
        net = summary.get("bayesian_net", {})
        if net.get("dropout_rates_learned"):
            for name, p in net["dropout_rates"].items():
                rows.append((f"learned dropout p, {name}", None, p))
        if "sparsity" in summary:
            ref = f"{paper[1]}x (Molchanov et al. 2017)" if paper else None
            comp = summary["sparsity"]["compression"]
            rows.append(("compression (all / kept weights)", ref, comp, "paper"))
            rows.append(
                ("accuracy of the pruned mean network", None, t["accuracy_pruned_mean_network"])
            )
        return rows
