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
import hashlib
import importlib.util
import inspect
import json
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

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
from pyro.infer.autoguide.initialization import (
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
    init_to_value,
)
from pyro.poutine.messenger import Messenger

from bayesdl.datasets.io import check_fits, load_arrays
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
from bayesdl.workflows import trust
from bayesdl.workflows.base import Problem, Workflow
from bayesdl.workflows.default_guide import AUTO_GUIDE, AUTO_MVN_MAX_DIM, resolve_guide
from bayesdl.workflows.inputs import check_like_training, numeric_array, real_tensor
from bayesdl.workflows.options import add_options
from bayesdl.workflows.trust import is_file_spec

#: ``--guide`` names -> Pyro's autoguide classes
AUTOGUIDES: dict[str, type] = {
    "auto-normal": AutoNormal,
    "auto-mvn": AutoMultivariateNormal,
    "auto-lowrank": AutoLowRankMultivariateNormal,
    "auto-delta": AutoDelta,
    "auto-laplace": AutoLaplaceApproximation,
}
#: ``--init`` names -> Pyro's initialisation strategies of the autoguides' locations
INITS: dict[str, Callable] = {
    "feasible": init_to_feasible,
    "median": init_to_median,
    "mean": init_to_mean,
    "sample": init_to_sample,
}
PREDICT_SAMPLES = 1000


# ----------------------------------------------------------------------------- user files


def load_module(path: str | Path) -> ModuleType:
    """Import a Python file by its path (once per path and contents); the bytes imported are
    read once and pass the rule of :mod:`bayesdl.workflows.trust` (while a run folder is
    loaded: only code this user fitted or names now). Any failure is a :class:`UserError`
    naming the file and the line."""
    full, code = trust.source(path)
    digest = trust.sha256(code)
    tag = hashlib.sha1(f"{full}\0{digest}".encode()).hexdigest()[:10]
    key = f"_bayesdl_user_{full.stem}_{tag}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, full)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    if str(full.parent) not in sys.path:
        sys.path.append(str(full.parent))  # helpers next to the file import; ours come first
    try:
        exec(compile(code, str(full), "exec", dont_inherit=True), module.__dict__)  # noqa: S102
        trust.imported(full, digest)
    except UserError:
        del sys.modules[key]
        raise
    except BaseException as e:  # noqa: BLE001 - SyntaxError, ImportError, anything it raises
        del sys.modules[key]
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UserError(f"cannot import {path}: {_describe(e, full)}") from None
    return module


def load_function(path: str | Path, name: str, what: str = "function") -> Callable:
    """The callable ``name`` defined in the file ``path``."""
    module = load_module(path)
    fn = getattr(module, name, None)
    if fn is None:
        defined = sorted(
            k
            for k, v in vars(module).items()
            if inspect.isfunction(v) and v.__module__ == module.__name__ and not k.startswith("_")
        )
        raise UserError(
            f"{path} has no {what} {name!r}; it defines: {', '.join(defined) or 'no functions'}"
        )
    if not callable(fn):
        raise UserError(f"{path}: {name!r} is a {type(fn).__name__}, not a {what}")
    return fn


