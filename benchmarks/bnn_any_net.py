"""Any network made Bayesian (``bayesdl.bnn.bayesian``): measurements for docs/bnn.md.

    python benchmarks/bnn_any_net.py classify [--steps 1000] [--seeds 0,1]  # small CNN, digits
    python benchmarks/bnn_any_net.py gradvar [--draws 300]                  # per-layer Var(grad)
    python benchmarks/bnn_any_net.py regress [--splits 5]                   # diabetes, 5 splits
    python benchmarks/bnn_any_net.py continual [--steps 300]                # split digits, 5 tasks
    python benchmarks/bnn_any_net.py bayesian-torch [--steps 1000]          # needs bayesian-torch
    python benchmarks/bnn_any_net.py classify --data mnist --data-dir DIR --steps 1407  # 3 epochs
    python benchmarks/bnn_any_net.py timing --data mnist --data-dir DIR --steps 200  # loops only

``--data mnist --data-dir DIR`` (or ``$BAYESDL_MNIST_DIR``) runs ``classify``, ``bayesian-torch``
and ``continual`` on MNIST's IDX files instead of the digits: ``classify`` and ``bayesian-torch``
with LeNet-300-100 (784-300-100-10, ``--net lenet``; ``--net cnn`` is the small CNN on 28x28),
``continual`` with a 784-100-10 MLP; ``--samples`` sets the draws M of the predictive.

``classify``: the same CNN (conv 16, pool, conv 32, dense 10) on the bundled 8x8 digits with
every guide, minibatches of 128: test accuracy, NLL, ECE, entropy AUROC against uniform-noise,
inverted and mirrored digits, and seconds per epoch of the training loop (1347 training images;
``fit``'s loop alone since 8c79eab, the whole ``fit`` call before). ``bayesian-torch``:
the same CNN through ``dnn_to_bnn`` (its Flipout and reparameterization layers, its
``get_kl_loss``), trained with a plain loop with the same steps, batch and Adam settings; its
``kl_div`` averages the KL over each layer's weights (``kl.mean()``), so it is also run with the
KL summed, as the ELBO has it.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch
from torch import nn

import bayesdl
import bayesdl.bnn as bnn
from bayesdl.datasets.bundled import Split, diabetes, digits, mnist
from bayesdl.inference.diagnostics import gradient_draws
from bayesdl.workflows import metrics

warnings.filterwarnings("ignore")
GUIDES = ["mle", "map", "meanfield", "flipout", "mc-dropout", "concrete-dropout", "sparse-vd"]


def cnn(seed: int = 0, side: int = 8) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * (side // 2) ** 2, 10),
    )


def lenet(seed: int = 0, inputs: int = 784) -> nn.Sequential:
    """LeNet-300-100: the dense ReLU net inputs-300-100-10."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(inputs, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)
    )


def load(a) -> Split:
    """The digits (bundled) or MNIST (``--data mnist``, IDX files in ``--data-dir`` or
    ``$BAYESDL_MNIST_DIR``)."""
    return mnist(a.data_dir) if a.data == "mnist" else digits()


def make_net(a, s: Split, seed: int) -> nn.Sequential:
    """``--net``: the small CNN (default on digits) or LeNet-300-100 (default on MNIST)."""
    kind = a.net or ("lenet" if a.data == "mnist" else "cnn")
    return cnn(seed, s.image_shape[0]) if kind == "cnn" else lenet(seed, s.x_train.shape[1])


