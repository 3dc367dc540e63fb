"""Datasets: scikit-learn's bundled digits and diabetes, MNIST from its original IDX files,
and any ``.npz`` with ``x`` and ``y``. Nothing is downloaded."""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bayesdl.datasets.io import check_finite, load_arrays
from bayesdl.inference import files
from bayesdl.inference.errors import UserError

MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",  # noqa: E501
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",  # noqa: E501
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_ENV = "BAYESDL_MNIST_DIR"


@dataclass
class Split:
    """Train and test arrays as float32 inputs in [0, 1] (or standardized) and int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    image_shape: tuple[int, ...] | None = None
    num_classes: int | None = None


def digits(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's 8x8 digits (1797 images), pixels scaled to [0, 1], split with ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(
        x, d.target, test_size=test_fraction, random_state=seed, stratify=d.target
    )
    return Split(
        torch.from_numpy(xtr),
        torch.from_numpy(ytr).long(),
        torch.from_numpy(xte),
        torch.from_numpy(yte).long(),
        image_shape=(8, 8),
        num_classes=10,
    )


def diabetes(test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's diabetes regression set (442 x 10), inputs and target standardized
    with the training split's statistics."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    d = load_diabetes()
    xtr, xte, ytr, yte = train_test_split(
        d.data, d.target, test_size=test_fraction, random_state=seed
    )
    mx, sx = xtr.mean(0), xtr.std(0)
    my, sy = ytr.mean(), ytr.std()
    f = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))  # noqa: E731
    return Split(f((xtr - mx) / sx), f((ytr - my) / sy), f((xte - mx) / sx), f((yte - my) / sy))


def mnist_dir(data_dir: str | Path | None) -> Path:
    """The folder of the four MNIST IDX files: ``--data-dir`` or ``$BAYESDL_MNIST_DIR``."""
    d = data_dir or os.environ.get(MNIST_ENV)
    if not d:
        raise UserError(
            f"MNIST needs --data-dir DIR (or ${MNIST_ENV}) pointing at the four original "
            "IDX files (train-images-idx3-ubyte.gz, ...)"
        )
    d = Path(d)
    if not d.is_dir():
        raise UserError(f"MNIST folder {d} does not exist")
    return d


def _read_idx(path: Path, sha256: str, magic: int) -> np.ndarray:
    if not path.exists():
        raise UserError(f"MNIST file {path} is missing")
    raw = files.read_bytes(path, "MNIST file", 256 * files.MB, follow=True)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise UserError(
            f"MNIST file {path} is corrupt or truncated (sha256 {digest[:12]}..., "
            f"expected {sha256[:12]}...)"
        )
    data = gzip.decompress(raw)
    got = int.from_bytes(data[:4], "big")
    if got != magic:
        raise UserError(f"MNIST file {path}: bad IDX magic number {got}")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist(data_dir: str | Path | None = None) -> Split:
    """MNIST (60000 train, 10000 test) from the original IDX files, checksums verified;
    images flattened to 784 floats in [0, 1]."""
    d = mnist_dir(data_dir)
    arrays = {}
    for name, sha in MNIST_FILES.items():
        arrays[name] = _read_idx(d / name, sha, 2051 if "images" in name else 2049)
    f = lambda a: torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)  # noqa: E731
    return Split(
        f(arrays["train-images-idx3-ubyte.gz"]),
        torch.from_numpy(arrays["train-labels-idx1-ubyte.gz"].astype(np.int64)),
        f(arrays["t10k-images-idx3-ubyte.gz"]),
        torch.from_numpy(arrays["t10k-labels-idx1-ubyte.gz"].astype(np.int64)),
        image_shape=(28, 28),
        num_classes=10,
    )


def npz_classification(path: str | Path, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """An ``.npz`` with ``x`` (N x D) and integer labels ``y`` (N), optionally already split
    as ``x_test``/``y_test``."""
    arrays = load_arrays(path)
    for key in ("x", "y"):
        if key not in arrays:
            raise UserError(f"data file {path} needs arrays `x` and `y` (has {', '.join(arrays)})")
    x, y = arrays["x"].astype(np.float32), arrays["y"]
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise UserError(
            f"data file {path}: x must be N x D and y of length N, got x {x.shape}, y {y.shape}"
        )
    if y.dtype.kind == "f" and not np.all(y == np.round(y)):
        raise UserError(f"data file {path}: labels y must be integers")
    check_finite(f"{path} x", x)
    x = x.reshape(len(x), -1)
    if "x_test" in arrays and "y_test" in arrays:
        xte, yte = (
            arrays["x_test"].astype(np.float32).reshape(len(arrays["x_test"]), -1),
            arrays["y_test"],
        )
        xtr, ytr = x, y
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(x))
        n_test = max(1, int(round(test_fraction * len(x))))
        te, tr = perm[:n_test], perm[n_test:]
        xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
    k = int(max(ytr.max(), yte.max())) + 1
    return Split(
        torch.from_numpy(np.ascontiguousarray(xtr)),
        torch.from_numpy(ytr.astype(np.int64)),
        torch.from_numpy(np.ascontiguousarray(xte)),
        torch.from_numpy(yte.astype(np.int64)),
        num_classes=k,
    )


def image_classification(source: str, data_dir: str | Path | None = None, seed: int = 0) -> Split:
    """``digits`` (bundled), ``mnist`` (IDX files in ``data_dir``) or an ``.npz`` with ``x``
    and integer ``y``, split into train and test with ``seed`` where not already split."""
    if source == "digits":
        return digits(seed=seed)
    if source == "mnist":
        return mnist(data_dir)
    if str(source).endswith(".npz"):
        return npz_classification(source, seed=seed)
    raise UserError(f"--data must be digits, mnist or an .npz file, got {source!r}")
