"""A ``PyroModule`` instance kept in a file (``model = Regression()`` in ``my_net.py``) is
recorded by file and name, so ``bayesdl.load`` finds it again without ``model=``; loading
still imports only a file this user fitted, or one named again."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest
import torch

import bayesdl

SOURCE = textwrap.dedent(
    '''
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.nn import PyroModule, PyroSample


    class Regression(PyroModule):
        """y ~ N(w x + b, 0.5^2), w, b ~ N(0, 1)."""

        def __init__(self):
            super().__init__()
            self.linear = PyroModule[torch.nn.Linear](1, 1)
            self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 1]).to_event(2))
            self.linear.bias = PyroSample(dist.Normal(0.0, 1.0).expand([1]).to_event(1))

        def forward(self, x, y=None):
            mean = self.linear(x).squeeze(-1)
            with pyro.plate("data", x.shape[0]):
                return pyro.sample("y", dist.Normal(mean, 0.5), obs=y)


    model = Regression()


    def made_inside():
        return Regression()
    '''
)


@pytest.fixture
def user_file(tmp_path, monkeypatch):
    path = tmp_path / "h24a_net.py"
    path.write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("h24a_net")
    yield module, path
    sys.modules.pop("h24a_net", None)


X = torch.linspace(-1, 1, 30)[:, None]
Y = 0.8 * X[:, 0] - 0.3 + 0.5 * torch.sin(torch.arange(30.0))


def test_a_module_level_pyromodule_is_found_again_by_load(user_file, tmp_path):
    module, path = user_file
    run = tmp_path / "run"
    post = bayesdl.fit(module.model, data={"x": X, "y": Y}, steps=200, out=run, progress=False)
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == f"{path.resolve()}:model"
    again = bayesdl.load(run)  # no model=: the file and name are recorded
    assert again.summary() == post.summary()


def test_one_made_elsewhere_says_how_to_reopen_it(user_file, tmp_path):
    module, _ = user_file
    run = tmp_path / "inside"
    bayesdl.fit(module.made_inside(), data={"x": X, "y": Y}, steps=20, out=run, progress=False)
    assert json.loads((run / "config.json").read_text())["model"] == "python:Regression"
    with pytest.raises(bayesdl.UserError, match="module-level name"):
        bayesdl.load(run)


def test_another_users_folder_does_not_import_the_file(user_file, tmp_path, monkeypatch):
    module, path = user_file
    run = tmp_path / "shared"
    bayesdl.fit(module.model, data={"x": X, "y": Y}, steps=20, out=run, progress=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "another-user"))  # fitted by nobody
    with pytest.raises(bayesdl.UserError, match="model-file|model_files"):
        bayesdl.load(run)
    assert bayesdl.load(run, model_files=[str(path)]).summary()
