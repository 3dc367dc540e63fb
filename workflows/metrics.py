"""Held-out metrics of a predictive distribution ``p(y | x, D)`` given as class probabilities.

``probs`` has shape ``(M, N, K)`` (M posterior samples) or ``(N, K)`` (already averaged).
"""

from __future__ import annotations

import torch

EPS = 1e-12


def mean_probs(probs: torch.Tensor) -> torch.Tensor:
    """The Monte Carlo predictive ``1/M sum_m p(y | x, theta_m)``."""
    return probs.mean(0) if probs.dim() == 3 else probs


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of argmax predictions equal to ``y``."""
    return (mean_probs(probs).argmax(-1) == y).float().mean().item()


def nll(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Mean negative log predictive probability of the true class (nats)."""
    p = mean_probs(probs).gather(-1, y[:, None]).squeeze(-1)
    return (-(p.clamp_min(EPS)).log()).mean().item()


def brier(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Mean squared error between probabilities and the one-hot label (summed over classes)."""
    p = mean_probs(probs)
    onehot = torch.nn.functional.one_hot(y, p.shape[-1]).to(p.dtype)
    return ((p - onehot) ** 2).sum(-1).mean().item()


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins (Guo et al. 2017)."""
    p = mean_probs(probs)
    conf, pred = p.max(-1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1, device=p.device)
    idx = torch.bucketize(conf, edges[1:-1], right=False)
    acc = torch.zeros(bins, device=p.device).index_add_(0, idx, correct)
    cf = torch.zeros(bins, device=p.device).index_add_(0, idx, conf)
    # sum_b |B_b| / N * |acc_b - conf_b|, with acc and cf kept as per-bin sums
    return ((acc - cf).abs().sum() / len(y)).item()


def reliability(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, list[float]]:
    """Per-bin mean confidence, accuracy and count (for a reliability diagram)."""
    p = mean_probs(probs)
    conf, pred = p.max(-1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    idx = torch.bucketize(conf.cpu(), edges[1:-1])
    count = torch.bincount(idx, minlength=bins).float()
    acc = torch.bincount(idx, weights=correct.cpu(), minlength=bins) / count.clamp_min(1)
    cf = torch.bincount(idx, weights=conf.cpu(), minlength=bins) / count.clamp_min(1)
    return {
        "edges": edges.tolist(),
        "confidence": cf.tolist(),
        "accuracy": acc.tolist(),
        "count": count.tolist(),
    }


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Predictive entropy ``H[p(y | x, D)]`` per input (total uncertainty)."""
    p = mean_probs(probs)
    return -(p * p.clamp_min(EPS).log()).sum(-1)


def mutual_information(probs: torch.Tensor) -> torch.Tensor:
    """``I[y; theta | x, D] = H[E p] - E H[p]`` per input (epistemic uncertainty; 0 for M = 1)."""
    if probs.dim() == 2:
        return torch.zeros(probs.shape[0], device=probs.device)
    expected_h = -(probs * probs.clamp_min(EPS).log()).sum(-1).mean(0)
    return (entropy(probs) - expected_h).clamp_min(0)


def auroc(scores_in: torch.Tensor, scores_out: torch.Tensor) -> float:
    """Area under the ROC curve for telling out-of-domain (positive) from in-domain inputs
    by ``score`` (higher = more out-of-domain), via scikit-learn."""
    from sklearn.metrics import roc_auc_score

    s = torch.cat([scores_in, scores_out]).detach().cpu().numpy()
    labels = [0] * len(scores_in) + [1] * len(scores_out)
    return float(roc_auc_score(labels, s))
