"""ms per SVI step of `fit(compile=True)` against eager `fit` and a hand-written torch loop.

    OMP_NUM_THREADS=1 python benchmarks/compiled_svi.py [--reps 3] [--only coin,linreg]
        [--estimator reparam|score|relaxed]
        [--out compiled_svi.json]

Workloads (the NumPyro yardstick's, /work/shared/perf/data.py, plus two): coin (Beta-Bernoulli,
10 flips, Beta guide, lr 5e-4), linreg (diabetes 442 x 10 standardized, w and b ~ N(0, 1),
sigma 1, AutoNormal, lr 0.01), eight schools (non-centred, AutoNormal), glm (a user's logistic
regression, 1000 x 8 simulated, AutoNormal), vae (8x8 digits binarized, 64-200-10, batch 128,
lr 1e-3) and bnn (digits 64-100-10 classifier, N(0, 1) weights, AutoNormal, batch 128). The
same model, guide, Adam and step count for every column; one process, one thread, the columns
alternating within each repetition; medians over repetitions. `fit` times the loop after
compilation (`FitResult.steps_per_second`); compile time is what capture plus Inductor took
(the first repetition's from a cold Inductor cache, when the cache is cold). The hand-written
torch loop (vae, bnn) is the same ELBO written with torch.distributions and torch.optim.Adam.
`benchmarks/compiled_svi_numpyro.py` times NumPyro on the same workloads (its own venv).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from pyro.infer.autoguide import AutoNormal  # noqa: E402
from pyro.infer.autoguide.initialization import init_to_feasible  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributions import constraints  # noqa: E402

from bayesdl.inference import FitConfig, fit  # noqa: E402

WARM = 10

# ------------------------------------------------------------------------------ workloads


def coin():
    flips = torch.tensor([1.0] * 6 + [0.0] * 4)

    def model(x):
        f = pyro.sample("f", dist.Beta(10.0, 10.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Bernoulli(f), obs=x)

    def guide(x):
        a = pyro.param("a", torch.tensor(15.0), constraint=constraints.positive)
        b = pyro.param("b", torch.tensor(15.0), constraint=constraints.positive)
        pyro.sample("f", dist.Beta(a, b))

    return dict(model=model, guide=lambda: guide, data={"x": flips}, lr=5e-4, steps=2000)


def _linreg_model(x, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    mean = (x * w).sum(-1) + b
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(mean, 1.0), obs=y)


def linreg():
    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    data = {"x": torch.tensor(x, dtype=torch.float32), "y": torch.tensor(y, dtype=torch.float32)}

    def guide():
        return AutoNormal(_linreg_model, init_loc_fn=init_to_feasible, init_scale=0.1)

    return dict(model=_linreg_model, guide=guide, data=data, lr=0.01, steps=3000)


def _schools_model(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", y.shape[0]):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(mu + tau * theta_tilde, sigma), obs=y)


def eight_schools():
    y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    def guide():
        return AutoNormal(_schools_model, init_loc_fn=init_to_feasible, init_scale=0.1)

    data = {"y": y, "sigma": sigma}
    return dict(model=_schools_model, guide=guide, data=data, lr=0.01, steps=2000)


def glm_data():
    """A user's logistic regression: 1000 x 8, numpy seed 0 (same in the NumPyro script)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 8)).astype(np.float32)
    w = rng.standard_normal(8).astype(np.float32)
    y = (rng.random(1000) < 1 / (1 + np.exp(-(x @ w - 0.5)))).astype(np.float32)
    return x, y


def _glm_model(x, y):
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1]), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Bernoulli(logits=x @ w + b), obs=y)


def glm():
    x, y = glm_data()

    def guide():
        return AutoNormal(_glm_model, init_loc_fn=init_to_feasible, init_scale=0.1)

    data = {"x": torch.from_numpy(x), "y": torch.from_numpy(y)}
    return dict(model=_glm_model, guide=guide, data=data, lr=0.01, steps=2000)


def digits_binary() -> torch.Tensor:
    x, _ = load_digits(return_X_y=True)
    return torch.tensor((x / 16.0 >= 0.5).astype(np.float32))


class Encoder(nn.Module):
    def __init__(self, h=200, z=10):
        super().__init__()
        self.fc, self.loc, self.scale = nn.Linear(64, h), nn.Linear(h, z), nn.Linear(h, z)

    def forward(self, x):
        h = nn.functional.softplus(self.fc(x))
        return self.loc(h), self.scale(h).exp()


