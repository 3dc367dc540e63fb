"""What a registered model provides: options, data, model + guide, and its reports."""

from __future__ import annotations

import argparse
import hashlib
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import pyro

from bayesdl.inference.errors import UserError
from bayesdl.workflows.options import add_options, defaults

if TYPE_CHECKING:
    from bayesdl.inference.train import FitConfig
    from bayesdl.workflows.fit_options import FitOptions


@dataclass
class Problem:
    """A model, its guide and the keyword arguments both take.

    ``data_size`` is N of the model's ``pyro.plate("data", N)`` (for minibatches);
    ``extra`` holds what reports need (test split, exact posterior, ...);
    ``data_hook(epoch, data) -> data`` redraws the data each epoch (see ``inference.train.fit``);
    ``params`` is the fit's own Pyro param store state: the guide's ``pyro.param`` values are
    read inside :meth:`scope`.
    """

    model: Callable
    guide: Callable
    data: dict[str, Any]
    data_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    data_hook: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None
    params: dict = field(default_factory=lambda: {"params": {}, "constraints": {}})

    @contextmanager
    def scope(self) -> Iterator[dict]:
        """Run model and guide with this problem's parameters (never the global store's)."""
        with pyro.get_param_store().scope(self.params) as state:
            yield state


class Workflow:
    """Base class of the registered models. Subclasses set the class attributes and
    override :meth:`build`; every report hook is optional.

    A workflow is made from one frozen :class:`~bayesdl.workflows.fit_options.FitOptions`
    (``Workflow(options)``): :attr:`model_options` is the instance of its own :attr:`options`
    dataclass, :attr:`engine` the :class:`~bayesdl.inference.train.FitConfig`,
    ``settings.guide`` the guide and ``settings.sampler`` NUTS's settings. It never changes
    them: what it derives from them is :meth:`derive`'s new object, made once before the run
    (:func:`start`), and that object is what ``config.json`` records.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    latent: ClassVar[str] = "continuous"  # continuous | discrete | mixed
    default_estimator: ClassVar[str] = "reparam"
    guides: ClassVar[tuple[str, ...]] = ()
    default_guide: ClassVar[str] = ""
    #: engine defaults for this model (FitConfig field -> value)
    fit_defaults: ClassVar[dict[str, Any]] = {}
    #: whether ``--inference nuts`` may sample this model (small continuous models)
    nuts: ClassVar[bool] = False
    #: whether :meth:`build` pairs the model with a guide: false when the method that fits the
    #: run draws the posterior without one (NUTS); set by that method (``bayesdl.fits.methods``)
    guided: bool = True
    #: the runs `bayesdl tour` makes of this model, each a list of `fit` arguments
    #: (quick settings, bundled data)
    tour_runs: ClassVar[list[list[str]]] = [[]]

    #: the model's own options: a dataclass, one field per option (``--prior-a`` is field
    #: ``prior_a``; see :mod:`bayesdl.workflows.options`); ``None``: none
    options: ClassVar[type | None] = None
    #: the module of this model's report in :mod:`bayesdl.reports` (``"coin"``:
    #: ``bayesdl.reports.coin``), with ``figures(workflow, problem, out)`` and
    #: ``comparison(workflow, summary)``; ``None``: none (see :func:`report_module`)
    report: ClassVar[str | None] = None
    #: the value an option takes in a ``config.json`` written before the option existed, where
    #: that is not its default (option name -> value; :func:`~bayesdl.workflows.fit_options.
    #: from_record`): an option that changes what new runs do keeps older runs as they were
    record_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, options: FitOptions):
        self.settings = options

    @property
    def model_options(self) -> Any:
        """The model's own options: an instance of :attr:`options` (frozen)."""
        return self.settings.model

    @property
    def engine(self) -> FitConfig:
        """The engine's options (frozen)."""
        return self.settings.engine

    def derive(self) -> FitOptions:
        """The options with the values this model derives from them (and from its data) before
        the run starts -- a new object, never a change to :attr:`settings`; :func:`start` calls
        it once and the run records its result. Default: the options as given."""
        return self.settings

    def recorded_args(self) -> dict[str, Any]:
        """``config.json``'s ``"args"``: every option of :attr:`settings`
        (:meth:`FitOptions.record`)."""
        return self.settings.record()

    @classmethod
    def option_values(cls) -> dict[str, Any]:
        """Defaults of the model's own options other than its dataclass's (e.g. a plugin's
        default data file); used by the flags and the Python keywords alike."""
        return {}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Model-specific command-line options: one per field of :attr:`options`."""
        if cls.options is not None:
            group = parser.add_argument_group(cls.name or "model")
            add_options(group, cls.options, cls.option_values())

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The defaults of the model's own options (fill in what an older run's config lacks);
        a plugin that declares argparse options instead (overrides :meth:`add_arguments`):
        their defaults."""
        if cls.options is not None:
            return {**defaults(cls.options), **cls.option_values()}
        parser = argparse.ArgumentParser(add_help=False)
        cls.add_arguments(parser)
        return vars(parser.parse_args([]))

    def build(self) -> Problem:
        """Load the data and pair the model with the chosen guide."""
        raise NotImplementedError

    def prototype(self, problem: Problem) -> dict[str, Any] | None:
        """A few rows of the training data from which :meth:`build` can rebuild the model and
        guide for prediction (saved as ``prototype.npz``); ``None``: none."""
        return None

    def record(self) -> dict[str, Any]:
        """Extra entries of ``config.json``: the sha256 of the data file the options name, so
        that ``--resume`` refuses a run whose data changed, and the path and sha256 of the
        code files they name (``--net``, a guide file: :func:`trust.file_records`)."""
        import bayesdl.workflows.trust as trust

        args = self.recorded_args()
        out = trust.file_records(args)
        path = args.get("data")
        if isinstance(path, str) and Path(path).is_file():
            out["data_sha256"] = file_sha256(Path(path))
        return out

    def nuts_init_strategy(self):
        """NUTS's ``init_strategy`` (None: Pyro's default, ``init_to_uniform``)."""
        return None

    def summarize(self, problem: Problem) -> dict[str, Any]:
        """Model-specific entries of ``summary.json`` (exact posterior, KL, predictives ...)."""
        return {}

    def figures(self, problem: Problem, out: Path) -> list[str]:
        """Write PNG figures into ``out``; return their file names (the :attr:`report`'s)."""
        report = report_module(type(self))
        return report.figures(self, problem, out) if report is not None else []

    def evaluate(self, problem: Problem, out: Path) -> dict[str, Any]:
        """Held-out metrics of a fitted run."""
        return {}

    def predict(self, problem: Problem, path: Path) -> dict[str, Any]:
        """Posterior predictive for the inputs in ``path``."""
        raise UserError(f"model {self.name!r} has no predict")

    def sample(self, problem: Problem, out: Path) -> dict[str, Any]:
        """Draw from the fitted generative model into ``out`` (images, arrays); return a summary."""
        raise UserError(f"model {self.name!r} has no sample")

    def comparison(self, summary: dict[str, Any]) -> list[tuple]:
        """Rows ``(quantity, reference, fitted[, kind[, accepted (lo, hi)]])`` for the tour
        report (the :attr:`report`'s): ``kind`` says what the reference is (``exact``, ``nuts``;
        or ``ideal``, ``bound``, ``paper``, ``baseline``, ``target``), the range where the
        fitted value is judged."""
        report = report_module(type(self))
        return report.comparison(self, summary) if report is not None else []


