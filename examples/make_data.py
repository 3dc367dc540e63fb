"""Regenerate the small data sets of the examples (seeded): ``python examples/make_data.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data"


def write_csv(name: str, columns: dict[str, np.ndarray], fmt: str = "%.4f") -> None:
    """One header row, then the columns side by side."""
    table = np.column_stack(list(columns.values()))
    np.savetxt(DATA / name, table, delimiter=",", header=",".join(columns), comments="", fmt=fmt)


def main() -> None:
    """Write every example's data file."""
    DATA.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    # Poisson regression: log rate = 0.5 + 0.8 x1 - 0.4 x2
    x = rng.normal(size=(200, 2))
    y = rng.poisson(np.exp(0.5 + x @ np.array([0.8, -0.4])))
    write_csv("poisson_regression.csv", {"x1": x[:, 0], "x2": x[:, 1], "y": y})
    # two well-separated Gaussian clusters: 30 % at -3, 70 % at 4, both with sd 1
    z = rng.random(200) < 0.3
    write_csv("mixture.csv", {"x": np.where(z, -3.0, 4.0) + rng.normal(size=200)})
    # eight schools (Rubin 1981; Gelman et al., BDA, section 5.5): estimated effects, std errors
    write_csv(
        "eight_schools.csv",
        {
            "y": np.array([28, 8, -3, 7, -1, 1, 18, 12]),
            "sigma": np.array([15, 10, 16, 11, 9, 11, 10, 18]),
        },
        fmt="%g",
    )
    # the README's straight line: y = 1 + 2 x + N(0, 0.5^2)
    xs = np.linspace(-2, 2, 50)
    write_csv("line.csv", {"x": xs, "y": 1.0 + 2.0 * xs + 0.5 * rng.normal(size=50)})
    sbc_designs(np.random.default_rng(1))


def sbc_designs(rng: np.random.Generator, n: int = 20, rho: float = 0.95) -> None:
    """``examples/sbc_regression.py`` 's two designs of 20 rows: columns correlated by
    ``rho``, and orthogonal ones (each of sum of squares ``n``), with ``y = x (1, -1) + noise``."""
    z = rng.normal(size=(n, 2))
    designs = {
        "sbc_correlated.csv": np.column_stack(
            [z[:, 0], rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1]]
        ),
        "sbc_orthogonal.csv": np.linalg.qr(z)[0] * np.sqrt(n),
    }
    for name, x in designs.items():
        y = x @ np.array([1.0, -1.0]) + 0.5 * rng.normal(size=n)
        write_csv(name, {"x1": x[:, 0], "x2": x[:, 1], "y": y})


if __name__ == "__main__":
    main()