def vae():
    x = digits_binary()
    n, batch = x.shape[0], 128

    def make():
        torch.manual_seed(0)
        enc = Encoder()
        dec = nn.Sequential(nn.Linear(10, 200), nn.Softplus(), nn.Linear(200, 64))

        def model(x):
            pyro.module("decoder", dec)
            with pyro.plate("data", n) as idx:
                z = pyro.sample("z", dist.Normal(torch.zeros(10), 1.0).to_event(1))
                pyro.sample("obs", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x[idx])

        def guide(x):
            pyro.module("encoder", enc)
            with pyro.plate("data", n) as idx:
                loc, scale = enc(x[idx])
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

        return model, guide, enc, dec

    def hand(steps: int) -> float:
        _, _, enc, dec = make()
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
        prior = torch.distributions.Normal(torch.zeros(10), 1.0)

        def step():
            idx = torch.randperm(n)[:batch]
            xb = x[idx]
            loc, scale = enc(xb)
            z = loc + scale * torch.randn_like(loc)
            ll = torch.distributions.Bernoulli(logits=dec(z)).log_prob(xb).sum(-1)
            q = torch.distributions.Normal(loc, scale)
            kl = q.log_prob(z).sum(-1) - prior.log_prob(z).sum(-1)
            loss = -(ll - kl).sum() * (n / batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

        return _time_hand(step, steps)

    holder = {}

    def model(x):
        return holder["m"](x)

    def guide_factory():
        m, g, _, _ = make()
        holder["m"] = m
        return g

    return dict(
        model=model, guide=guide_factory, data={"x": x}, lr=1e-3, steps=700, batch_size=batch,
        size=n, hand=hand, epoch=n // batch,
    )  # fmt: skip


def bnn():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    n, batch, h = x.shape[0], 128, 100
    shapes = {"w1": (64, h), "b1": (h,), "w2": (h, 10), "b2": (10,)}

    def forward(w, xb):
        hidden = torch.relu(xb @ w["w1"] + w["b1"])
        return hidden @ w["w2"] + w["b2"]

    def model(x, y):
        w = {
            k: pyro.sample(k, dist.Normal(torch.zeros(s), 1.0).to_event(len(s)))
            for k, s in shapes.items()
        }
        with pyro.plate("data", n) as idx:
            pyro.sample("obs", dist.Categorical(logits=forward(w, x[idx])), obs=y[idx])

    def guide():
        return AutoNormal(model, init_loc_fn=init_to_feasible, init_scale=0.1)

    def hand(steps: int) -> float:
        torch.manual_seed(0)
        loc = {k: (torch.rand(s) * 4 - 2).requires_grad_() for k, s in shapes.items()}
        raw = {k: torch.full(s, 0.1).expm1().log().requires_grad_() for k, s in shapes.items()}
        opt = torch.optim.Adam([*loc.values(), *raw.values()], lr=0.01)

        def step():
            idx = torch.randperm(n)[:batch]
            w, log_q, log_p = {}, 0.0, 0.0
            for k in shapes:
                q = torch.distributions.Normal(loc[k], nn.functional.softplus(raw[k]))
                w[k] = q.rsample()
                log_q = log_q + q.log_prob(w[k]).sum()
                log_p = log_p + torch.distributions.Normal(0.0, 1.0).log_prob(w[k]).sum()
            logits = forward(w, x[idx])
            ll = torch.distributions.Categorical(logits=logits).log_prob(y[idx]).sum()
            loss = -(ll * (n / batch) + log_p - log_q)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

        return _time_hand(step, steps)

    return dict(
        model=model, guide=guide, data={"x": x, "y": y}, lr=0.01, steps=700, batch_size=batch,
        size=n, hand=hand, epoch=n // batch,
    )  # fmt: skip


def gmm_data():
    """1000 points from three unit-variance clusters at -4, 0, 4 (numpy seed 0; same in
    benchmarks/compiled_svi_numpyro.py)."""
    rng = np.random.default_rng(0)
    z = rng.integers(0, 3, 1000)
    return (np.array([-4.0, 0.0, 4.0])[z] + rng.standard_normal(1000)).astype(np.float32)


def _gmm_model(x):
    w = pyro.sample("w", dist.Dirichlet(torch.ones(3)))
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(w), infer={"enumerate": "parallel"})
        pyro.sample("obs", dist.Normal(loc[z], 1.0), obs=x)