def report_module(workflow: type[Workflow]) -> ModuleType | None:
    """The report of a named model, ``bayesdl.reports.<workflow.report>``, imported by name when
    a run asks for its figures or the tour for its rows.

    The report floor sits above the workflows and the run folders, so neither imports it: a
    model declares its report by name (a class attribute, the code's, never a run folder's
    ``config.json``) and this one function finds it, as a plugin is found by its entry point.
    """
    if workflow.report is None:
        return None
    return importlib.import_module(f"bayesdl.reports.{workflow.report}")


def start(workflow_cls: type[Workflow], options: FitOptions) -> Workflow:
    """The workflow of a run: made from ``options``, then from the options it derives from them
    (:meth:`Workflow.derive`), once, before anything is built or recorded. Runs in a throwaway
    param store (a trial of the user's model may create parameters)."""
    workflow = workflow_cls(options)
    with pyro.get_param_store().scope():
        derived = workflow.derive()
    workflow.settings = derived
    return workflow


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    from bayesdl.inference import files

    h = hashlib.sha256()
    with files.open_regular(path, "data file", follow=True) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ImageDataOptions:
    """``--data digits|mnist|FILE.npz``, ``--data-dir`` and ``--split-seed``: the image data
    options shared by the digit models (bnn, vae, stochastic-depth)."""

    data: str = field(
        default="digits",
        metadata={
            "help": "digits (bundled 8x8, default) | mnist | FILE.npz with x (N x D) and integer y"
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "folder of the MNIST IDX files (or $BAYESDL_MNIST_DIR); implies --data mnist"
        },
    )
    split_seed: int = field(
        default=0,
        metadata={"help": "seed of the train/test split of digits or an .npz (default 0)"},
    )


def image_data_source(args) -> str:
    """``digits``, ``mnist`` or the .npz path the options name (``--data-dir`` alone means
    MNIST)."""
    if args.data == "digits" and args.data_dir:
        return "mnist"
    return args.data