def split_spec(spec: str, what: str = "function") -> tuple[str, str]:
    """``'dir/m.py:model'`` -> ``('dir/m.py', 'model')``."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise UserError(
            f"name the {what} in the file: {spec.split(':')[0]}:FUNCTION, e.g. "
            f"{spec.split(':')[0]}:model"
        )
    return path, name


def file_workflow(spec: str, path: str | None = None, function: str | None = None) -> type:
    """A :class:`UserModel` class for the function ``spec = file.py:function`` (not registered;
    ``path``/``function`` override the spec, e.g. the absolute path a run saved)."""
    if path is None or function is None:
        path, function = split_spec(spec)
    fn = load_function(path, function)
    doc = (inspect.getdoc(fn) or "").strip().splitlines()
    return type(
        "UserFileModel",
        (UserModel,),
        {
            "name": spec,
            "description": doc[0] if doc else f"{function} from {path}",
            "model_fn": staticmethod(fn),
            "model_file": str(Path(path).expanduser().resolve()),
            "model_function": function,
            "__doc__": f"The model {function} of {path}.",
        },
    )


def python_workflow(fn: Callable, data: dict[str, Any] | None) -> type:
    """A :class:`UserModel` class for a model function given from Python, with its data.

    A function importable from a file (not ``__main__``) is recorded by path and name so that
    its run can be reopened from the shell; one defined interactively is recorded by name only
    (reopen it with ``bayesdl.load(dir, model=fn)``).
    """
    if not callable(fn):
        raise UserError(
            f"model must be a Pyro model function or PyroModule, got {type(fn).__name__}"
        )
    if data is not None and not isinstance(data, dict):
        raise UserError(
            f"data must be a dict of the model's keyword arguments, got {type(data).__name__}"
        )
    name = getattr(fn, "__name__", None) or type(fn).__name__
    path = None
    module = getattr(fn, "__module__", None)
    if module not in (None, "__main__") and inspect.isfunction(fn):
        try:
            path = inspect.getsourcefile(fn)
        except TypeError:
            path = None
    if path is not None and not Path(path).is_file():
        path = None
    doc = (inspect.getdoc(fn) or "").strip().splitlines() if inspect.isfunction(fn) else []
    spec = f"{path}:{name}" if path else f"python:{name}"
    base = UserModel
    from bayesdl.models.bayesian_net import BayesianNet

    if isinstance(fn, BayesianNet):  # bayesdl.bnn.bayesian(net): its own guide and reports
        from bayesdl.workflows.bayesian_net import BayesianNetModel as base
    return type(
        "PythonModel",
        (base,),
        {
            "name": spec,
            "description": doc[0] if doc else f"{name}, a Pyro model given from Python",
            "model_fn": staticmethod(fn),
            "model_file": str(Path(path).resolve()) if path else None,
            "model_function": name,
            "given_data": dict(data or {}),
            "__doc__": f"The model {name} given from Python.",
        },
    )


def python_data(data: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments given from Python: numpy arrays become tensors (floating ->
    the default float dtype, integers -> int64; object arrays of numbers converted, complex
    and non-numeric ones refused: :mod:`bayesdl.workflows.inputs`), complex tensors are
    refused, other tensors and values pass unchanged."""
    out = {}
    for k, v in data.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise UserError(f"data keys must be argument names, got {k!r}")
        if isinstance(v, np.ndarray):
            v = _tensor(numeric_array(f"data[{k!r}]", v), f"data[{k!r}]")
        elif torch.is_tensor(v):
            v = real_tensor(f"data[{k!r}]", v)
        out[k] = v
    return out


def plugin_paths(argv: Iterable[str]) -> list[str]:
    """The files named by ``--plugin FILE`` / ``--plugin=FILE`` in a command line."""
    argv, out = list(argv), []
    for i, a in enumerate(argv):
        if a == "--plugin" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith("--plugin="):
            out.append(a.split("=", 1)[1])
    return out


def load_plugins(paths: Iterable[str]) -> None:
    """Import plugin files so that their ``@register`` classes join the registry."""
    for p in paths:
        load_module(p)


def absolute_path(s: str) -> str:
    """argparse ``type``: a path made absolute, links resolved (runs are re-opened from
    anywhere; a link loop is left for the reader to report)."""
    return str(trust.resolved(s))


def absolute_spec(s: str) -> str:
    """argparse ``type`` of ``FILE.py:function``: its file made absolute."""
    path, sep, name = s.rpartition(":")
    if not sep or not path.endswith(".py"):
        return s  # split_spec says what is wrong with it
    return f"{absolute_path(path)}:{name}"


def run_file_records(args: argparse.Namespace) -> dict[str, dict]:
    """The records of the user's code files a run imports, for ``config.json``'s top level
    (:func:`trust.file_records`). Call it after ``workflow.build()``, which makes a guide
    file's path absolute."""
    return trust.file_records(args)


