"""A fitted posterior: draws, summaries, predictions, its parameters, saved and reloaded.

``q(z) ~= p(z | D)`` after a fit; posterior-predictive draws at new inputs ``x*`` are
``y* ~ p(y | x*, z_m)``, ``z_m ~ q(z)``. Every draw runs inside the fit's own parameter store,
so any number of posteriors live side by side in one process.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro import poutine

from bayesdl.inference import checkpoint as ckpt
from bayesdl.inference.errors import UserError
from bayesdl.inference.predictive import draw, observation_keys, predictive_inputs
from bayesdl.workflows.run import (
    CHECKPOINT,
    METRICS,
    SUMMARY,
    Run,
    claimed,
    folder_record,
    model_params,
    prepare_out,
    write_json,
    write_record,
    write_text,
)

#: the quantiles of :meth:`Posterior.summary`
QUANTILES = (0.05, 0.5, 0.95)


class Posterior:
    """The result of :func:`bayesdl.fit` or :func:`bayesdl.load`.

    ``.summary()``, ``.sample(n)``, ``.predict(data, num_samples)``, ``.params``, ``.elbo``,
    ``.model``, ``.guide``, ``.save(dir)``, ``.to_arviz()``.
    """

    def __init__(self, run: Run):
        self._run = run
        self._sites: tuple[dict, list[str]] | None = None
        self._observed: set[str] | None = None

    # -- what was fitted

    @property
    def model(self):
        """The model function (or PyroModule)."""
        return self._run.problem.model

    @property
    def guide(self):
        """The fitted guide (draw from it with :meth:`sample`: it needs this fit's params)."""
        return self._run.problem.guide

    @property
    def data(self) -> dict[str, Any]:
        """The keyword arguments the model was fitted to."""
        return self._run.problem.data

    @property
    def history(self) -> list[dict]:
        """The logged rows: step, ELBO (mean over the log window), learning rate, ..."""
        return list(self._run.result.history) if self._run.result is not None else []

    @property
    def elbo(self) -> list[float]:
        """The ELBO history, one value per logged window (``.history`` has the steps)."""
        return [row["elbo"] for row in self.history]

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The fitted ``pyro.param`` values of the model (constrained; the guide's are not
        listed)."""
        return {k: v.clone() for k, v in model_params(self._run.problem).items()}

    @property
    def run_dir(self) -> Path | None:
        """The run folder this posterior was fitted into or loaded from."""
        return self._run.out

    @property
    def converged(self) -> bool | None:
        """Whether the fit's ELBO had flattened (None where unknown)."""
        return self._run.summary.get("converged")

    # -- draws

    def _posterior_guide(self):
        pick = getattr(self._run.workflow, "posterior_guide", None)
        return pick(self._run.problem) if pick is not None else self.guide

    def _latent_sites(self) -> tuple[dict[str, torch.Size], list[str]]:
        """Latent sites of the guide (name -> shape) and the model's deterministic sites."""
        if self._sites is None:
            problem = self._run.problem
            with problem.scope(), torch.no_grad():
                gtr = poutine.trace(self._posterior_guide()).get_trace(**problem.data)
                mtr = poutine.trace(poutine.replay(problem.model, trace=gtr)).get_trace(
                    **problem.data
                )
            latent = {
                n: s["value"].shape
                for n, s in gtr.nodes.items()
                if s["type"] == "sample"
                and not s["is_observed"]
                and type(s["fn"]).__name__ != "_Subsample"
                and not s["infer"].get("is_auxiliary")
            }
            latent.update(
                {
                    n: s["value"].shape
                    for n, s in mtr.nodes.items()
                    if s["type"] == "sample" and s["infer"].get("_deterministic")
                }
            )
            det = [
                n
                for n, s in mtr.nodes.items()
                if s["type"] == "sample" and s["infer"].get("_deterministic")
            ]
            self._sites = (latent, det)
        return self._sites

    def sample(self, num_samples: int = 1000) -> dict[str, torch.Tensor]:
        """``num_samples`` posterior draws of every latent (and ``pyro.deterministic``) site:
        ``{site: tensor [num_samples, *shape]}``."""
        _check_count(num_samples, "num_samples")
        shapes, _ = self._latent_sites()
        if not shapes:
            return {}
        problem = self._run.problem
        with problem.scope():
            draws = draw(
                problem.model, self._posterior_guide(), problem.data, num_samples, list(shapes)
            )
        return {k: _reshape(draws[k], num_samples, shapes[k]) for k in shapes if k in draws}

    def summary(self, num_samples: int = 1000) -> dict[str, dict[str, Any]]:
        """``{site: {"mean", "std", "5%", "50%", "95%"}}`` of every latent site, from
        ``num_samples`` draws (values are floats, or nested lists for vector sites)."""
        return {name: site_stats(d) for name, d in self.sample(num_samples).items()}

    def predict(
        self, data: dict[str, Any] | None = None, num_samples: int = 1000
    ) -> dict[str, torch.Tensor]:
        """Posterior-predictive draws ``{site: tensor [num_samples, ...]}`` of every site of
        the model -- latent, observed and ``pyro.deterministic`` -- at the inputs ``data``
        (keyword arguments of the model; training arguments not given keep their values,
        except the observations, which are drawn)."""
        _check_count(num_samples, "num_samples")
        problem = self._run.problem
        if data is not None and not isinstance(data, dict):
            raise UserError(f"data must be a dict of keyword arguments, got {type(data).__name__}")
        inputs = predictive_inputs(problem.data, data or {}, self._observed_keys())
        with problem.scope():
            return draw(problem.model, self._posterior_guide(), inputs, num_samples, None)

    def _observed_keys(self) -> set[str]:
        """The training arguments the model observes, found once per posterior: finding them
        runs the guide and the model on all the training data (on MNIST, seconds a call)."""
        if self._observed is None:
            problem = self._run.problem
            with problem.scope():
                guide_trace = poutine.trace(self._posterior_guide()).get_trace(**problem.data)
                self._observed = observation_keys(
                    poutine.replay(problem.model, guide_trace), problem.data
                )
        return self._observed

    def as_prior(self):
        """This fitted Gaussian posterior of a :func:`bayesdl.bnn.bayesian` network as the prior
        of the next fit (:func:`bayesdl.bnn.as_prior`)."""
        from bayesdl.bnn import as_prior

        return as_prior(self)

    # -- saving

    def save(self, run_dir: str | Path, overwrite: bool = False) -> Path:
        """Write a run folder (``config.json``, ``checkpoint.pt``, ``summary.json``,
        ``metrics.jsonl``; the data as ``data.npz`` when it was given from Python) that
        ``bayesdl evaluate`` / ``predict`` and :func:`bayesdl.load` read."""
        out = Path(run_dir)
        if self._run.out is not None and out.resolve() == Path(self._run.out).resolve():
            return out  # fitted into this folder: already saved
        prepare_out(out, resume=False, overwrite=overwrite, make=False)
        problem, workflow = self._run.problem, self._run.workflow
        record, arrays = folder_record(workflow)
        args = record["args"] = dict(record["args"])
        guide = args.get("guide")
        if not isinstance(guide, str):
            args["guide"] = _guide_spec(guide)
        with claimed(out, resume=False, overwrite=overwrite):  # made, locked, emptied
            with problem.scope():
                state = {
                    "format": 1,
                    "step": self._run.result.steps if self._run.result else 0,
                    "param_store": ckpt.param_store_state(),
                    "modules": ckpt.module_states((problem.model, problem.guide)),
                    "config": {},
                    "history": self.history,
                }
                ckpt.save(out / CHECKPOINT, state)
            write_record(out, record, arrays)
            write_json(out / SUMMARY, self._run.summary)
            write_text(out / METRICS, "".join(_json_line(r) for r in self.history))
        return out

    def to_arviz(self, num_samples: int = 1000):
        """ArviZ ``InferenceData`` with a ``posterior`` group (1 chain x ``num_samples`` draws)
        of every latent site; needs the extra ``bayesdl[arviz]``."""
        draws = self.sample(num_samples)
        return arviz_posterior({k: v[None] for k, v in draws.items()})

    def __repr__(self) -> str:
        s = self._run.summary
        elbo = s.get("final_elbo")
        head = (
            f"Posterior of {s.get('model')} (guide {s.get('guide')}, {s.get('steps')} steps, "
            f"final ELBO {float('nan') if elbo is None else float(elbo):.4g})"
        )
        return summary_table(head, self.summary(num_samples=500), STAT_COLUMNS, width=10)


#: the columns of :meth:`Posterior.summary` in the printed table
STAT_COLUMNS = ("mean", "std", "5%", "50%", "95%")


def site_stats(d: torch.Tensor) -> dict[str, Any]:
    """Mean, sd and the :data:`QUANTILES` of draws ``[n, *shape]`` over dim 0, as floats or
    nested lists."""
    d = d.double()
    q = torch.quantile(d.reshape(len(d), -1), torch.tensor(QUANTILES, dtype=d.dtype), 0)
    row = {"mean": _plain(d.mean(0)), "std": _plain(d.std(0))}
    for p, v in zip(QUANTILES, q, strict=True):
        row[f"{round(100 * p):d}%"] = _plain(v.reshape(d.shape[1:]))
    return row


def summary_table(head: str, summary: dict, cols: tuple[str, ...], width: int) -> str:
    """A summary as printed: one row per element (the first 8 of a vector site)."""
    rows = [head, f"{'site':<20} " + " ".join(f"{c:>{width}}" for c in cols)]
    for name, r in summary.items():
        flat = {k: np.ravel(r[k]) for k in cols if k in r}
        n = len(flat["mean"])
        for i in range(min(n, 8)):
            label = name if n == 1 else f"{name}[{i}]"
            vals = " ".join(
                f"{flat[k][i]:>{width}.4g}" if k in flat else f"{'':>{width}}" for k in cols
            )
            rows.append(f"{label:<20} {vals}")
        if n > 8:
            rows.append(f"{name}[...]  ({n - 8} more elements)")
    return "\n".join(rows)


def arviz_posterior(draws: dict[str, torch.Tensor]):
    """ArviZ ``InferenceData`` of draws ``[chains, samples, *shape]`` (extra ``bayesdl[arviz]``)."""
    try:
        import arviz as az
    except ImportError:
        raise UserError(
            "to_arviz needs ArviZ: pip install 'bayesdl[arviz]' (or pip install arviz)"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return az.from_dict(posterior={k: v.detach().cpu().numpy() for k, v in draws.items()})


def _check_count(n: Any, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"{what} must be a positive integer, got {n!r}")


def _reshape(v: torch.Tensor, n: int, shape: torch.Size) -> torch.Tensor:
    """Predictive's draws ``[n, 1, ..., *shape]`` as ``[n, *shape]``."""
    if v.numel() == n * math.prod(shape):
        return v.reshape(n, *shape)
    return v


def _plain(t: torch.Tensor) -> Any:
    return t.item() if t.dim() == 0 else t.tolist()


def _json_line(row: dict) -> str:
    import json

    return json.dumps(row) + "\n"


def _guide_spec(guide: Any) -> str:
    """A guide given from Python, as ``config.json`` records it."""
    import inspect

    from pyro.infer.autoguide import AutoGuide

    if isinstance(guide, type) and issubclass(guide, AutoGuide):
        return f"python:{guide.__name__}"
    fn = getattr(guide, "__name__", type(guide).__name__)
    try:
        path = inspect.getsourcefile(guide) if inspect.isfunction(guide) else None
    except TypeError:
        path = None
    if path and getattr(guide, "__module__", "__main__") != "__main__" and Path(path).is_file():
        return f"{Path(path).resolve()}:{fn}"
    return f"python:{fn}"
