"""NumPyro's jit-compiled SVI step on the workloads of `benchmarks/compiled_svi.py` (own venv).

    python3 -m venv /tmp/npvenv && /tmp/npvenv/bin/pip install numpyro jax jaxlib scikit-learn
    OMP_NUM_THREADS=1 /tmp/npvenv/bin/python benchmarks/compiled_svi_numpyro.py [--reps 3]
        [--only coin,glm] [--out numpyro.json]

NumPyro is never a dependency of bayesdl: this file runs only in that venv. The protocol is
`/work/shared/perf/bench_numpyro.py`'s `np_loop`: a Python loop over `jax.jit(svi.update)`;
step 1 alone (XLA compile), steps 2-10 warm-up, ms per step over the rest (blocking only at
those boundaries); medians over repetitions. Same data, model, guide, Adam and steps as the
torch side (coin, linreg, eight schools, glm, vae, bnn, gmm); `--estimator score` runs
`TraceGraph_ELBO` (bayesdl's `score`), gmm always `TraceEnum_ELBO` (needs `pip install funsor`).
"""

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import random
from jax.example_libraries import stax
from numpyro.distributions import constraints
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.initialization import init_to_feasible
from numpyro.optim import Adam
from sklearn.datasets import load_diabetes, load_digits

WARM = 10


def auto(model):
    return AutoNormal(model, init_loc_fn=init_to_feasible, init_scale=0.1)


