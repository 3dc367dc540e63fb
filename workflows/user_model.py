"""Your own model: a plain Pyro function in a file, fitted like the registered ones.

    bayesdl fit my_model.py:model --data data.npz --guide auto-normal --out runs/mine
    bayesdl fit NAME --plugin my_plugin.py --out runs/mine      (a file that uses @register)

The data file's arrays (``.npz``) or columns (``.csv``) become keyword arguments of the model
(``--x-cols``/``--y-col`` give the regression shape ``x``, ``y``; ``--arg name=value`` adds
scalars); the sites the model marks with ``obs=`` are observed, every other ``pyro.sample`` is
latent. The guide is one of Pyro's autoguides by name or a function ``file.py:guide``. With
``--estimator enum`` the autoguides cover only the continuous sites and the discrete ones are
summed out (``poutine.block(model, hide=...)``, as in Pyro's enumeration tutorial).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import (
    AutoDelta,
    AutoGuide,
    AutoLaplaceApproximation,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)

from bayesdl.inference.errors import UserError
from bayesdl.inference.estimators import capabilities, make_estimator, marked_for_enumeration
from bayesdl.inference.predictive import (
    draw,
    mean_std,
    observation_keys,
    posterior_summary,
    predictive_inputs,
)
from bayesdl.inference.where import definition, warn_at
from bayesdl.workflows.base import Problem, Workflow
from bayesdl.workflows.default_guide import AUTO_GUIDE, AUTO_MVN_MAX_DIM, resolve_guide
from bayesdl.workflows.init_options import INITS, autoguide_init, nuts_init  # noqa: F401
from bayesdl.workflows.inputs import check_like_training
from bayesdl.workflows.options import add_options
from bayesdl.workflows.paths import absolute_path, absolute_spec  # noqa: F401  (re-exported)
from bayesdl.workflows.trust import is_file_spec
from bayesdl.workflows.user_code import (  # noqa: F401  (re-exported)
    load_function,
    load_module,
    load_plugins,
    plugin_paths,
    split_spec,
)
from bayesdl.workflows.user_data import (  # noqa: F401  (re-exported)
    _tensor,
    check_arguments,
    parse_kv,
    python_data,
    read_data,
)
from bayesdl.workflows.user_errors import _describe, _LastSite

if TYPE_CHECKING:
    from bayesdl.workflows.fit_options import FitOptions

#: ``--guide`` names -> Pyro's autoguide classes
AUTOGUIDES: dict[str, type] = {
    "auto-normal": AutoNormal,
    "auto-mvn": AutoMultivariateNormal,
    "auto-lowrank": AutoLowRankMultivariateNormal,
    "auto-delta": AutoDelta,
    "auto-laplace": AutoLaplaceApproximation,
}
PREDICT_SAMPLES = 1000


@dataclass
class _Sites:
    """The model's trial run on its data: the trace, and its sample sites by kind."""

    model: Callable
    data: dict[str, Any]
    trace: poutine.Trace
    latent: list[str] = field(default_factory=list)
    discrete: list[str] = field(default_factory=list)
    observed: list[str] = field(default_factory=list)
    deterministic: list[str] = field(default_factory=list)
    data_size: int | None = None