# ----------------------------------------------------------------------------- data


def _tensor(a: np.ndarray, what: str = "an array") -> torch.Tensor:
    """``bool`` stays, integers become ``int64``, the rest the default float dtype; shared with
    the array (no copy) when it already has that dtype, like ``torch.from_numpy``. A value
    beyond that float dtype's range is refused (:func:`~bayesdl.datasets.io.check_fits`)."""
    kind = a.dtype.kind
    if kind == "b":
        target = np.dtype(np.bool_)
    elif kind in "iu":
        target = np.dtype(np.int64)
    else:
        default = torch.get_default_dtype()
        if default not in _NUMPY_FLOATS:
            return torch.as_tensor(a, dtype=default)
        target = _NUMPY_FLOATS[default]
        check_fits(what, a, target)
    if a.dtype != target:  # also a non-native byte order
        a = a.astype(target)
    elif not a.flags.writeable:
        a = a.copy()
    elif any(s < 0 for s in a.strides):
        a = np.ascontiguousarray(a)
    return torch.from_numpy(a)


_NUMPY_FLOATS = {
    torch.float16: np.dtype(np.float16),
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
}


def read_data(
    path: str | Path,
    x_cols: str | None = None,
    y_col: str | None = None,
    require_y: bool = True,
) -> dict[str, torch.Tensor]:
    """Keyword arguments from a data file: every array of a ``.npz``; every named column of a
    ``.csv``, or ``x`` (columns ``x_cols``, shape N x d) and ``y`` (column ``y_col``).

    Floating arrays become the default float dtype, integers ``int64`` (usable as indices),
    ``true``/``false`` columns ``bool``; ``x`` from ``--x-cols`` is a floating N x d matrix.
    A ``.npz`` whose ``x`` and ``y`` (or ``x_test`` and ``y_test``) differ in length is refused."""
    from bayesdl.datasets.io import TABLE_DELIMITERS, load_columns

    suffix = Path(path).suffix.lower()
    if suffix == ".npz":
        arrays = load_arrays(path)
        if x_cols or y_col:
            raise UserError(
                "--x-cols and --y-col pick columns of a .csv; a .npz gives its arrays by name"
            )
        for xk, yk in (("x", "y"), ("x_test", "y_test")):
            x, y = arrays.get(xk), arrays.get(yk)
            if x is not None and y is not None and x.ndim and y.ndim and len(x) != len(y):
                raise UserError(
                    f"data file {path}: {xk} has shape {x.shape} and {yk} {y.shape}; "
                    f"they need the same number of rows"
                )
        return {k: _tensor(v, f"data file {path}: array {k!r}") for k, v in arrays.items()}
    default = _NUMPY_FLOATS.get(torch.get_default_dtype(), np.dtype(np.float64))
    if suffix in TABLE_DELIMITERS:
        names, cols = load_columns(path, default)
    else:  # .npy (or an unknown suffix, which load_arrays refuses)
        table = load_arrays(path)["table"]
        if table.ndim != 2:
            raise UserError(
                f"data file {path}: a table must be 2-D (N x d) to pick columns, "
                f"got shape {table.shape}"
            )
        names, cols = None, [table[:, j] for j in range(table.shape[1])]
    columns = dict(zip(names, cols, strict=True)) if names else {}  # by header name

    def column(c: str) -> np.ndarray:
        if c in columns:
            return columns[c]
        if c.lstrip("-").isdigit() and -len(cols) <= int(c) < len(cols):
            return cols[int(c)]
        known = ", ".join(columns) if columns else f"{len(cols)} unnamed columns (0-based)"
        raise UserError(f"data file {path} has no column {c!r}; it has {known}")

    if not x_cols and not y_col:
        if not columns:
            raise UserError(
                f"data file {path} has no header: name its columns in a first row, "
                "or pick them with --x-cols/--y-col (0-based indices)"
            )
        return {k: _tensor(v, f"data file {path}: column {k!r}") for k, v in columns.items()}
    out: dict[str, torch.Tensor] = {}
    names = list(columns) or [str(j) for j in range(len(cols))]
    if y_col:
        try:
            y = np.ascontiguousarray(column(y_col))
            out["y"] = _tensor(y, f"data file {path}: column {y_col!r}")
        except UserError:
            if require_y:
                raise
    if x_cols:
        xs = [c.strip() for c in x_cols.split(",") if c.strip()]
    else:
        xs = [c for c in names if c != y_col and c != str(y_col)]
    if not xs:
        raise UserError(f"data file {path}: no columns left for x")
    picked = [column(c) for c in xs]
    x = np.empty((len(picked[0]), len(picked)), dtype=default)
    for j, c in enumerate(picked):
        check_fits(f"data file {path}: column {xs[j]!r}", c, default)
        x[:, j] = c
    out["x"] = _tensor(x)
    return out


