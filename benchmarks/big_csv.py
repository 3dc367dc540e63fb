"""Reading a big CSV and fitting a model to it: wall time and peak memory.

    python benchmarks/big_csv.py [--rows 2000000] [--features 9] [--steps 200] [--threads N]

Writes a CSV of ``rows`` x (``features`` + 1) floats (x0..x8, y of a linear regression; about
170 MB of text, 80 MB as float32) in a temporary folder, then, each in a fresh process:

* ``read``: ``workflows.user_model.read_data(csv, x_cols, "y")`` -- seconds and peak RSS;
* ``fit``: ``python -m bayesdl fit linreg.py:model --data csv --x-cols ... --y-col y --steps``
  (Bayesian linear regression, auto-normal guide, full batch) -- wall seconds of the whole
  command (imports, reading, fitting, writing the run) and its peak RSS;
* ``predict``: ``python -m bayesdl predict run --input two.npz`` (two rows) -- the same.

Peak RSS is the child's own ``ru_maxrss`` (``os.wait4``), as ``/usr/bin/time -v`` reports it.
The slow test ``tests/datasets/test_io.py::test_big_csv_fit_time_and_memory`` runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODEL = """import pyro
import pyro.distributions as dist


def model(x, y=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Normal(x @ w + b, sigma), obs=y)
"""

READ = """import json, resource, sys, time
t = time.perf_counter()
from bayesdl.workflows.user_model import read_data
t_import = time.perf_counter() - t
t = time.perf_counter()
d = read_data(sys.argv[1], sys.argv[2], "y")
print(json.dumps({"read_s": time.perf_counter() - t, "import_s": t_import,
                  "dtypes": {k: str(v.dtype) for k, v in d.items()},
                  "shapes": {k: list(v.shape) for k, v in d.items()}}))
"""


def write_csv(path: Path, rows: int, features: int, seed: int = 0) -> None:
    """x ~ N(0, 1), y = x w + 0.5 + 0.1 noise, 5 decimals, written a block of rows at a time."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=features)
    with open(path, "w") as f:
        f.write(",".join([*(f"x{j}" for j in range(features)), "y"]) + "\n")
        for start in range(0, rows, 200_000):
            n = min(200_000, rows - start)
            x = rng.normal(size=(n, features))
            y = x @ w + 0.5 + 0.1 * rng.normal(size=n)
            np.savetxt(f, np.column_stack([x, y]), fmt="%.5f", delimiter=",")


def child_peak(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd`` and report its wall time and its own peak RSS (os.wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if code != 0:
            tail = err.read().decode()[-2000:]
            raise RuntimeError(f"{' '.join(cmd[:5])} ... failed ({code}): {tail}")
        return {
            "wall_s": wall,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "stdout": out.read().decode(),
        }


def run(
    rows: int = 2_000_000,
    features: int = 9,
    steps: int = 200,
    threads: int | None = None,
    folder: Path | None = None,
) -> dict:
    """Write the CSV, read it, fit it; the figures as a dict."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(folder or tmp)
        csv, model = d / "big.csv", d / "linreg.py"
        t = time.perf_counter()
        write_csv(csv, rows, features)
        written = time.perf_counter() - t
        model.write_text(MODEL)
        x_cols = ",".join(f"x{j}" for j in range(features))
        read = child_peak([sys.executable, "-c", READ, str(csv), x_cols], d)
        fit_cmd = [
            *(sys.executable, "-m", "bayesdl", "fit", f"{model}:model"),
            *("--data", str(csv), "--x-cols", x_cols, "--y-col", "y"),
            *("--steps", str(steps), "--out", str(d / "run"), "--quiet", "--overwrite"),
        ]
        if threads:
            fit_cmd += ["--threads", str(threads)]
        fit = child_peak(fit_cmd, d)
        np.savez(d / "two.npz", x=np.zeros((2, features), dtype=np.float32))
        predict = child_peak(
            [
                sys.executable,
                "-m",
                "bayesdl",
                "predict",
                str(d / "run"),
                "--input",
                str(d / "two.npz"),
            ],
            d,
        )
        info = json.loads(read.pop("stdout"))
        return {
            "rows": rows,
            "columns": features + 1,
            "csv_mb": csv.stat().st_size / 2**20,
            "write_s": written,
            "read_s": info["read_s"],
            "read_process_s": read["wall_s"],
            "read_peak_rss_mb": read["peak_rss_mb"],
            "dtypes": info["dtypes"],
            "fit_steps": steps,
            "fit_wall_s": fit["wall_s"],
            "fit_peak_rss_mb": fit["peak_rss_mb"],
            "fit_stdout": fit["stdout"].strip(),
            "predict_2_rows_wall_s": predict["wall_s"],
            "predict_2_rows_peak_rss_mb": predict["peak_rss_mb"],
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--features", type=int, default=9)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=None, help="--threads of the fit")
    a = p.parse_args()
    r = run(a.rows, a.features, a.steps, a.threads)
    for k, v in r.items():
        print(f"{k:18s} {v:.2f}" if isinstance(v, float) else f"{k:18s} {v}")


if __name__ == "__main__":
    main()
