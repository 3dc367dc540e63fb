"""A posterior fitted by VI: draws, summaries, predictions, its parameters, saved and reloaded.

``q(z) ~= p(z | D)`` after a fit; posterior-predictive draws at new inputs ``x*`` are
``y* ~ p(y | x*, z_m)``, ``z_m ~ q(z)``. Every draw runs inside the fit's own parameter store,
so any number of posteriors live side by side in one process.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from pyro import poutine

from bayesdl.fits.arviz_data import inference_data
from bayesdl.fits.base import Run, model_params, posterior_guide
from bayesdl.fits.folder import claimed, prepare_out, write_json, write_text
from bayesdl.fits.posterior import (
    STAT_COLUMNS,
    Posterior,
    check_count,
    summary_table,
)
from bayesdl.fits.recording import folder_record, write_record
from bayesdl.fits.records import METRICS, SUMMARY
from bayesdl.inference import checkpoint as ckpt
from bayesdl.inference.errors import UserError
from bayesdl.inference.moments import (
    SUMMARY_DRAWS,
    posterior_rows,
    seeded,
    summary_sites,
)
from bayesdl.inference.predictive import draw, observation_keys, predictive_inputs
from bayesdl.inference.scoped_guide import ScopedGuide
from bayesdl.inference.serial import serialised
from bayesdl.inference.train import CHECKPOINT
from bayesdl.workflows.inputs import model_errors, predict_inputs

#: draws of :meth:`GuidePosterior.sample`, ``predict`` and ``to_arviz`` by default
DRAWS = 1000


@serialised  # one model runs at a time in this process (inference.serial)
class GuidePosterior(Posterior):
    """A guide fitted by VI (:func:`bayesdl.fit`, or :func:`bayesdl.load` of a VI run): the
    :class:`~bayesdl.fits.posterior.Posterior` interface over ``q(z)``, and ``.as_prior()``.
    """

    method = "vi"

    def __init__(self, run: Run):
        super().__init__(run)
        self._sites: dict[str, torch.Size] | None = None
        self._observed: set[str] | None = None

    # -- what was fitted

    @property
    def guide(self):
        """The fitted guide, each call inside this fit's parameter store
        (:class:`~bayesdl.inference.scoped_guide.ScopedGuide`): Pyro's
        ``Predictive(model, guide=post.guide)`` and ``poutine.trace(post.guide)`` draw from
        this fit's posterior whatever other fits exist. A model with a ``pyro.param`` of its
        own reads it from the store that is current: run such calls inside :meth:`scope`."""
        guide = self._run.problem.guide
        return None if guide is None else ScopedGuide(guide, self._run.problem.scope)

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

    def diagnostics(self) -> dict[str, Any]:
        """``{"k_hat", "converged", "reliable", "checks"}``: the Pareto k-hat of the guide
        (Yao et al. 2018; None where not checked), the convergence flag, the verdict and every
        check with its value (:attr:`checks`)."""
        checks = self.checks
        return {
            "k_hat": (checks.get("k_hat") or {}).get("value"),
            "converged": self.converged,
            "reliable": self.reliable,
            "checks": checks,
        }

    # -- draws

    def _posterior_guide(self):
        return posterior_guide(self._run.workflow, self._run.problem)

    def _latent_sites(self) -> dict[str, torch.Size]:
        """The guide's latent sites and the model's deterministic ones: name -> shape."""
        if self._sites is None:
            problem = self._run.problem
            with problem.scope():
                self._sites = summary_sites(problem.model, self._posterior_guide(), problem.data)
        return self._sites

    def sample(self, num_samples: int | None = None) -> dict[str, torch.Tensor]:
        """``num_samples`` (default 1000) posterior draws of every latent (and
        ``pyro.deterministic``) site: ``{site: tensor [num_samples, *shape]}``."""
        num_samples = DRAWS if num_samples is None else num_samples
        check_count(num_samples, "num_samples")
        shapes = self._latent_sites()
        if not shapes:
            return {}
        problem = self._run.problem
        with problem.scope():
            draws = draw(
                problem.model, self._posterior_guide(), problem.data, num_samples, list(shapes)
            )
        return {k: _reshape(draws[k], num_samples, shapes[k]) for k in shapes if k in draws}

    def summary(
        self, num_samples: int | None = None, corrected: bool = False
    ) -> dict[str, dict[str, Any]]:
        """``{site: {"mean", "std", "5%", "50%", "95%", "exact"}}`` of every latent (and
        ``pyro.deterministic``) site: values are floats, or nested lists for vector sites.

        The same numbers at every call, in ``print(post)``, ``summary.json`` and
        ``bayesdl.load(dir).summary()``: the closed form where the guide has it (the columns
        listed in ``"exact"``: a Gaussian autoguide's moments and quantiles, see
        :mod:`bayesdl.inference.moments`), else ``num_samples`` draws seeded by the fit's seed
        (the caller's random state is left as it was).

        ``corrected=True``: the model's latent sites under Pareto-smoothed importance
        weights ``p(theta, D) / q(theta)`` of the draws (the joint on the full data), which
        remove what the guide's family gets wrong where k-hat is at most 0.7; above, a
        :class:`~bayesdl.UserError` (``summary.json``'s ``checks.k_hat.corrected`` says how
        far the two summaries are apart). ``num_samples`` is :data:`SUMMARY_DRAWS` by
        default."""
        num_samples = SUMMARY_DRAWS if num_samples is None else num_samples
        check_count(num_samples, "num_samples")
        problem = self._run.problem
        if corrected:
            from bayesdl.fits.checks import corrected_summary

            with problem.scope():
                return corrected_summary(
                    problem.model, self._posterior_guide(), problem.data, num_samples, self._seed
                )
        with seeded(self._seed), problem.scope():  # finding the sites draws too
            shapes, guide = self._latent_sites(), self._posterior_guide()
            return posterior_rows(
                problem.model, guide, problem.data, shapes, num_samples, self._seed
            )

    @property
    def _seed(self) -> int:
        """The fit's seed: a summary's draws are seeded by it."""
        return int(self._run.workflow.engine.seed or 0)

    def predict(
        self, data: dict[str, Any] | None = None, num_samples: int = 1000
    ) -> dict[str, torch.Tensor]:
        """Posterior-predictive draws ``{site: tensor [num_samples, ...]}`` of every site of
        the model -- latent, observed and ``pyro.deterministic`` -- at the inputs ``data``
        (keyword arguments of the model; training arguments not given keep their values,
        except the observations, which are drawn)."""
        check_count(num_samples, "num_samples")
        problem = self._run.problem
        data = predict_inputs(problem.model, problem.data, data)  # one UserError per problem
        inputs = predictive_inputs(problem.data, data, self._observed_keys())
        with problem.scope(), model_errors("predict"):
            try:
                return draw(problem.model, self._posterior_guide(), inputs, num_samples, None)
            except Exception as e:  # noqa: BLE001 - the user's model may raise anything
                raise self._explained(e, "in predict") from None

    def _explained(self, e: Exception, doing: str) -> Exception:
        """A user model's exception as one line naming its file and line (a UserError)."""
        explain = getattr(self._run.workflow, "explain", None)
        return e if isinstance(e, UserError) or explain is None else explain(e, doing)
        # (a named model's exception goes on to model_errors)

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

    def to_arviz(self, num_samples: int | None = None):
        """ArviZ ``InferenceData`` of 1 chain x ``num_samples`` (default 1000) guide draws:
        ``posterior`` (every latent and ``pyro.deterministic`` site), ``log_likelihood`` (per
        observation and draw), ``posterior_predictive`` and ``observed_data``
        (:mod:`bayesdl.fits.arviz_data`; ``az.loo``, ``az.waic``, ``az.plot_ppc`` read them);
        needs the extra ``bayesdl[arviz]``."""
        draws = self.sample(num_samples)
        problem = self._run.problem
        with problem.scope():
            return inference_data(
                problem.model, problem.data, {k: v[None] for k, v in draws.items()}
            )

    def __repr__(self) -> str:
        s = self._run.summary
        elbo = s.get("final_elbo")
        head = (
            f"Posterior of {s.get('model')} (guide {s.get('guide')}, {s.get('steps')} steps, "
            f"final ELBO {float('nan') if elbo is None else float(elbo):.4g})"
        )
        if s.get("checks"):
            from bayesdl.fits.checks import verdict_line

            head += f"\n{verdict_line(s)}"
        rows = self.summary()
        return "\n".join(
            (summary_table(head, rows, STAT_COLUMNS, width=10), exactness(rows, self._seed))
        )


def exactness(rows: dict[str, dict], seed: int, num_samples: int = SUMMARY_DRAWS) -> str:
    """The line under a printed summary: which numbers are the guide's closed form."""
    full = [k for k, r in rows.items() if len(r.get("exact", ())) == len(STAT_COLUMNS)]
    quantiles = [k for k, r in rows.items() if r.get("exact") and k not in full]
    exact = [f"every number of {', '.join(full)}"] if full else []
    exact += [f"the quantiles of {', '.join(quantiles)}"] if quantiles else []
    mc = f"Monte Carlo over {num_samples} draws (seed {seed})"
    if not exact:
        return f"every number: {mc}"
    return f"exact from the guide: {'; '.join(exact)}; the others: {mc}"


def _reshape(v: torch.Tensor, n: int, shape: torch.Size) -> torch.Tensor:
    """Predictive's draws ``[n, 1, ..., *shape]`` as ``[n, *shape]``."""
    if v.numel() == n * math.prod(shape):
        return v.reshape(n, *shape)
    return v


def _json_line(row: dict) -> str:
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