def ood_inputs(x: torch.Tensor, side: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    return {
        "noise": torch.rand(x.shape, generator=g),
        "inverted": 1 - x,
        "mirrored": x.reshape(-1, side, side).flip(-1).reshape(x.shape),
    }


def predictive(post, x: torch.Tensor, m: int, chunk: int = 2000) -> torch.Tensor:
    """``bnn.uncertainty``'s predictive probabilities, ``chunk`` inputs at a time (MNIST's
    10000 test images times M draws of a 300-unit layer would not fit at once)."""
    return torch.cat(
        [
            bnn.uncertainty(post, x[i : i + chunk], num_samples=m)["probs"]
            for i in range(0, len(x), chunk)
        ]
    )


def class_scores(p: torch.Tensor, y: torch.Tensor, p_ood: dict[str, torch.Tensor]) -> dict:
    h = metrics.entropy(p)
    out = {
        "accuracy": metrics.accuracy(p, y),
        "nll": metrics.nll(p, y),
        "ece": metrics.ece(p, y, bins=15),
    }
    for k, po in p_ood.items():
        out[f"auroc_{k}"] = metrics.auroc(h, metrics.entropy(po))
    return out


def classify(a) -> None:
    s = load(a)
    side = s.image_shape[0]
    data = {"x": s.x_train, "y": s.y_train}
    epochs = a.steps * 128 / len(s.y_train)
    print("| guide | seed | accuracy | NLL | ECE | AUROC noise / inverted / mirrored | s / epoch |")
    print("|---|---|---|---|---|---|---|")
    for seed in [int(v) for v in a.seeds.split(",")]:
        for guide in a.guides.split(",") if a.guides else GUIDES:
            kw = {"prior_scale": 30.0} if guide not in ("mle", "sparse-vd") else {}
            bnet = bnn.bayesian(make_net(a, s, seed), likelihood="categorical", guide=guide, **kw)
            extra = {"kl_warmup": 300} if guide == "sparse-vd" else {}
            post = bayesdl.fit(
                bnet, data=data, steps=a.steps, batch_size=128, seed=seed, progress=False, **extra
            )
            # the training loop's seconds (as bayesian-torch's loop is timed): without fit's
            # one-off imports and its summary pass over all the training data
            per_epoch = post._run.summary["wall_seconds"] / epochs
            m = 1 if guide in ("mle", "map") else a.samples
            p = predictive(post, s.x_test, m)
            po = {k: predictive(post, v, m) for k, v in ood_inputs(s.x_test, side).items()}
            r = class_scores(p, s.y_test, po)
            auc = " / ".join(f"{r[f'auroc_{k}']:.3f}" for k in ("noise", "inverted", "mirrored"))
            print(
                f"| {guide} | {seed} | {r['accuracy']:.4f} | {r['nll']:.4f} | {r['ece']:.4f} | "
                f"{auc} | {per_epoch:.3f} |",
                flush=True,
            )


BT_ROWS = (
    ("Flipout", "mean"),
    ("Reparameterization", "mean"),
    ("Flipout", "sum"),
    ("Reparameterization", "sum"),
)


def bt_fit(a, s: Split, seed: int, kind: str, kl: str, steps: int) -> tuple[nn.Module, float]:
    """The network through bayesian-torch's ``dnn_to_bnn`` (prior N(0, 1), ``rho`` -3), trained
    by a plain loop (minibatches of 128, Adam, lr 1e-2, ``get_kl_loss / N``); its KL is
    bayesian-torch's mean over each layer's weights (``kl="mean"``) or the ELBO's sum. Returns
    the network and the loop's seconds."""
    from bayesian_torch.layers.base_variational_layer import BaseVariationalLayer_
    from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn, get_kl_loss

    mean_kl = getattr(BaseVariationalLayer_, "_mean_kl", BaseVariationalLayer_.kl_div)
    BaseVariationalLayer_._mean_kl = mean_kl

    def summed_kl(self, mu_q, sigma_q, mu_p, sigma_p):  # the ELBO's KL: a sum over weights
        return mean_kl(self, mu_q, sigma_q, mu_p, sigma_p) * mu_q.numel()

    BaseVariationalLayer_.kl_div = mean_kl if kl == "mean" else summed_kl
    n = len(s.y_train)
    net = make_net(a, s, seed)
    dnn_to_bnn(
        net,
        {
            "prior_mu": 0.0,
            "prior_sigma": 1.0,
            "posterior_mu_init": 0.0,
            "posterior_rho_init": -3.0,
            "type": kind,
            "moped_enable": False,
        },
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, n, (128,))
        out = net(s.x_train[idx])
        loss = nn.functional.cross_entropy(out, s.y_train[idx]) + get_kl_loss(net) / n
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, time.perf_counter() - t0


def bayesian_torch(a) -> None:
    s = load(a)
    n = len(s.y_train)
    print(
        "| bayesian-torch | seed | accuracy | NLL | ECE | AUROC noise / inverted / mirrored "
        "| s / epoch |"
    )
    print("|---|---|---|---|---|---|---|")
    for seed in [int(v) for v in a.seeds.split(",")]:
        for kind, kl in BT_ROWS:
            net, seconds = bt_fit(a, s, seed, kind, kl, a.steps)
            per_epoch = seconds / (a.steps * 128 / n)

            @torch.no_grad()
            def probs(x, net=net):
                return torch.stack([net(x).softmax(-1) for _ in range(a.samples)]).mean(0)

            po = {k: probs(v) for k, v in ood_inputs(s.x_test, s.image_shape[0]).items()}
            r = class_scores(probs(s.x_test), s.y_test, po)
            auc = " / ".join(f"{r[f'auroc_{k}']:.3f}" for k in ("noise", "inverted", "mirrored"))
            print(
                f"| dnn_to_bnn {kind}, KL {kl} | {seed} | {r['accuracy']:.4f} | {r['nll']:.4f} | "
                f"{r['ece']:.4f} | {auc} | {per_epoch:.3f} |",
                flush=True,
            )


def timing(a) -> None:
    """Seconds per epoch of the training loops alone, interleaved (``--rounds`` rounds of
    ``--steps`` steps of each) so that a busy machine slows every row alike: bayesdl's
    meanfield and Flipout (``bayesdl.fit``'s loop) and bayesian-torch's two layers."""
    s = load(a)
    n = len(s.y_train)
    data = {"x": s.x_train, "y": s.y_train}
    per: dict[str, list[float]] = {}
    for _ in range(a.rounds):
        for guide in ("meanfield", "flipout"):
            bnet = bnn.bayesian(
                make_net(a, s, 0), likelihood="categorical", guide=guide, prior_scale=30.0
            )
            post = bayesdl.fit(bnet, data=data, steps=a.steps, batch_size=128, progress=False)
            per.setdefault(f"bayesdl {guide}", []).append(post._run.summary["wall_seconds"])
        for kind in ("Flipout", "Reparameterization"):
            per.setdefault(f"bayesian-torch {kind}", []).append(
                bt_fit(a, s, 0, kind, "sum", a.steps)[1]
            )
    print(f"| loop | s / epoch, {a.rounds} rounds of {a.steps} steps (each round) |")
    print("|---|---|")
    for name, v in per.items():
        print(f"| {name} | {' / '.join(f'{t / (a.steps * 128 / n):.2f}' for t in v)} |")


def gradvar(a) -> None:
    """Var of the gradient of -ELBO w.r.t. each layer's weight means, 128 digits, at the
    network's initial weights with posterior sds 0.05."""
    s = digits()
    data = {"x": s.x_train[:128], "y": s.y_train[:128]}
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))  # noqa: E731
    rows = {}
    for name, kw in {
        "sampled weights": {"guide": "meanfield", "local_reparam": False},
        "local reparameterization": {"guide": "meanfield"},
        "flipout": {"guide": "flipout"},
    }.items():
        bnet = bnn.bayesian(
            make(), likelihood="categorical", init_scale=0.05, prior_scale=1.0, **kw
        )
        torch.manual_seed(0)
        import pyro

        with pyro.get_param_store().scope():
            d = gradient_draws(bnet, bnet.guide, data, "reparam", draws=a.draws)["model.guide.loc"]
        rows[name] = [
            d[:, w.slice].var(0).mean().item() for w in bnet.weights if w.attr == "weight"
        ]
    print("| estimator | Var grad, layer 1 weights (64x100) | layer 2 weights (100x10) |")
    print("|---|---|---|")
    for name, v in rows.items():
        print(f"| {name} | {v[0]:.3e} | {v[1]:.3e} |")