def parse_kv(items: Iterable[str] | None) -> dict[str, Any]:
    """``--arg name=value`` pairs; values read as JSON (numbers, true/false, lists), else text."""
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UserError(f"--arg takes name=value, got {item!r}")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


def check_arguments(fn: Callable, kwargs: dict[str, Any], where: str, source: str) -> None:
    """Refuse keyword arguments that ``fn`` does not take, and required ones that are absent."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not takes_any:
        for k in kwargs:
            if k not in named:
                raise UserError(
                    f"data key {k!r} ({source}) is not an argument of {where}; "
                    f"it takes: {', '.join(named) or 'no arguments'}"
                )
    for n in named:
        if params[n].default is params[n].empty and n not in kwargs:
            raise UserError(
                f"{where} needs the argument {n!r}, which {source} does not give "
                f"(it gives: {', '.join(kwargs) or 'nothing'})"
            )


# ----------------------------------------------------------------------------- errors


class _LastSite(Messenger):
    """Follows the sample sites the model reaches: ``name``, the last one entered, and whether
    it was completed; :meth:`where` says where an error arose from that."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None  # the last site entered
        self.done = False  # whether its statement completed (sampled, observed, recorded)

    def _pyro_sample(self, msg):
        if type(msg["fn"]).__name__ != "_Subsample":
            self.name, self.done = msg["name"], False

    def _pyro_post_sample(self, msg):
        if type(msg["fn"]).__name__ != "_Subsample" and msg["name"] == self.name:
            self.done = True

    def where(self) -> str | None:
        """``at site 'y'`` for an error inside the site's ``pyro.sample``, ``after site 'w'``
        for one in the code that follows it (e.g. building the next distribution)."""
        if self.name is None:
            return None
        return f"{'after' if self.done else 'at'} site {self.name!r}"


#: a message that names the site itself: Pyro's "at site \"y\"", "site y dim -1", ...
_NAMES_A_SITE = re.compile(r"\bsites?\s+['\"]?[^\s'\"]+")
_MESSAGE_LINES, _MESSAGE_CHARS = 8, 600


def _message(e: BaseException) -> str:
    """The exception's message on one line: its lines joined (Pyro's shape hints included:
    "Expected [], actual [8]; Try one of the following fixes: ..."), up to a table of trace
    shapes, within :data:`_MESSAGE_CHARS`."""
    text = ""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, line in enumerate(lines[:_MESSAGE_LINES]):
        if line.startswith("Trace Shapes:"):  # Pyro's per-site shape table: too long to quote
            break
        line = line[2:] if line.startswith("- ") else line
        text += line if i == 0 else (" " if text.endswith(":") else "; ") + line
    if len(text) > _MESSAGE_CHARS:
        text = text[: _MESSAGE_CHARS - 3].rstrip() + "..."
    return text


