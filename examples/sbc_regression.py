"""A linear regression for simulation-based calibration (``bayesdl sbc``), on two designs.

    bayesdl sbc examples/sbc_regression.py:model --data examples/data/sbc_correlated.csv \
        --x-cols x1,x2 --y-col y --compile --out runs/sbc-correlated     (mean field: too narrow)
    bayesdl sbc examples/sbc_regression.py:model --data examples/data/sbc_orthogonal.csv \
        --x-cols x1,x2 --y-col y --compile --out runs/sbc-orthogonal     (mean field: exact)

``w ~ N(0, I)``, ``y_i ~ N(x_i w, 0.5^2)``: the posterior is Gaussian with precision
``Lambda = I + X^T X / 0.25``. With correlated columns (``sbc_correlated.csv``, correlation
0.95) the coefficients are strongly correlated a posteriori and the best factorized Gaussian
has marginal sds ``1 / sqrt(Lambda_kk)``, well below the exact ``sqrt((Lambda^-1)_kk)``: the
ranks of the truth are U-shaped. With orthogonal columns (``sbc_orthogonal.csv``) ``Lambda``
is diagonal and mean-field VI can be exact.
"""

import pyro
import pyro.distributions as dist

NOISE = 0.5


def model(x, y=None):
    """``w ~ N(0, I_d)``, ``y_i ~ N(x_i . w, 0.5^2)``."""
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(x @ w, NOISE), obs=y)