class UserModel(Workflow):
    """A Pyro function of the user's, fitted with an autoguide or the user's guide.

    Plugins subclass it with ``@register``: set ``name``, ``model_fn = staticmethod(model)``
    and optionally ``default_guide``, ``default_data`` (a path relative to the plugin file),
    ``default_args``, ``fit_defaults``, and override ``evaluate``/``summarize``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = "a user's Pyro model"
    latent: ClassVar[str] = "continuous"
    default_estimator: ClassVar[str] = "reparam"
    guides: ClassVar[tuple[str, ...]] = (AUTO_GUIDE, *AUTOGUIDES, "FILE.py:guide")
    #: auto-mvn up to AUTO_MVN_MAX_DIM latent numbers, else auto-normal (resolve_guide)
    default_guide: ClassVar[str] = AUTO_GUIDE
    #: until the ELBO flattens, then a cosine tail (inference.convergence)
    fit_defaults: ClassVar[dict[str, Any]] = {"steps": "auto", "lr": 0.02, "lr_schedule": "cosine"}
    nuts: ClassVar[bool] = True
    #: None: k-hat judges the guide after every fit (workflows.checks)
    importance_check: ClassVar[str | None] = None
    model_fn: ClassVar[Callable | None] = None
    model_file: ClassVar[str | None] = None  # set for `fit FILE.py:FUNCTION`
    model_function: ClassVar[str | None] = None
    default_data: ClassVar[str | None] = None
    default_args: ClassVar[dict[str, Any]] = {}
    given_data: ClassVar[dict[str, Any] | None] = None  # data passed from Python
    chosen: str | None = None  # an option build() chose for the model, and why

    @classmethod
    def source(cls) -> str:
        """The model's file (for messages): the file it was loaded from, a plugin's file, or
        where the function given from Python is defined (a script's ``__main__`` included,
        never bayesdl's)."""
        if cls.model_file:
            return cls.model_file
        module = getattr(sys.modules.get(cls.__module__), "__file__", None)
        if module and Path(module).resolve() != Path(__file__).resolve():  # a plugin's class
            return module
        place = definition(cls.model_fn)
        if place and Path(place[0]).is_file():
            return place[0]
        return f"{cls.model_function or 'the model'} given from Python"

    @classmethod
    def where(cls) -> str:
        """``function() at file:line`` (``function() in file``) for messages."""
        fn = cls.model_function or getattr(cls.model_fn, "__name__", "model")
        source, place = cls.source(), definition(cls.model_fn)
        if place and Path(place[0]).resolve() == Path(source).resolve():
            return f"{fn}() at {source}:{place[1]}"
        return f"{fn}() in {source}"

    @dataclass(frozen=True)
    class Options:
        """Your model's data (-> its keyword arguments) and its autoguide's start."""

        data: str | None = field(
            default=None,
            metadata={
                "help": ".npz (arrays -> keyword arguments) or .csv (columns -> keyword arguments)",
                "type": absolute_path,
            },
        )
        x_cols: str | None = field(
            default=None,
            metadata={"help": "comma-separated .csv columns (names or 0-based) -> x (N x d)"},
        )
        y_col: str | None = field(default=None, metadata={"help": ".csv column -> y"})
        arg: tuple[str, ...] = field(
            default=(),
            metadata={
                "help": "extra keyword argument of the model (repeatable)",
                "metavar": "NAME=VALUE",
            },
        )
        init: str | None = field(
            default=None,
            metadata={
                "help": "where the autoguide (or NUTS) starts: Pyro's init_to_NAME (default: "
                "Pyro's for that autoguide, uniform for NUTS)",
                "choices": sorted(INITS),
            },
        )
        init_value: tuple[str, ...] = field(
            default=(),
            metadata={
                "help": "start the autoguide (or NUTS) at this value of a latent site, e.g. "
                "'locs=[-1,1]' (repeatable; other sites as --init)",
                "metavar": "SITE=VALUE",
            },
        )

    options: ClassVar[type] = Options

    @classmethod
    def option_values(cls) -> dict[str, Any]:
        """A plugin's ``default_data`` (relative to its file) as the default of ``--data``."""
        if cls.default_data and any(f.name == "data" for f in fields(cls.options)):
            return {"data": str(Path(cls.source()).parent / cls.default_data)}
        return {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        overrides = {}
        data = {f.name: f for f in fields(cls.options)}.get("data")
        if cls.default_data and data is not None:
            help = f"{data.metadata.get('help', '')}; default {cls.default_data}"
            overrides["data"] = {"help": help}
        group = parser.add_argument_group("your model")
        add_options(group, cls.options, cls.option_values(), overrides)

    def recorded_args(self) -> dict[str, Any]:
        """The options, and for a model from a file that file and function (``config.json``
        names them so that the run is reopened from the shell)."""
        args = super().recorded_args()
        if self.model_file:
            args.update(model_file=self.model_file, model_function=self.model_function)
        return args

    def derive(self) -> FitOptions:
        """The options with what the model and its data decide, once before the run: a guide
        file's path made absolute (the run is reopened from anywhere), and ``--estimator enum``
        for a model that marks its discrete sites for enumeration (``@config_enumerate``)
        fitted with an autoguide and the default estimator."""
        settings, guide = self.settings, self.settings.guide
        if isinstance(guide, str) and is_file_spec(guide) and not self.is_autoguide(guide):
            settings = settings.replace(guide=absolute_spec(guide))
        if self._enumerates(self._sites()):
            settings = settings.replace(estimator="enum")
            self.chosen = "enum: the model marks its discrete sites for enumeration"
        return settings

    # -- pieces

    def model(self) -> Callable:
        """The user's model function."""
        if self.model_fn is None:
            raise UserError(f"{type(self).__name__} sets no model_fn")
        return self.model_fn

    def data(
        self, path: str | None, require_y: bool = True, pick_columns: bool = True
    ) -> dict[str, Any]:
        """Keyword arguments: the data file's arrays plus ``--arg`` values; ``--x-cols`` and
        ``--y-col`` pick a table's columns unless ``pick_columns`` is false (a file that
        names its arrays: new inputs as ``.npz``, the run's saved rows)."""
        o = self.model_options
        kwargs = dict(self.default_args)
        if self.given_data is not None:  # bayesdl.fit(model, data={...}) from Python
            kwargs.update(python_data(self.given_data))
        if path and (not pick_columns or Path(path).name == "prototype.npz"):
            kwargs.update(read_data(path))
        elif path:
            kwargs.update(read_data(path, o.x_cols, o.y_col, require_y=require_y))
        elif o.x_cols or o.y_col:
            raise UserError("--x-cols/--y-col need --data FILE.csv")
        kwargs.update(parse_kv(o.arg))
        return kwargs

    def trial(self, model: Callable, data: dict[str, Any]) -> poutine.Trace:
        """Run the model once, computing every log-density, so shape errors name the site."""
        last = _LastSite()
        try:
            with torch.no_grad(), last:
                tr = poutine.trace(model).get_trace(**data)
                tr.compute_log_prob()
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's code may raise anything
            where = _describe(e, Path(self.source()).resolve(), last)
            raise UserError(f"{self.where()}: {where}") from None
        return tr

    def make_guide(
        self, model: Callable, discrete: list[str], spec: Any = None, estimator: str | None = None
    ) -> Callable:
        """The guide: an autoguide by name (over the continuous sites) or ``file.py:guide``
        (``spec``, default ``--guide``; ``auto`` resolved by :func:`resolve_guide`), for the
        ``estimator`` (default ``--estimator``)."""
        spec = self.settings.guide if spec is None else spec
        estimator = self.engine.estimator if estimator is None else estimator
        if self.is_autoguide(spec):
            if discrete and not capabilities(estimator).enumerates:
                raise UserError(
                    f"{self.where()} has discrete latent sites ({', '.join(discrete)}): autoguides "
                    "cover continuous sites only; add --estimator enum to sum them out"
                )
            if discrete and spec == "auto-laplace":
                raise UserError("auto-laplace needs a model without discrete latent sites")
            target = poutine.block(model, hide=discrete) if discrete else model
            cls = AUTOGUIDES[spec] if isinstance(spec, str) else spec
            return cls(target, **self._init_kwargs(spec))
        if callable(spec):  # a guide function or object given from Python
            return spec
        if is_file_spec(spec):
            path, fn = split_spec(spec, "guide")
            return load_function(path, fn, "guide")
        raise UserError(f"unknown guide {spec!r}: choose {', '.join(AUTOGUIDES)} or FILE.py:guide")

    def _init_kwargs(self, spec: str) -> dict[str, Any]:
        o = self.model_options
        return autoguide_init(o.init, o.init_value, spec, self.settings.guide == AUTO_GUIDE)

    def nuts_init_strategy(self):
        """NUTS's ``init_strategy`` from ``--init`` / ``--init-value`` (None: Pyro's)."""
        return nuts_init(self.model_options.init, self.model_options.init_value)

    # -- Workflow

    def _sites(self) -> _Sites:
        """The model run once on its data, its sample sites sorted by kind (once per workflow:
        :meth:`derive` and :meth:`build` share it)."""
        key = (self.model_options, self.settings.guide, self.engine.batch_size)
        cached = getattr(self, "_traced", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        model = self.model()
        data = self.data(self.model_options.data)
        if self.model_options.data:
            source = f"the data file {self.model_options.data}"
        elif self.given_data is not None:
            source = "data="
        else:
            source = "--arg (no --data given)"
        check_arguments(model, data, self.where(), source)
        sites = _Sites(model, data, self.trial(model, data))
        for name, site in sites.trace.nodes.items():
            if site["type"] == "sample":
                self._sort_site(sites, name, site)
        if not sites.latent:
            raise UserError(
                f"{self.where()} has no latent site: every pyro.sample in it has obs=, so there "
                "is nothing to infer"
            )
        if not sites.observed:  # shown at the model's def
            warn_at(
                f"{self.where()} has no observed site (no pyro.sample with obs=): the fit "
                "approximates the prior",
                UserWarning,
                model,
            )
        self._traced = (key, sites)
        return sites

    def _sort_site(self, sites: _Sites, name: str, site: dict) -> None:
        """File one sample site of the trial under data size, deterministic, observed, latent
        (and discrete)."""
        if type(site["fn"]).__name__ == "_Subsample":
            if name == "data":
                sites.data_size = int(site["fn"].size)
                declared, batch = site["fn"].subsample_size, self.engine.batch_size
                if batch is not None and declared not in (None, batch):
                    raise UserError(
                        f"{self.where()} declares pyro.plate('data', subsample_size={declared}); "
                        f"--batch-size {batch} must equal it (or leave --batch-size out)"
                    )
        elif site["infer"].get("_deterministic"):  # pyro.deterministic: a function of others
            sites.deterministic.append(name)
        elif site["infer"].get("is_kl"):  # a KL term of the ELBO: no prediction of it
            pass
        elif site["is_observed"]:
            sites.observed.append(name)
        else:
            sites.latent.append(name)
            if site["fn"].support.is_discrete:
                sites.discrete.append(name)
                enumerable = getattr(site["fn"], "has_enumerate_support", False)
                if not enumerable and self.is_autoguide(self.settings.guide):
                    raise UserError(
                        f"{self.where()}: latent site {name!r} is discrete and cannot "
                        "be enumerated; write a guide for it (FILE.py:guide)"
                    )

    def _enumerates(self, sites: _Sites) -> bool:
        """Whether the marked discrete sites are summed out although ``--estimator`` is the
        default: an autoguide, and a model that marks them (``@config_enumerate``)."""
        return (
            self.is_autoguide(self.settings.guide)
            and self.engine.estimator == self.default_estimator
            and marked_for_enumeration([sites.trace.nodes[n] for n in sites.discrete])
        )

    def build(self) -> Problem:
        sites = self._sites()
        model, data, discrete = sites.model, sites.data, sites.discrete
        estimator = "enum" if self._enumerates(sites) else self.engine.estimator
        spec = resolve_guide(self.settings.guide, sites.trace, discrete)
        if not self.guided:  # the method draws without a guide (NUTS: bayesdl.fits.methods)
            guide = None
        elif self.is_autoguide(self.settings.guide):
            guide = self.make_guide(model, discrete, spec, estimator)
            # one ELBO evaluation with the chosen estimator, on a throwaway guide: errors that
            # only appear under enumeration or vectorized particles name the site here
            self._trial_elbo(
                model, self.make_guide(model, discrete, spec, estimator), data, estimator
            )
        else:
            guide = self.make_guide(model, discrete, None, estimator)
            self._trial_elbo(model, guide, data, estimator)
        return Problem(
            model,
            guide,
            data,
            data_size=sites.data_size,
            extra={
                "latent": sites.latent,
                "discrete": discrete,
                "observed": sites.observed,
                "deterministic": sites.deterministic,
                "guide": spec if isinstance(spec, str) else None,
            },
        )

    def prototype(self, problem: Problem) -> dict[str, Any] | None:
        """The first rows of every per-datum array (leading size N of the data plate), small
        arrays whole; ``None`` when an array is neither (it cannot be rebuilt from a few rows)."""
        n = problem.data_size
        if not n:
            return None
        out = {}
        for k, v in problem.data.items():
            if not torch.is_tensor(v):
                continue  # scalars come back from --arg
            if v.dim() >= 1 and v.shape[0] == n:
                out[k] = v[: min(n, 2)].detach().cpu().numpy()
            elif v.numel() <= 10_000:
                out[k] = v.detach().cpu().numpy()
            else:
                return None
        return out or None

    @staticmethod
    def is_autoguide(spec: Any) -> bool:
        """An autoguide by name or class (a fresh one is made for every fit)."""
        if isinstance(spec, str):
            return spec in AUTOGUIDES or spec == AUTO_GUIDE
        return isinstance(spec, type) and issubclass(spec, AutoGuide)

    def _trial_elbo(
        self, model: Callable, guide: Callable, data: dict[str, Any], estimator: str
    ) -> None:
        e = self.engine
        est = make_estimator(
            estimator, e.particles, e.vectorize_particles, float(e.max_plate_nesting)
        )
        last = _LastSite()
        try:
            # in a param store of its own: the trial's parameters never reach the fit
            with pyro.get_param_store().scope(), last:  # (gradients on: TraceEnum_ELBO needs them)
                loss = est.loss if est.differentiable else est.elbo.loss
                loss(est.wrap_model(model), est.wrap_guide(guide), **data)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001
            raise UserError(
                f"{self.where()} with guide {self.settings.guide} and --estimator {estimator}: "
                f"{_describe(e, Path(self.source()).resolve(), last)}"
            ) from None

    def posterior_guide(self, problem: Problem) -> Callable:
        """The guide to draw the posterior from (the Laplace Gaussian for ``auto-laplace``)."""
        if isinstance(problem.guide, AutoLaplaceApproximation):
            try:
                return problem.guide.laplace_approximation(**problem.data)
            except Exception as e:  # noqa: BLE001 - a singular Hessian
                raise UserError(f"the Laplace approximation failed: {_describe(e)}") from None
        return problem.guide

    def summarize(self, problem: Problem) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.settings.guide == AUTO_GUIDE and problem.extra.get("guide"):
            out["guide"] = problem.extra["guide"]  # what `auto` chose
            out["guide_choice"] = (
                f"auto: auto-mvn up to {AUTO_MVN_MAX_DIM} latent numbers, else auto-normal"
            )
        out |= {
            "user_model": {
                "function": self.where(),
                "latent_sites": problem.extra.get("latent", []),
                "enumerated_sites": problem.extra.get("discrete", []),
                "observed_sites": problem.extra.get("observed", []),
                "deterministic_sites": problem.extra.get("deterministic", []),
                **({"estimator_chosen": self.chosen} if getattr(self, "chosen", None) else {}),
                "data_size": problem.data_size,
            }
        }
        if isinstance(problem.guide, AutoLaplaceApproximation):
            out["map"] = posterior_summary(problem.guide, problem.data, num_samples=2)
            out["map"] = {k: v["mean"] for k, v in out["map"].items()}
        return out

    def evaluate(self, problem: Problem, out: Path) -> dict[str, Any]:
        guide = self.posterior_guide(problem)
        result: dict[str, Any] = {
            "posterior": posterior_summary(guide, problem.data, model=problem.model)
        }
        if not isinstance(problem.guide, AutoLaplaceApproximation):
            est = make_estimator(
                self.engine.estimator, 1, False, float(self.engine.max_plate_nesting)
            )
            m, g = est.wrap_model(problem.model), est.wrap_guide(problem.guide)
            losses = [float(est.loss(m, g, **problem.data).detach()) for _ in range(100)]
            result["elbo"] = -float(np.mean(losses))
            result["elbo_stderr"] = float(np.std(losses) / np.sqrt(len(losses)))
        return result

    def predict(self, problem: Problem, path: Path) -> dict[str, Any]:
        """Mean and sd of every site of the model -- latent, observed, ``pyro.deterministic``
        -- at the inputs of ``path``, as :meth:`bayesdl.Posterior.predict` draws them (the
        training arguments not given keep their values, but the observations are drawn)."""
        # new inputs as a table are read as the training table was; a .npz names its arrays
        picked = Path(path).suffix.lower() != ".npz"
        new = self.data(str(path), require_y=False, pick_columns=picked)
        model, guide = problem.model, self.posterior_guide(problem)
        with torch.no_grad():
            observed = observation_keys(
                poutine.replay(model, poutine.trace(guide).get_trace(**problem.data)),
                problem.data,
            )
        inputs = predictive_inputs(problem.data, new, observed)
        check_arguments(model, inputs, self.where(), f"the inputs {path}")
        check_like_training(inputs, problem.data, f"predict on {path}")
        device = next((v.device for v in problem.data.values() if torch.is_tensor(v)), None)
        inputs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()}
        last = _LastSite()
        try:
            with torch.no_grad(), last:
                draws = draw(model, guide, inputs, PREDICT_SAMPLES, None)
        except Exception as e:  # noqa: BLE001
            raise self.explain(e, f"on {path}", last) from None
        return {"num_samples": PREDICT_SAMPLES, **mean_std(draws)}

    @classmethod
    def explain(cls, e: BaseException, doing: str = "", site: Any = None) -> UserError:
        """A one-line :class:`UserError` for an exception from the user's model: its function,
        file and line (and site, given a :class:`_LastSite` that followed the model)."""
        where = f"{cls.where()} {doing}".rstrip()
        return UserError(f"{where}: {_describe(e, Path(cls.source()).resolve(), site)}")