def regress(a) -> None:
    """Diabetes (442 x 10, standardized), splits 0..k-1: test RMSE and log-likelihood per datum
    (in standardized units) of a 10-50-1 ReLU net, learned noise."""
    res: dict[str, list[tuple[float, float]]] = {}
    for split in range(a.splits):
        s = diabetes(seed=split)
        data = {"x": s.x_train, "y": s.y_train}
        for guide in ("mle", "map", "mc-dropout", "concrete-dropout", "meanfield", "flipout"):
            torch.manual_seed(split)
            net = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 1))
            bnet = bnn.bayesian(net, likelihood="gaussian", guide=guide, prior_scale=1.0)
            post = bayesdl.fit(bnet, data=data, steps=a.steps, seed=split, progress=False)
            f = post.predict({"x": s.x_test}, num_samples=200)["f"]
            from bayesdl.workflows.bayesian_net import scores

            r = scores(post.model.likelihood, f, s.y_test, post.params.get("sigma"))
            res.setdefault(guide, []).append((r["rmse"], r["log_likelihood"]))
    print(f"| guide | test RMSE (mean +- se, {a.splits} splits) | test log-likelihood |")
    print("|---|---|---|")
    for guide, v in res.items():
        arr = np.array(v)
        se = arr.std(0, ddof=1) / math.sqrt(len(arr)) if len(arr) > 1 else np.zeros(2)
        print(
            f"| {guide} | {arr[:, 0].mean():.3f} +- {se[0]:.3f} | "
            f"{arr[:, 1].mean():.3f} +- {se[1]:.3f} |"
        )