def _describe(
    e: BaseException, user_file: Path | None = None, site: _LastSite | str | None = None
) -> str:
    """One line: exception type, the message (its hints included), the user's line, and where
    in the model it arose (``site``: a :class:`_LastSite` that followed the model, or a name)
    unless the message names a site itself."""
    text = _message(e)
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    where = []
    if user_file is not None:
        if isinstance(e, SyntaxError) and e.lineno:
            where.append(f"line {e.lineno}")
        else:
            frames = [
                f
                for f in traceback.extract_tb(e.__traceback__)
                if Path(f.filename).resolve() == user_file
            ]
            if frames:
                where.append(f"line {frames[-1].lineno}")
    place = site.where() if isinstance(site, _LastSite) else site and f"at or after site {site!r}"
    if place and not _NAMES_A_SITE.search(text):
        where.append(place)
    return text + (f" ({', '.join(where)})" if where else "")


# ----------------------------------------------------------------------------- workflow


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

    @dataclass
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
        arg: list[str] = field(
            default_factory=list,
            metadata={
                "help": "extra keyword argument of the model (repeatable)",
                "metavar": "NAME=VALUE",
            },
        )
        init: str | None = field(
            default=None,
            metadata={
                "help": "autoguide initialisation (default: Pyro's for that autoguide)",
                "choices": sorted(INITS),
            },
        )
        init_value: list[str] = field(
            default_factory=list,
            metadata={
                "help": "start the autoguide at this value of a latent site, e.g. "
                "'locs=[-1,1]' (repeatable; other sites as --init)",
                "metavar": "SITE=VALUE",
            },
        )

    options: ClassVar[type] = Options

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        values, overrides = {}, {}
        data = {f.name: f for f in fields(cls.options)}.get("data")
        if cls.default_data and data is not None:  # relative to the plugin file
            values["data"] = str(Path(cls.source()).parent / cls.default_data)
            help = f"{data.metadata.get('help', '')}; default {cls.default_data}"
            overrides["data"] = {"help": help}
        add_options(parser.add_argument_group("your model"), cls.options, values, overrides)
        if cls.model_file:
            parser.set_defaults(model_file=cls.model_file, model_function=cls.model_function)

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
        a = self.args
        kwargs = dict(self.default_args)
        if self.given_data is not None:  # bayesdl.fit(model, data={...}) from Python
            kwargs.update(python_data(self.given_data))
        if path and (not pick_columns or Path(path).name == "prototype.npz"):
            kwargs.update(read_data(path))
        elif path:
            kwargs.update(read_data(path, a.x_cols, a.y_col, require_y=require_y))
        elif a.x_cols or a.y_col:
            raise UserError("--x-cols/--y-col need --data FILE.csv")
        kwargs.update(parse_kv(a.arg))
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

    def make_guide(self, model: Callable, discrete: list[str], spec: Any = None) -> Callable:
        """The guide: an autoguide by name (over the continuous sites) or ``file.py:guide``
        (``spec``, default ``--guide``; ``auto`` resolved by :func:`resolve_guide`)."""
        a = self.args
        spec = a.guide if spec is None else spec
        if self.is_autoguide(spec):
            if discrete and not capabilities(a.estimator).enumerates:
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
            a.guide = f"{absolute_path(path)}:{fn}"  # saved in config.json, reopened from anywhere
            return load_function(path, fn, "guide")
        raise UserError(f"unknown guide {spec!r}: choose {', '.join(AUTOGUIDES)} or FILE.py:guide")

    def _init_kwargs(self, spec: str) -> dict[str, Any]:
        a = self.args
        values = {}
        for name, v in parse_kv(getattr(a, "init_value", None)).items():
            try:
                values[name] = torch.as_tensor(v, dtype=torch.get_default_dtype())
            except (TypeError, ValueError):
                raise UserError(f"--init-value {name}: {v!r} is not a number or list") from None
        # --guide auto starts where auto-normal does (the unconstrained origin): a prior's
        # median (Pyro's default for the others) lies far out under a wide prior
        auto = a.guide == AUTO_GUIDE
        if a.init is None and not values and not auto:
            return {}
        fallback = (
            INITS[a.init]
            if a.init
            else (init_to_feasible if spec == "auto-normal" or auto else init_to_median)
        )  # Pyro's defaults
        if not values:
            return {"init_loc_fn": fallback}
        return {"init_loc_fn": init_to_value(values=values, fallback=fallback)}

    # -- Workflow

    def build(self) -> Problem:
        a = self.args
        model = self.model()
        data = self.data(a.data)
        if a.data:
            source = f"the data file {a.data}"
        elif self.given_data is not None:
            source = "data="
        else:
            source = "--arg (no --data given)"
        check_arguments(model, data, self.where(), source)
        tr = self.trial(model, data)
        latent, discrete, observed, deterministic = [], [], [], []
        data_size = None
        for name, site in tr.nodes.items():
            if site["type"] != "sample":
                continue
            if type(site["fn"]).__name__ == "_Subsample":
                if name == "data":
                    data_size = int(site["fn"].size)
                    declared = site["fn"].subsample_size
                    if a.batch_size is not None and declared not in (None, a.batch_size):
                        raise UserError(
                            f"{self.where()} declares pyro.plate('data', "
                            f"subsample_size={declared}); "
                            f"--batch-size {a.batch_size} must equal it (or leave --batch-size out)"
                        )
                continue
            if site["infer"].get("_deterministic"):  # pyro.deterministic: a function of others
                deterministic.append(name)
                continue
            if site["infer"].get("is_kl"):  # a KL term of the ELBO: no prediction of it
                continue
            if site["is_observed"]:
                observed.append(name)
                continue
            latent.append(name)
            if site["fn"].support.is_discrete:
                discrete.append(name)
                enumerable = getattr(site["fn"], "has_enumerate_support", False)
                if not enumerable and self.is_autoguide(a.guide):
                    raise UserError(
                        f"{self.where()}: latent site {name!r} is discrete and cannot "
                        "be enumerated; write a guide for it (FILE.py:guide)"
                    )
        if not latent:
            raise UserError(
                f"{self.where()} has no latent site: every pyro.sample in it has obs=, so there "
                "is nothing to infer"
            )
        if not observed:  # shown at the model's def
            warn_at(
                f"{self.where()} has no observed site (no pyro.sample with obs=): the fit "
                "approximates the prior",
                UserWarning,
                model,
            )
        if (  # @config_enumerate with the default estimator: sum the marked sites out
            self.is_autoguide(a.guide)
            and a.estimator == self.default_estimator
            and marked_for_enumeration([tr.nodes[n] for n in discrete])
        ):
            a.estimator = "enum"
            self.chosen = "enum: the model marks its discrete sites for enumeration"
        spec = resolve_guide(a.guide, tr, discrete)
        if not self.guided:  # the method draws without a guide (NUTS: bayesdl.fits.methods)
            guide = None
        elif self.is_autoguide(a.guide):
            guide = self.make_guide(model, discrete, spec)
            # one ELBO evaluation with the chosen estimator, on a throwaway guide: errors that
            # only appear under enumeration or vectorized particles name the site here
            self._trial_elbo(model, self.make_guide(model, discrete, spec), data)
        else:
            guide = self.make_guide(model, discrete)
            self._trial_elbo(model, guide, data)
        return Problem(
            model,
            guide,
            data,
            data_size=data_size,
            extra={
                "latent": latent,
                "discrete": discrete,
                "observed": observed,
                "deterministic": deterministic,
                "guide": spec if isinstance(spec, str) else None,
            },
        )

    def record(self) -> dict[str, Any]:
        """``config.json``'s checksums: the data file's and the model (and guide) file's."""
        return {**super().record(), **run_file_records(self.args)}

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

    def _trial_elbo(self, model: Callable, guide: Callable, data: dict[str, Any]) -> None:
        a = self.args
        est = make_estimator(
            a.estimator, a.particles, a.vectorize_particles, float(a.max_plate_nesting)
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
                f"{self.where()} with guide {a.guide} and --estimator {a.estimator}: "
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
        if self.args.guide == AUTO_GUIDE and problem.extra.get("guide"):
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
            a = self.args
            est = make_estimator(a.estimator, 1, False, float(a.max_plate_nesting))
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
