"""VAE: amortized variational inference for a deep generative model.

``z ~ N(0, I)``, ``x | z ~ prod_d p(x_d | f_theta(z))``, ``q(z | x) = N(mu(x), diag sigma^2(x))``;
the ELBO is maximized over decoder and encoder together (Kingma & Welling 2013). Reports the
test ELBO, the importance-weighted ``log p(x)`` (Burda et al. 2016) and out-of-domain detection
by ``log p(x)``; draws samples, reconstructions, and for a 2-D latent the code map and manifold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bayesdl.datasets import bundled as datasets
from bayesdl.datasets.io import check_finite, load_arrays
from bayesdl.guides.vae import AmortizedGuide, Encoder
from bayesdl.inference.errors import UserError
from bayesdl.inference.files import write_with
from bayesdl.inference.importance import iw_log_marginal
from bayesdl.models.vae import ACTIVATIONS, LIKELIHOODS, Decoder, VAEModel
from bayesdl.workflows.base import ImageDataOptions, Problem, Workflow, image_data_source
from bayesdl.workflows.figures import plt, save
from bayesdl.workflows.metrics import auroc
from bayesdl.workflows.registry import register

#: importance samples of the test-set numbers written to summary.json at the end of `fit`
#: (`evaluate` uses --iw-samples, 5000 by default as in the literature)
SUMMARY_IW_SAMPLES = 100
MAX_ELEMENTS = 2**22  # bound on (samples x examples x width) per evaluation pass


def dynamic_binarization(epoch: int, data: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG001
    """A fresh binary draw ``x ~ Bern(pixel intensity)`` of the training set (torch's RNG)."""
    return {**data, "x": torch.bernoulli(data["x"])}


def _hidden(spec: str) -> tuple[int, ...]:
    s = spec.strip().lower()
    if s in ("", "none", "linear"):
        return ()
    try:
        sizes = tuple(int(v) for v in s.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--hidden takes widths like 200,200, got {spec!r}") from None
    if any(h < 1 for h in sizes):
        raise UserError(f"--hidden widths must be >= 1, got {spec!r}")
    return sizes


@dataclass(frozen=True)
class VAEOptions(ImageDataOptions):
    """The data, the likelihood and the networks."""

    data: str = field(
        default="digits",
        metadata={
            "help": "digits (bundled 8x8, default) | mnist | FILE.npz with x (N x D or "
            "N x H x W in [0, 1]; optional y, x_test, y_test)"
        },
    )
    likelihood: str = field(
        default="bernoulli",
        metadata={
            "help": "p(x_d | z): bernoulli (binarized pixels, default), "
            "continuous-bernoulli or gaussian (grayscale)",
            "choices": LIKELIHOODS,
        },
    )
    binarize: str = field(
        default="dynamic",
        metadata={
            "help": "bernoulli only: redraw binary pixels every epoch (dynamic, default) "
            "or once (fixed); the test set is binarized once with --seed",
            "choices": ("dynamic", "fixed"),
        },
    )
    latent_dim: int | None = field(
        default=None,
        metadata={"help": "size of z (default 2 on digits and .npz, 50 on MNIST)"},
    )
    hidden: str = field(
        default="200,200",
        metadata={"help": "hidden widths of encoder and decoder (default 200,200; 'none': linear)"},
    )
    activation: str = field(
        default="tanh",
        metadata={"help": "hidden activation (default tanh)", "choices": sorted(ACTIVATIONS)},
    )
    iw_samples: int = field(
        default=5000,
        metadata={
            "help": "importance samples per example for log p(x) in `evaluate` (default 5000)"
        },
    )


@register
class VAE(Workflow):
    """Variational autoencoder with an amortized Gaussian guide."""

    name = "vae"
    report = "vae"
    description = "variational autoencoder: amortized inference, IW log p(x), samples, OOD by p(x)"
    latent = "continuous"
    default_estimator = "reparam"
    guides = ("amortized",)
    default_guide = "amortized"
    options = VAEOptions
    fit_defaults = {
        "steps": 3000,
        "lr": 1e-3,
        "batch_size": 128,
        "log_every": 100,
        "checkpoint_every": 1000,
    }
    tour_runs = [["--steps", "2000"]]

    # -- data ---------------------------------------------------------------------------------
    def _source(self) -> str:
        return image_data_source(self.model_options)

    def _split(self) -> datasets.Split:
        o, source = self.model_options, self._source()
        if source == "digits":
            return datasets.digits(seed=o.split_seed)
        if source == "mnist":
            return datasets.mnist(o.data_dir)
        if str(source).endswith(".npz"):
            return self._npz(source)
        raise UserError(f"--data must be digits, mnist or an .npz file, got {source!r}")

    def _npz(self, path: str) -> datasets.Split:
        arrays = load_arrays(path)
        if "x" not in arrays:
            raise UserError(f"data file {path} needs an array `x` (has {', '.join(arrays)})")
        x = arrays["x"].astype(np.float32)
        if x.ndim not in (2, 3) or len(x) < 2:
            raise UserError(f"data file {path}: x must be N x D or N x H x W, got shape {x.shape}")
        shape = tuple(x.shape[1:]) if x.ndim == 3 else None
        x = x.reshape(len(x), -1)
        y = arrays.get("y", np.zeros(len(x), dtype=np.int64))
        if len(y) != len(x):
            raise UserError(f"data file {path}: y has {len(y)} entries, x has {len(x)} rows")
        if "x_test" in arrays:
            xte = arrays["x_test"].astype(np.float32).reshape(len(arrays["x_test"]), -1)
            if xte.shape[1] != x.shape[1]:
                raise UserError(
                    f"data file {path}: x_test has {xte.shape[1]} columns, x {x.shape[1]}"
                )
            yte = arrays.get("y_test", np.zeros(len(xte), dtype=np.int64))
            xtr, ytr = x, y
        else:
            perm = np.random.default_rng(self.model_options.split_seed).permutation(len(x))
            n_test = max(1, round(0.25 * len(x)))
            te, tr = perm[:n_test], perm[n_test:]
            xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
        check_finite(f"{path} x_test", xte)
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        return datasets.Split(
            t(xtr),
            t(np.asarray(ytr).astype(np.int64)),
            t(xte),
            t(np.asarray(yte).astype(np.int64)),
            image_shape=shape,
        )

    def _latent_dim(self) -> int:
        o = self.model_options
        latent = o.latent_dim
        if latent is None:
            latent = 50 if self._source() == "mnist" else 2
        if latent < 1:
            raise UserError(f"--latent-dim must be >= 1, got {latent}")
        return latent

    def networks(self, data_dim: int) -> tuple[VAEModel, AmortizedGuide]:
        """Model and guide with fresh networks, initialised from ``--seed`` (the untrained VAE)."""
        o, latent, hidden = (
            self.model_options,
            self._latent_dim(),
            _hidden(self.model_options.hidden),
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.engine.seed)
            decoder = Decoder(latent, tuple(reversed(hidden)), data_dim, o.likelihood, o.activation)
            encoder = Encoder(data_dim, hidden, latent, o.activation)
        return VAEModel(decoder, latent), AmortizedGuide(encoder)

    def build(self) -> Problem:
        o = self.model_options
        if self.settings.guide not in self.guides:
            raise UserError(f"vae has guides {', '.join(self.guides)}, not {self.settings.guide!r}")
        if o.iw_samples < 1:
            raise UserError(f"--iw-samples must be >= 1, got {o.iw_samples}")
        split = self._split()
        x_train, x_test = split.x_train, split.x_test
        if o.likelihood != "gaussian":
            lo = float(min(x_train.min(), x_test.min()))
            hi = float(max(x_train.max(), x_test.max()))
            if lo < 0 or hi > 1:
                raise UserError(
                    f"--likelihood {o.likelihood} needs pixels in [0, 1], the data span "
                    f"[{lo:.3g}, {hi:.3g}]; rescale them or use --likelihood gaussian"
                )
        hook = None
        if o.likelihood == "bernoulli":
            gen = torch.Generator().manual_seed(self.engine.seed)
            x_test = torch.bernoulli(x_test, generator=gen)
            if o.binarize == "fixed":
                x_train = torch.bernoulli(x_train, generator=gen)
            else:
                hook = dynamic_binarization
        model, guide = self.networks(x_train.shape[1])
        extra = {
            "x_test": x_test,
            "y_test": split.y_test,
            "image_shape": split.image_shape,
            "source": self._source(),
        }
        return Problem(
            model, guide, {"x": x_train}, data_size=len(x_train), extra=extra, data_hook=hook
        )

    # -- numbers ------------------------------------------------------------------------------
    def _chunks(self, problem: Problem, num_samples: int) -> tuple[int, int]:
        width = max(problem.data["x"].shape[1], *(_hidden(self.model_options.hidden) or (1,)))
        batch = 100
        return batch, max(1, min(num_samples, MAX_ELEMENTS // (batch * width)))

    def log_px(
        self, problem: Problem, x: torch.Tensor, num_samples: int, model=None, guide=None
    ) -> dict[str, torch.Tensor]:
        """Per-example IW ``log p(x)`` and ELBO (nats) of the fitted (or the given) model."""
        model = problem.model if model is None else model
        guide = problem.guide if guide is None else guide
        dev = next(model.parameters()).device
        batch, chunk = self._chunks(problem, num_samples)
        return iw_log_marginal(
            model, guide, {"x": x.to(dev)}, num_samples, batch_size=batch, sample_chunk=chunk
        )

    def _test_numbers(self, problem: Problem, num_samples: int, model=None, guide=None) -> dict:
        r = self.log_px(problem, problem.extra["x_test"], num_samples, model, guide)
        n = len(r["elbo"])
        return {
            "elbo": r["elbo"].mean().item(),
            "elbo_se": (r["elbo"].std() / math.sqrt(n)).item(),
            "log_px": r["log_px"].mean().item(),
            "log_px_se": (r["log_px"].std() / math.sqrt(n)).item(),
            "iw_samples": num_samples,
            "n": n,
        }

    def summarize(self, problem: Problem) -> dict[str, Any]:
        x = problem.data["x"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.engine.seed)
            fitted = self._test_numbers(problem, SUMMARY_IW_SAMPLES)
            model0, guide0 = self.networks(x.shape[1])
            untrained = self._test_numbers(
                problem, SUMMARY_IW_SAMPLES, model0.to(x.device), guide0.to(x.device)
            )
        return {
            "data": {
                "source": problem.extra["source"],
                "n_train": len(x),
                "n_test": len(problem.extra["x_test"]),
                "dim": x.shape[1],
                "image_shape": problem.extra["image_shape"],
            },
            "likelihood": self.model_options.likelihood,
            "binarize": self.model_options.binarize
            if self.model_options.likelihood == "bernoulli"
            else None,
            "latent_dim": self._latent_dim(),
            "test": fitted,
            "untrained": untrained,
        }

    def evaluate(self, problem: Problem, out: Path) -> dict[str, Any]:
        k = self.model_options.iw_samples
        if k < 1:
            raise UserError(f"--iw-samples must be >= 1, got {k}")
        x_test = problem.extra["x_test"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.engine.seed)
            r = self.log_px(problem, x_test, k)
            n = len(x_test)
            result: dict[str, Any] = {
                "iw_samples": k,
                "n_test": n,
                "test_elbo": r["elbo"].mean().item(),
                "test_elbo_se": (r["elbo"].std() / math.sqrt(n)).item(),
                "test_log_px": r["log_px"].mean().item(),
                "test_log_px_se": (r["log_px"].std() / math.sqrt(n)).item(),
                "test_nll": -r["log_px"].mean().item(),
            }
            ood = {}
            for name, x_out in self._ood_sets(problem).items():
                s = self.log_px(problem, x_out, k)["log_px"]
                ood[name] = {
                    "auroc": auroc(-r["log_px"], -s),
                    "mean_log_px": s.mean().item(),
                    "n": len(x_out),
                }
            result["ood_auroc"] = ood
        return result

    def _ood_sets(self, problem: Problem) -> dict[str, torch.Tensor]:
        """Inputs p(x) should find unlikely: uniform noise, inverted and upside-down digits."""
        x = problem.extra["x_test"][:1000]
        noise = torch.rand_like(x)
        if self.model_options.likelihood == "bernoulli":
            noise = torch.bernoulli(noise)
        sets = {"noise": noise}
        if self.model_options.likelihood != "gaussian" or float(x.min()) >= 0:
            sets["inverted"] = x.max() + x.min() - x
        shape = problem.extra["image_shape"]
        if shape is not None and len(shape) == 2:
            sets["upside_down"] = x.reshape(-1, *shape).flip(1).reshape(len(x), -1)
        return sets

    # -- pictures -----------------------------------------------------------------------------
    def _images(self, flat: torch.Tensor, problem: Problem) -> np.ndarray:
        shape = problem.extra["image_shape"]
        if shape is None:
            d = flat.shape[1]
            side = math.isqrt(d)
            shape = (side, side) if side * side == d else (1, d)
        return flat.detach().cpu().reshape(len(flat), *shape).numpy()

    def _draw(self, problem: Problem, out: Path, seed: int) -> tuple[list[str], dict[str, Any]]:
        decoder = problem.model.decoder
        encoder = problem.guide.encoder
        dev = next(decoder.parameters()).device
        latent = self._latent_dim()
        names, arrays = [], {}
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            samples = self._images(decoder.mean(torch.randn(64, latent, device=dev)), problem)
            x = problem.extra["x_test"][:32].to(dev)
            recon = self._images(decoder.mean(encoder(x)[0]), problem)
            originals = self._images(x, problem)
        arrays.update(samples=samples, originals=originals, reconstructions=recon)
        names.append(
            save(_grid(samples, 8, "samples: x = E[x | z], z ~ p(z)"), out, "vae_samples.png")
        )
        pairs = np.stack([originals, recon], 1).reshape(-1, *originals.shape[1:])
        names.append(
            save(
                _grid(pairs, 8, "test images (odd columns) and reconstructions (even)"),
                out,
                "vae_reconstructions.png",
            )
        )
        if latent == 2:
            x_all = problem.extra["x_test"].to(dev)
            with torch.no_grad():
                codes = encoder(x_all)[0].cpu().numpy()
            y = problem.extra["y_test"].numpy()
            fig, ax = plt.subplots(figsize=(5.2, 4.6))
            sc = ax.scatter(codes[:, 0], codes[:, 1], c=y, cmap="tab10", s=6)
            fig.colorbar(sc, ax=ax, label="label")
            ax.set_xlabel("z1 (mean of q(z|x))")
            ax.set_ylabel("z2")
            ax.set_title("test codes by label")
            names.append(save(fig, out, "vae_latent.png"))
            n = 15
            q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, n))
            grid = torch.stack(torch.meshgrid(q, q.flip(0), indexing="xy"), -1).reshape(-1, 2)
            with torch.no_grad():
                manifold = self._images(decoder.mean(grid.to(dev)), problem)
            arrays["manifold"] = manifold
            names.append(
                save(
                    _grid(manifold, n, "decoded manifold (Gaussian quantiles of z)"),
                    out,
                    "vae_manifold.png",
                )
            )
        return names, arrays

    def sample(self, problem: Problem, out: Path) -> dict[str, Any]:
        names, arrays = self._draw(problem, out, self.engine.seed)
        write_with(Path(out) / "vae_samples.npz", lambda f: np.savez_compressed(f, **arrays))
        return {
            "figures": names,
            "arrays": "vae_samples.npz",
            **{f"shape.{k}": list(v.shape) for k, v in arrays.items()},
        }


def _grid(images: np.ndarray, cols: int, title: str):
    n = len(images)
    rows = math.ceil(n / cols)
    h, w = images.shape[1:]
    canvas = np.ones((rows * (h + 1) + 1, cols * (w + 1) + 1))
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = im
    fig, ax = plt.subplots(figsize=(0.6 * cols + 0.4, 0.6 * rows * h / w + 0.6))
    lo, hi = float(images.min()), float(images.max())
    ax.imshow(canvas, cmap="gray", vmin=min(lo, 0.0), vmax=max(hi, 1.0), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return fig