def continual(a) -> None:
    """Split digits: five tasks {0,1}, {2,3}, ... learned in turn by one 64-100-10 MLP;
    accuracy on task 1's test digits (argmax over its two classes) after each task.
    Variational continual learning (the posterior of task t is the prior of task t+1, means
    carried) against plain fine-tuning (MLE). ``--data mnist``: split MNIST, a 784-100-10 MLP,
    minibatches of 128."""
    s = load(a)
    d_in = s.x_train.shape[1]
    batch = {"batch_size": 128} if a.data == "mnist" else {}
    tasks = [(2 * t, 2 * t + 1) for t in range(5)]

    def subset(x, y, cls):
        keep = (y == cls[0]) | (y == cls[1])
        return x[keep], y[keep]

    def task_acc(net, cls):
        x, y = subset(s.x_test, s.y_test, cls)
        with torch.no_grad():
            logits = net(x)[:, list(cls)]
        return (logits.argmax(-1) == (y == cls[1]).long()).float().mean().item()

    print("| method | task 1 accuracy after tasks 1, 2, 3, 4, 5 | mean over tasks after 5 |")
    print("|---|---|---|")
    for method in ("fine-tuning (MLE)", "VCL (meanfield, as_prior)"):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(d_in, 100), nn.ReLU(), nn.Linear(100, 10))
        prior, after = None, []
        for cls in tasks:
            x, y = subset(s.x_train, s.y_train, cls)
            if method.startswith("fine"):
                bnet = bnn.bayesian(net, likelihood="categorical", guide="mle")
            else:
                bnet = bnn.bayesian(
                    net, likelihood="categorical", guide="meanfield", prior=prior or "normal"
                )
            post = bayesdl.fit(bnet, data={"x": x, "y": y}, steps=a.steps, progress=False, **batch)
            net = bnn.mean_net(post).train()
            if not method.startswith("fine"):
                prior = post.as_prior()
            after.append(task_acc(net, tasks[0]))
        final = np.mean([task_acc(net, c) for c in tasks])
        print(f"| {method} | {' / '.join(f'{v:.3f}' for v in after)} | {final:.3f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "what",
        choices=["classify", "gradvar", "regress", "continual", "bayesian-torch", "timing"],
    )
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", default="0")
    p.add_argument("--draws", type=int, default=300)
    p.add_argument("--splits", type=int, default=5)
    p.add_argument("--data", choices=["digits", "mnist"], default="digits")
    p.add_argument("--data-dir", help="MNIST's IDX files (or $BAYESDL_MNIST_DIR); --data mnist")
    p.add_argument("--net", choices=["cnn", "lenet"], help="default: cnn (digits), lenet (mnist)")
    p.add_argument("--samples", type=int, default=100, help="draws M of the predictive")
    p.add_argument("--rounds", type=int, default=2, help="timing: interleaved rounds")
    p.add_argument("--guides", help="classify: comma-separated guides (default all)")
    a = p.parse_args(argv)
    if a.data_dir:
        a.data = "mnist"
    torch.set_num_threads(1)
    {
        "classify": classify,
        "gradvar": gradvar,
        "regress": regress,
        "continual": continual,
        "bayesian-torch": bayesian_torch,
        "timing": timing,
    }[a.what](a)


if __name__ == "__main__":
    main()
