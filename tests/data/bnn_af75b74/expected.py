"""What the code that made these folders answers on copies of them (evaluate, predict of the
inputs below, load().summary()), written to expected.json."""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

import bayesdl
from bayesdl import cli

HERE = Path(__file__).parent
NAMES = ["meanfield", "meanfield_sampled", "dropout", "sparse_vd", "map", "mle"]
X = np.random.default_rng(0).random((3, 64)).astype(np.float32)

out = {}
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    np.savez(tmp / "x.npz", x=X)
    for name in NAMES:
        run = tmp / name
        shutil.copytree(HERE / name, run)
        assert cli.main(["evaluate", str(run)]) == 0
        out[f"{name}_evaluate"] = json.loads((run / "evaluation.json").read_text())
        pred = tmp / f"{name}.json"
        assert (
            cli.main(["predict", str(run), "--input", str(tmp / "x.npz"), "--output", str(pred)])
            == 0
        )
        out[f"{name}_predict"] = json.loads(pred.read_text())
        post = bayesdl.load(run)
        summary = json.loads(json.dumps(post.summary(), default=float))
        # the sampled weights' summary: means and sds kept (the quantiles follow from them)
        keep = ("mean", "std")
        out[f"{name}_summary"] = {
            k: {s: v for s, v in rows.items() if s in keep} for k, rows in summary.items()
        }
(HERE / "expected.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