def coin():
    x = jnp.array([1.0] * 6 + [0.0] * 4)

    def model(x):
        f = numpyro.sample("f", dist.Beta(10.0, 10.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("obs", dist.Bernoulli(probs=f), obs=x)

    def guide(x):
        a = numpyro.param("a", jnp.array(15.0), constraint=constraints.positive)
        b = numpyro.param("b", jnp.array(15.0), constraint=constraints.positive)
        numpyro.sample("f", dist.Beta(a, b))

    return model, guide, 5e-4, 2000, (x,)


def linreg():
    x, y = load_diabetes(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    y = ((y - y.mean()) / y.std()).astype(np.float32)

    def model(x, y):
        w = numpyro.sample("w", dist.Normal(jnp.zeros(x.shape[1]), 1.0).to_event(1))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("obs", dist.Normal((x * w).sum(-1) + b, 1.0), obs=y)

    return model, auto(model), 0.01, 3000, (jnp.asarray(x), jnp.asarray(y))


def eight_schools():
    y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

    def model(y, sigma):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("schools", y.shape[0]):
            tt = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
            numpyro.sample("obs", dist.Normal(mu + tau * tt, sigma), obs=y)

    return model, auto(model), 0.01, 2000, (y, sigma)


def glm():
    rng = np.random.default_rng(0)  # as compiled_svi.glm_data
    x = rng.standard_normal((1000, 8)).astype(np.float32)
    w = rng.standard_normal(8).astype(np.float32)
    y = (rng.random(1000) < 1 / (1 + np.exp(-(x @ w - 0.5)))).astype(np.float32)

    def model(x, y):
        w = numpyro.sample("w", dist.Normal(jnp.zeros(x.shape[1]), 1.0).to_event(1))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("obs", dist.Bernoulli(logits=x @ w + b), obs=y)

    return model, auto(model), 0.01, 2000, (jnp.asarray(x), jnp.asarray(y))


def vae():
    x, _ = load_digits(return_X_y=True)
    x = jnp.asarray((x / 16.0 >= 0.5).astype(np.float32))
    n, b, h, z = x.shape[0], 128, 200, 10
    encoder = stax.serial(
        stax.Dense(h),
        stax.Softplus,
        stax.FanOut(2),
        stax.parallel(stax.Dense(z), stax.serial(stax.Dense(z), stax.Exp)),
    )
    decoder = stax.serial(stax.Dense(h), stax.Softplus, stax.Dense(64))

    def model(x):
        decode = numpyro.module("decoder", decoder, (b, z))
        with numpyro.plate("data", n, subsample_size=b):
            xb = numpyro.subsample(x, event_dim=1)
            zz = numpyro.sample("z", dist.Normal(jnp.zeros(z), 1.0).to_event(1))
            numpyro.sample("obs", dist.Bernoulli(logits=decode(zz)).to_event(1), obs=xb)

    def guide(x):
        encode = numpyro.module("encoder", encoder, (b, 64))
        with numpyro.plate("data", n, subsample_size=b):
            xb = numpyro.subsample(x, event_dim=1)
            loc, scale = encode(xb)
            numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    return model, guide, 1e-3, 700, (x,)


def bnn():
    x, y = load_digits(return_X_y=True)
    x, y = jnp.asarray((x / 16.0).astype(np.float32)), jnp.asarray(y)
    n, b, h = x.shape[0], 128, 100
    shapes = {"w1": (64, h), "b1": (h,), "w2": (h, 10), "b2": (10,)}

    def model(x, y):
        w = {
            k: numpyro.sample(k, dist.Normal(jnp.zeros(s), 1.0).to_event(len(s)))
            for k, s in shapes.items()
        }
        with numpyro.plate("data", n, subsample_size=b) as idx:
            hidden = jax.nn.relu(x[idx] @ w["w1"] + w["b1"])
            logits = hidden @ w["w2"] + w["b2"]
            numpyro.sample("obs", dist.Categorical(logits=logits), obs=y[idx])

    return model, auto(model), 0.01, 700, (x, y)


def gmm_data():
    """1000 points from three unit-variance clusters at -4, 0, 4 (numpy seed 0; same in
    benchmarks/compiled_svi.py)."""
    rng = np.random.default_rng(0)
    z = rng.integers(0, 3, 1000)
    return (np.array([-4.0, 0.0, 4.0])[z] + rng.standard_normal(1000)).astype(np.float32)


def gmm():
    """w ~ Dir(1), mu_k ~ N(0, 10^2), z_n ~ Cat(w) summed out, x_n ~ N(mu_z, 1)."""
    from numpyro import handlers
    from numpyro.contrib.funsor import config_enumerate

    x = jnp.asarray(gmm_data())

    @config_enumerate
    def model(x):
        w = numpyro.sample("w", dist.Dirichlet(jnp.ones(3)))
        loc = numpyro.sample("loc", dist.Normal(0.0, 10.0).expand([3]).to_event(1))
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Categorical(w))
            numpyro.sample("obs", dist.Normal(loc[z], 1.0), obs=x)

    guide = auto(handlers.block(model, hide=["z"]))
    return model, guide, 0.01, 2000, (x,), "enum"


WORKLOADS = {
    "coin": coin,
    "linreg": linreg,
    "eight_schools": eight_schools,
    "glm": glm,
    "vae": vae,
    "bnn": bnn,
    "gmm": gmm,
}


def elbo(name):
    """NumPyro's ELBO for bayesdl's estimator ``name``."""
    if name == "score":
        from numpyro.infer import TraceGraph_ELBO

        return TraceGraph_ELBO()
    if name == "enum":
        from numpyro.infer import TraceEnum_ELBO

        return TraceEnum_ELBO(max_plate_nesting=1)
    return Trace_ELBO()


def run_loop(prob, seed, estimator="reparam"):
    model, guide, lr, n, args = prob[:5]
    estimator = prob[5] if len(prob) > 5 else estimator
    svi = SVI(model, guide, Adam(lr), elbo(estimator))
    state = svi.init(random.PRNGKey(seed), *args)
    jax.block_until_ready(state)
    update = jax.jit(svi.update)
    t0 = time.perf_counter()
    state, loss = update(state, *args)
    jax.block_until_ready(loss)
    t1 = time.perf_counter()
    for _ in range(WARM - 1):
        state, loss = update(state, *args)
    jax.block_until_ready(state)
    t2 = time.perf_counter()
    for _ in range(n - WARM):
        state, loss = update(state, *args)
    jax.block_until_ready(state)
    t3 = time.perf_counter()
    return {"first_step_s": t1 - t0, "ms_per_step": (t3 - t2) / (n - WARM) * 1e3}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--estimator", default="reparam", help="reparam (Trace_ELBO) | score")
    a = ap.parse_args()
    names = a.only.split(",") if a.only else list(WORKLOADS)
    out = {"jax": jax.__version__, "numpyro": numpyro.__version__, "results": {}}
    for name in names:
        prob = WORKLOADS[name]()
        run_loop(prob[:3] + (2 * WARM,) + prob[4:], 1000, a.estimator)  # untimed warm-up
        raw = [run_loop(prob, rep, a.estimator) for rep in range(a.reps)]
        med = {k: statistics.median(r[k] for r in raw) for k in raw[0]}
        out["results"][name] = {**med, "raw": raw}
        ms, first = med["ms_per_step"], med["first_step_s"]
        print(f"{name:<14} {ms:.3f} ms/step, first step {first:.2f} s")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
