"""UCI regression on the standard 20 splits (Hernandez-Lobato & Adams 2015; Gal & Ghahramani
2016): a 50-unit ReLU network, Bayesian by ``bayesdl.bnn.bayesian``, fitted by ``bayesdl.fit``.

    python benchmarks/uci.py --data-dir DIR --out /work/bench25/uci            # everything
    python benchmarks/uci.py --data-dir DIR --sets yacht --splits 2 --out OUT  # a taste
    python benchmarks/uci.py --synthetic --splits 1 --steps 50 --out OUT       # no data needed

Protocol per data set and split: inputs and target standardised with the training split's mean
and sd; the last 20 % of a seeded permutation of the training split is the validation part;
every configuration of the method's grid (:data:`GRIDS`) is fitted on the other 80 % and scored
by the validation log-likelihood; the best is refitted on the whole training split and scored
on the test split, in the original units: RMSE ``sqrt(mean (y - E[y])^2)`` and the
log-likelihood per datum ``log (1/S) sum_s N(y | mu_s, sigma_s^2) - log sd(y)`` (the mean
predictive density over ``S`` posterior draws, noise included). The test split is never read
before the configuration is chosen.

Methods: ``meanfield`` (local reparameterization), ``flipout``, ``mc-dropout`` (Gal's: a
Bernoulli mask on every layer's input units, noise fixed by ``tau``) and ``nuts`` (Pyro's NUTS
through ``bayesdl.fit(method="nuts")`` on the same network written as a Pyro model; only where
it is affordable, see :data:`NUTS_SETS`).

Each finished (data set, method, split) is one JSON file ``OUT/SET/METHOD/split-K.json``; a
file that exists is skipped, so an interrupted run continues where it stopped.
``benchmarks/full_protocol_tables.py`` prints the tables from ``OUT``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

SETS = (
    "bostonHousing",
    "concrete",
    "energy",
    "wine-quality-red",
    "yacht",
    "kin8nm",
    "power-plant",
    "naval-propulsion-plant",
)
METHODS = ("meanfield", "flipout", "mc-dropout", "nuts")
HIDDEN = 50
VALIDATION = 0.2
STEPS = 3000
#: sets NUTS samples (one chain): the smallest networks and data (yacht 6-50-1 on 277 points,
#: 401 weights; boston 13-50-1 on 455, 751); about 1 CPU second per draw at tree depth 10
NUTS_SETS = ("yacht", "bostonHousing")


def grid(name: str, taus: list[float]) -> list[dict]:
    """The configurations tried on the validation part (small on purpose: each is one fit).

    * meanfield: the prior sd ``prior_scale / sqrt(fan_in)`` of the weights, ``prior_scale``
      in {1, 3}, times the noise: one learned sd (a point estimate, started at 0.1) or
      predicted per input (a second output, ``sd = softplus(g) + 1e-3``).
    * flipout: the configuration meanfield chose on the same validation part (the same
      variational family and ELBO; only the gradient estimator differs), or this grid where
      meanfield's result for the split is absent.
    * mc-dropout: the dropout rate p in {0.01, 0.05} (Gal's grid is {0.005, 0.01, 0.05, 0.1})
      times the data set's own three ``tau`` values (``tau_values.txt``; the noise sd is
      ``1 / sqrt(tau)`` in the original units); weight prior sd ``1 / sqrt(fan_in)``.
    """
    if name in ("meanfield", "flipout"):
        return [
            {"prior_scale": s, "noise": n} for s in (1.0, 3.0) for n in ("learned", "predicted")
        ]
    if name == "mc-dropout":
        return [{"dropout": p, "tau": t} for p in (0.01, 0.05) for t in taus]
    if name == "nuts":
        return [{"prior_scale": 1.0}]
    raise ValueError(f"unknown method {name!r}")


# ----------------------------------------------------------------------------- data


@dataclass
class UCISet:
    """One data set in the standard layout: rows, feature and target columns, the splits."""

    name: str
    x: np.ndarray
    y: np.ndarray
    splits: list[tuple[np.ndarray, np.ndarray]]
    taus: list[float]


def _ints(path: Path) -> np.ndarray:
    return np.atleast_1d(np.loadtxt(path, dtype=np.int64))


def load_set(data_dir: Path, name: str) -> UCISet:
    """``DIR/NAME/data.txt`` with its ``index_*.txt`` files (0-based rows and columns)."""
    d = Path(data_dir) / name
    data = np.loadtxt(d / "data.txt")
    features, target = _ints(d / "index_features.txt"), int(_ints(d / "index_target.txt")[0])
    n = int(_ints(d / "n_splits.txt")[0]) if (d / "n_splits.txt").exists() else 20
    splits = [
        (_ints(d / f"index_train_{k}.txt"), _ints(d / f"index_test_{k}.txt")) for k in range(n)
    ]
    taus_file = d / "tau_values.txt"
    taus = [float(v) for v in taus_file.read_text().split()] if taus_file.exists() else [1.0]
    return UCISet(name, data[:, features], data[:, target], splits, taus)


def write_synthetic(root: Path, n: int = 160, d: int = 3, splits: int = 2) -> Path:
    """A small data set ``root/synthetic`` in the UCI layout (``y = sin(x1) + x2 / 2 + noise``),
    for the smoke test; returns ``root``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d))
    y = 3.0 * (np.sin(x[:, 0]) + 0.5 * x[:, 1]) + 10.0 + 0.3 * rng.normal(size=n)
    out = Path(root) / "synthetic"
    out.mkdir(parents=True, exist_ok=True)
    np.savetxt(out / "data.txt", np.column_stack([x, y]))
    np.savetxt(out / "index_features.txt", np.arange(d), fmt="%d")
    np.savetxt(out / "index_target.txt", [d], fmt="%d")
    np.savetxt(out / "n_splits.txt", [splits], fmt="%d")
    np.savetxt(out / "tau_values.txt", [5.0, 10.0], fmt="%g")
    for k in range(splits):
        perm = np.random.default_rng(k).permutation(n)
        np.savetxt(out / f"index_train_{k}.txt", np.sort(perm[: n * 9 // 10]), fmt="%d")
        np.savetxt(out / f"index_test_{k}.txt", np.sort(perm[n * 9 // 10 :]), fmt="%d")
    return Path(root)


@dataclass
class Standardised:
    """Train and evaluation arrays standardised with the training part's statistics."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    y_mean: float
    y_sd: float


def standardise(x: np.ndarray, y: np.ndarray, train: np.ndarray, ev: np.ndarray) -> Standardised:
    """``(x - mean) / sd`` per feature (constant features: sd 1) and ``(y - mean) / sd``, the
    statistics of the rows ``train`` only."""
    mx, sx = x[train].mean(0), x[train].std(0)
    sx = np.where(sx > 0, sx, 1.0)
    my, sy = float(y[train].mean()), float(y[train].std())
    f = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    xs, ys = (x - mx) / sx, (y - my) / sy
    return Standardised(f(xs[train]), f(ys[train]), f(xs[ev]), f(ys[ev]), my, sy)


def validation_split(train: np.ndarray, split: int) -> tuple[np.ndarray, np.ndarray]:
    """The training rows cut into 80 % fitting and 20 % validation (a permutation seeded by
    the split's number)."""
    perm = np.random.default_rng(1000 + split).permutation(train)
    n_val = max(1, round(VALIDATION * len(train)))
    return perm[n_val:], perm[:n_val]


# ----------------------------------------------------------------------------- fitting


@dataclass
class Schedule:
    """How long and in what minibatches one fit runs (the same for every method of a set)."""

    steps: int
    batch_size: int | None  # None: the whole training part at every step
    lr: float = 1e-2
    samples: int = 500  # posterior draws of the predictive
    compile: bool = True  # bayesdl.fit(compile=True): the whole SVI step compiled


def schedule(n_train: int, steps: int | None = None, compile: bool = True) -> Schedule:
    """Full-batch steps below 2000 training rows, minibatches of 256 above; 3000 steps (about
    90 epochs of power-plant's 8611 rows), Adam 1e-2 decayed linearly to 0."""
    return Schedule(steps or STEPS, None if n_train < 2000 else 256, compile=compile)


def make_net(d_in: int, seed: int, d_out: int = 1) -> nn.Sequential:
    """``d_in``-50-``d_out`` with ReLU: the protocol's network (two outputs, mean and noise,
    where the noise sd is predicted)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, d_out))


def build(method: str, config: dict, d_in: int, y_sd: float, seed: int):
    """The Bayesian network of ``method`` with one grid ``config``."""
    import bayesdl.bnn as bnn

    net = make_net(d_in, seed, 2 if config.get("noise") == "predicted" else 1)
    if method == "mc-dropout":
        noise = 1.0 / math.sqrt(config["tau"]) / y_sd  # tau is a precision in original units
        return bnn.bayesian(
            net,
            likelihood="gaussian",
            guide="mc-dropout",
            noise=noise,
            dropout=config["dropout"],
            prior_scale=1.0,
        )
    return bnn.bayesian(
        net,
        likelihood="gaussian",
        guide=method,
        noise=config.get("noise", "learned"),
        noise_init=0.1,
        prior_scale=config["prior_scale"],
    )


def evaluate(post, data: Standardised, samples: int) -> dict:
    """RMSE and log-likelihood per datum on ``data``'s evaluation part, in original units."""
    from bayesdl.workflows.bayesian_net import scores

    torch.manual_seed(0)
    f = post.predict({"x": data.x_eval}, num_samples=samples)["f"]
    r = scores(post.model.likelihood, f, data.y_eval, post.params.get("sigma"))
    return {
        "rmse": r["rmse"] * data.y_sd,
        "log_likelihood": r["log_likelihood"] - math.log(data.y_sd),
        "coverage_95": r["coverage_95"],
    }


def fit_once(method: str, config: dict, data: Standardised, sch: Schedule, seed: int) -> dict:
    """One ``bayesdl.fit`` (compiled) and its scores on ``data``'s evaluation part."""
    import bayesdl

    bnet = build(method, config, data.x_train.shape[1], data.y_sd, seed)
    wall, cpu = time.perf_counter(), time.process_time()
    post = bayesdl.fit(
        bnet,
        data={"x": data.x_train, "y": data.y_train},
        steps=sch.steps,
        lr=sch.lr,
        lr_schedule="linear",
        batch_size=sch.batch_size,
        seed=seed,
        compile=sch.compile,
        progress=False,
        log_every=max(1, sch.steps // 10),
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out = {"config": config, **evaluate(post, data, sch.samples)}
    sigma = post.params.get("sigma")
    if sigma is not None:
        out["sigma"] = float(sigma) * data.y_sd
    s = post._run.summary
    out["timing"] = {
        "fit_wall_s": round(wall, 2),
        "fit_cpu_s": round(cpu, 2),
        "loop_wall_s": s.get("wall_seconds"),
        "steps": sch.steps,
        "compiled": bool(s.get("compiled", False)),
    }
    return out


# ----------------------------------------------------------------------------- NUTS


def nuts_model(prior_scale: float):
    """The same ``d``-50-1 ReLU network as a Pyro model: weights ``N(0, s^2 / fan_in)``
    (biases ``N(0, s^2)``), noise sd ``sigma ~ HalfNormal(1)`` (standardised units)."""
    import pyro
    import pyro.distributions as dist

    def model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        d, s = x.shape[1], prior_scale
        w1 = pyro.sample("w1", dist.Normal(0.0, s / math.sqrt(d)).expand([d, HIDDEN]).to_event(2))
        b1 = pyro.sample("b1", dist.Normal(0.0, s).expand([HIDDEN]).to_event(1))
        w2 = pyro.sample("w2", dist.Normal(0.0, s / math.sqrt(HIDDEN)).expand([HIDDEN]).to_event(1))
        b2 = pyro.sample("b2", dist.Normal(0.0, s))
        sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
        f = torch.relu(x @ w1 + b1) @ w2 + b2
        with pyro.plate("data", x.shape[0]):
            pyro.deterministic("f", f)
            pyro.sample("y", dist.Normal(f, sigma), obs=y)

    return model


def nuts_once(data: Standardised, a: argparse.Namespace, seed: int) -> dict:
    """One NUTS run (``a.nuts_warmup`` + ``a.nuts_draws`` iterations, one chain) and its test
    scores: the log of the mean over draws of ``N(y | f_s(x), sigma_s^2)``."""
    import bayesdl

    wall, cpu = time.perf_counter(), time.process_time()
    post = bayesdl.fit(
        nuts_model(1.0),
        data={"x": data.x_train, "y": data.y_train},
        method="nuts",
        num_samples=a.nuts_draws,
        warmup=a.nuts_warmup,
        chains=1,
        seed=seed,
        progress=False,
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n_draws = a.nuts_draws  # one chain: every draw, in a random order
    pred = post.predict({"x": data.x_eval}, num_samples=n_draws)
    mu, sigma = pred["f"].reshape(n_draws, -1), pred["sigma"].reshape(n_draws, 1)
    logp = torch.distributions.Normal(mu, sigma).log_prob(data.y_eval)
    ll = torch.logsumexp(logp, 0) - math.log(len(mu))
    s = post._run.summary
    return {
        "config": {"prior_scale": 1.0, "warmup": a.nuts_warmup, "draws": a.nuts_draws},
        "rmse": float((mu.mean(0) - data.y_eval).pow(2).mean().sqrt()) * data.y_sd,
        "log_likelihood": float(ll.mean()) - math.log(data.y_sd),
        "nuts": {k: s.get(k) for k in ("divergences", "chain_stats", "convergence")},
        "timing": {"fit_wall_s": round(wall, 2), "fit_cpu_s": round(cpu, 2), "compiled": False},
    }


# ----------------------------------------------------------------------------- one split


def tune(ds: UCISet, method: str, k: int, sch: Schedule, out: Path) -> tuple[dict, list[dict]]:
    """The configuration with the best validation log-likelihood, and every one tried
    (flipout takes meanfield's choice for the split when ``out`` holds it)."""
    mf = out / ds.name / "meanfield" / f"split-{k}.json"
    if method == "flipout" and mf.exists():
        row = json.loads(mf.read_text())
        return row["chosen"], [{**v, "from": "meanfield"} for v in row["validation"]]
    train, _ = ds.splits[k]
    fit_rows, val_rows = validation_split(train, k)
    val = standardise(ds.x, ds.y, fit_rows, val_rows)
    tried = [fit_once(method, c, val, sch, k) for c in grid(method, ds.taus)]
    best = max(tried, key=lambda r: r["log_likelihood"])["config"]
    keep = ("rmse", "log_likelihood", "sigma")
    return best, [
        {**r["config"], **{k: r[k] for k in keep if k in r}, **r["timing"]} for r in tried
    ]


def run_split(ds: UCISet, method: str, k: int, a: argparse.Namespace) -> dict:
    """Tune on the validation part of split ``k``'s training rows, refit on all of them, score
    the test rows."""
    train, test = ds.splits[k]
    sch = schedule(len(train), a.steps, not a.eager)
    t0, c0 = time.perf_counter(), time.process_time()
    data = standardise(ds.x, ds.y, train, test)
    if method == "nuts":
        tried, final = [], nuts_once(data, a, k)
    else:
        best, tried = tune(ds, method, k, sch, Path(a.out))
        final = fit_once(method, best, data, sch, k)
    epochs = sch.steps * (sch.batch_size or len(train)) / len(train)
    return {
        "set": ds.name,
        "method": method,
        "split": k,
        "n_train": len(train),
        "n_test": len(test),
        "schedule": {**vars(sch), "epochs": round(epochs, 1)},
        "validation": tried,
        "chosen": final["config"],
        "test_rmse": final["rmse"],
        "test_ll": final["log_likelihood"],
        "final": final,
        "total_wall_s": round(time.perf_counter() - t0, 1),
        "total_cpu_s": round(time.process_time() - c0, 1),
        "threads": torch.get_num_threads(),
        "commit": _commit(),
    }


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )  # noqa: E501
        return out.stdout.strip()
    except OSError:
        return ""


def _split_list(spec: str, n: int) -> list[int]:
    if "," in spec or "-" in spec:
        out: list[int] = []
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
        return [k for k in out if k < n]
    return list(range(min(int(spec), n)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="the UCI folder (or $BAYESDL_UCI_DIR)")
    p.add_argument("--synthetic", action="store_true", help="a small made-up set instead")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--methods", default="meanfield,flipout,mc-dropout")
    p.add_argument("--splits", default="20", help="a count (first K) or a list: 0,1,5-9")
    p.add_argument("--steps", type=int, help="steps per fit (default: the protocol's 5000)")
    p.add_argument("--eager", action="store_true", help="no --compile (short smoke runs)")
    p.add_argument("--nuts-warmup", type=int, default=300)
    p.add_argument("--nuts-draws", type=int, default=200)
    p.add_argument("--out", required=True, help="results folder (one JSON per split)")
    a = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    warnings.filterwarnings("ignore")
    if a.synthetic:
        data_dir, sets = write_synthetic(Path(a.out) / "data"), ["synthetic"]
    else:
        data_dir = a.data_dir or os.environ.get("BAYESDL_UCI_DIR")
        if not data_dir:
            p.error("give --data-dir (or set BAYESDL_UCI_DIR), or --synthetic")
        sets = a.sets.split(",")
    for name in sets:
        ds = load_set(Path(data_dir), name)
        for method in a.methods.split(","):
            if method == "nuts" and name not in NUTS_SETS and not a.synthetic:
                continue
            for k in _split_list(a.splits, len(ds.splits)):
                path = Path(a.out) / name / method / f"split-{k}.json"
                if path.exists():
                    continue
                row = run_split(ds, method, k, a)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(row, indent=1) + "\n")
                tmp.replace(path)
                print(
                    f"{name} {method} split {k}: test RMSE {row['test_rmse']:.3f} "
                    f"LL {row['test_ll']:.3f} ({row['chosen']}, {row['total_cpu_s']} s CPU)",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