def gmm():
    """w ~ Dir(1), mu_k ~ N(0, 10^2), z_n ~ Cat(w) summed out (``enum``), x_n ~ N(mu_z, 1)."""
    from pyro import poutine

    def guide():
        blocked = poutine.block(_gmm_model, hide=["z"])
        return AutoNormal(blocked, init_loc_fn=init_to_feasible, init_scale=0.1)

    data = {"x": torch.from_numpy(gmm_data())}
    return dict(model=_gmm_model, guide=guide, data=data, lr=0.01, steps=2000, estimator="enum")


WORKLOADS = {
    "coin": coin,
    "linreg": linreg,
    "eight_schools": eight_schools,
    "glm": glm,
    "vae": vae,
    "bnn": bnn,
    "gmm": gmm,
}

# ------------------------------------------------------------------------------ timing


def _time_hand(step, steps: int) -> float:
    """ms per step of a hand-written loop: WARM steps untimed, then ``steps - WARM``."""
    for _ in range(WARM):
        step()
    t = time.perf_counter()
    for _ in range(steps - WARM):
        step()
    return (time.perf_counter() - t) / (steps - WARM) * 1e3


def time_fit(w: dict, compile_mode: str, estimator: str = "reparam") -> tuple:
    """(ms per step after compilation, compile seconds, final ELBO) of one ``fit``."""
    cfg = FitConfig(
        estimator=w.get("estimator", estimator),
        steps=w["steps"],
        lr=w["lr"],
        batch_size=w.get("batch_size"),
        compile=compile_mode,
        log_every=100,
        checkpoint_every=10**9,
    )
    pyro.set_rng_seed(0)
    r = fit(w["model"], w["guide"](), w["data"], cfg, data_size=w.get("size"), progress=False)
    if compile_mode == "true" and not r.compiled:
        raise SystemExit("the fit did not compile")
    return 1e3 / r.steps_per_second, r.compile_seconds, r.final_elbo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", default="")
    p.add_argument("--out", default="")
    p.add_argument("--estimator", default="reparam", help="every workload's but gmm's (enum)")
    a = p.parse_args()
    torch.set_num_threads(1)
    names = a.only.split(",") if a.only else list(WORKLOADS)
    print(
        f"torch {torch.__version__}, pyro {pyro.__version__}, "
        f"{platform.processor() or platform.machine()}, 1 thread, median of {a.reps}",
        flush=True,
    )
    results = {}
    for name in names:
        w = WORKLOADS[name]()
        hand = "hand" in w and a.estimator == "reparam"  # the hand loops are pathwise
        cols = ["eager", "compiled"] + (["hand"] if hand else [])
        raw = {c: [] for c in cols}
        compile_s, elbo = [], {}
        for rep in range(a.reps):
            order = cols[rep % len(cols) :] + cols[: rep % len(cols)]
            for c in order:
                if c == "hand":
                    raw[c].append(w["hand"](w["steps"]))
                    continue
                ms, cs, e = time_fit(w, "true" if c == "compiled" else "false", a.estimator)
                raw[c].append(ms)
                elbo[c] = e
                if c == "compiled":
                    compile_s.append(cs)
            print(f"[{name}] rep {rep}: " + ", ".join(f"{c} {raw[c][-1]:.3f} ms" for c in cols))
        med = {c: statistics.median(v) for c, v in raw.items()}
        results[name] = {
            "ms_per_step": med,
            "ms_per_epoch": {c: v * w["epoch"] for c, v in med.items()} if "epoch" in w else None,
            "compile_seconds": {"first": compile_s[0], "median": statistics.median(compile_s)},
            "final_elbo": elbo,
            "steps": w["steps"],
            "raw": raw,
        }
        print(
            f"{name:<14} eager {med['eager']:.3f}  compiled {med['compiled']:.3f} ms/step "
            f"(x{med['eager'] / med['compiled']:.1f})"
            + (f"  hand {med['hand']:.3f}" if "hand" in med else "")
            + f"  compile {compile_s[0]:.1f} s first, {statistics.median(compile_s):.1f} s median",
            flush=True,
        )
    if a.out:
        doc = {"torch": torch.__version__, "reps": a.reps, "results": results}
        Path(a.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
