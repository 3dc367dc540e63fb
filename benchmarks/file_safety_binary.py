"""File-safety audit cases: checkpoints, npz files, the console script."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from file_safety_cases import (
    CASES,
    Box,
    case,
    edit,
    edit_ckpt,
    evaluate,
    fifo,
    huge_npy_member,
    link,
    load,
    npz_with,
    params,
    resume,
)

__all__ = ["CASES"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _code_in_folder(box: Box, spec_dir: str) -> Path:
    """A copy of the user run whose config names a model file inside the folder, ``spec_dir``
    being how it names the folder (``/proc/self/cwd/shared``, an absolute path...)."""
    run = box.run("user", "shared")
    model = box.evil(run / "model.py")
    path = f"{spec_dir}/model.py"

    def plant(cfg):
        cfg["model"] = f"{path}:model"
        cfg["args"]["model_file"] = path
        cfg["model_file"] = {"path": path, "sha256": _sha(model)}

    edit(run / "config.json", plant)
    return run


from file_safety_reads import _args, _user_fit  # noqa: E402

# ----------------------------------------------------------------------------- checkpoints


@case("checkpoints", "refuse")
def checkpoint_all_nan_parameters(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: [v.fill_(float("nan")) for v in params(s).values()])
    return evaluate(run)


@case("checkpoints", "refuse")
def checkpoint_all_nan_parameters_predict(box):
    run = box.run("user")
    edit_ckpt(run, lambda s: [v.fill_(float("nan")) for v in params(s).values()])
    return ["predict", run, "--input", box.templates / "data" / "new.npz"]


@case("checkpoints", "refuse")
def checkpoint_all_nan_parameters_load(box):
    run = box.run("user")
    edit_ckpt(run, lambda s: [v.fill_(float("nan")) for v in params(s).values()])

    def go():
        import bayesdl

        print(bayesdl.load(run).summary())

    return go


@case("checkpoints", "refuse", silent=True)
def checkpoint_infinite_parameter(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: [v.fill_(float("inf")) for v in params(s).values()])
    return evaluate(run)


@case("checkpoints", "refuse")
def checkpoint_wrong_rng_tensor_on_resume(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: s["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)))
    return resume(box, run)


@case("checkpoints", "refuse")
def checkpoint_wrong_python_rng_on_resume(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: s["rng"].update(python=["a", "b", "c"]))
    return resume(box, run)


@case("checkpoints", "refuse")
def checkpoint_wrong_numpy_rng_on_resume(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: s["rng"]["numpy"].update(keys=torch.zeros(3, dtype=torch.int64)))
    return resume(box, run)


@case("checkpoints", "refuse")
def checkpoint_param_store_is_a_string(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: s.update(param_store="x"))
    return evaluate(run)


@case("checkpoints", "refuse")
def checkpoint_a_parameter_is_a_string(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: params(s).update({k: "x" for k in params(s)}))
    return evaluate(run)


@case("checkpoints", "refuse")
def checkpoint_parameter_of_another_shape(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: params(s).update({k: torch.zeros(3, 4) for k in params(s)}))
    return evaluate(run)


@case("checkpoints", "refuse", silent=True)
def checkpoint_complex_parameter(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: params(s).update({k: v + 0j for k, v in params(s).items()}))
    return evaluate(run)


@case("checkpoints", "refuse")
def checkpoint_step_is_a_word_on_resume(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: s.update(step="x"))
    return resume(box, run)


@case("checkpoints", "refuse", silent=True)
def checkpoint_negative_step_on_resume(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: s.update(step=-5))
    return resume(box, run)


@case("checkpoints", "refuse")
def checkpoint_history_is_a_string_on_load(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: s.update(history="x"))
    return load(run)


@case("checkpoints", "refuse")
def checkpoint_modules_is_a_string(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: s.update(modules="x"))
    return evaluate(run)


@case("checkpoints", "refuse")
def checkpoint_optimizer_is_a_string_on_resume(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: s.update(optimizer="x"))
    return resume(box, run)


@case("checkpoints", "refuse")
def checkpoint_window_is_a_string_on_resume(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: s.update(window="x"))
    return resume(box, run)


@case("checkpoints", "refuse")
def checkpoint_format_is_a_string(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: s.update(format="2"))
    return evaluate(run)


@case("checkpoints", "refuse")
def checkpoint_truncated(box):
    run = box.run("coin")
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    return evaluate(run)


@case("checkpoints", "refuse")
def checkpoint_constraint_names_a_function(box):
    run = box.run("coin")

    def plant(s):
        s["param_store"]["params"]["extra"] = torch.zeros(2)
        s["param_store"]["constraints"]["extra"] = {"class": "os:system", "attrs": {}}

    edit_ckpt(run, plant)
    return evaluate(run)


@case("checkpoints", "refuse")
def checkpoint_bnn_module_state_wrong(box):
    run = box.run("bnn")
    box.cwd = box.templates

    def wrong(s):
        s["modules"] = [{"x": torch.zeros(2)}, None]

    edit_ckpt(run, wrong)
    return evaluate(run)


# ----------------------------------------------------------------------------- npz


@case("npz files", "refuse")
def draws_truncated(box):
    run = box.run("nuts")
    data = (run / "draws.npz").read_bytes()
    (run / "draws.npz").write_bytes(data[: len(data) // 2])
    return evaluate(run)


@case("npz files", "refuse")
def draws_with_a_non_npy_member(box):
    run = box.run("nuts")
    with np.load(run / "draws.npz") as f:
        arrays = {k: f[k] for k in f.files}
    npz_with(run / "draws.npz", {"notes.txt": b"hello"}, arrays)
    return evaluate(run)


@case("npz files", "refuse")
def draws_with_a_huge_header(box):
    run = box.run("nuts")
    huge_npy_member(run / "draws.npz", "rate")
    return evaluate(run)


@case("npz files", "refuse")
def draws_with_an_object_array(box):
    run = box.run("nuts")
    np.savez(run / "draws.npz", rate=np.array([[None, 1]], dtype=object))
    return evaluate(run)


@case("npz files", "refuse")
def draws_of_one_dimension(box):
    run = box.run("nuts")
    np.savez(run / "draws.npz", rate=np.ones(5))
    return evaluate(run)


@case("npz files", "refuse", silent=True)
def draws_with_nan(box):
    run = box.run("nuts")
    np.savez(run / "draws.npz", rate=np.full((1, 40), np.nan))
    return evaluate(run)


@case("npz files", "refuse")
def draws_empty_zip(box):
    run = box.run("nuts")
    npz_with(run / "draws.npz", {})
    return load(run)


@case("npz files", "refuse", silent=True)
def draws_with_a_site_the_model_lacks(box):
    run = box.run("nuts")
    np.savez(run / "draws.npz", other=np.ones((1, 40)))
    return ["predict", run, "--input", box.templates / "data" / "new.npz"]


@case("npz files", "refuse")
def data_npz_with_a_non_npy_member(box):
    npz_with(box.root / "d.npz", {"notes.txt": b"hello"}, {"counts": np.array([1, 2, 3])})
    return _user_fit(box, box.root / "d.npz")


@case("npz files", "refuse")
def data_npz_with_a_huge_header(box):
    huge_npy_member(box.root / "d.npz", "counts")
    return _user_fit(box, box.root / "d.npz")


@case("npz files", "refuse")
def input_npz_with_a_non_npy_member(box):
    run = box.run("user")
    npz_with(box.root / "in.npz", {"x": b"1"}, {"counts": np.array([1, 2])})
    return ["predict", run, "--input", box.root / "in.npz"]


@case("npz files", "refuse")
def prototype_with_a_non_npy_member(box):
    run = box.run("user")
    with np.load(run / "prototype.npz") as f:
        arrays = {k: f[k] for k in f.files}
    npz_with(run / "prototype.npz", {"x.txt": b"1"}, arrays)
    return ["predict", run, "--input", box.templates / "data" / "new.npz"]


@case("npz files", "refuse")
def prototype_truncated(box):
    run = box.run("user")
    data = (run / "prototype.npz").read_bytes()
    (run / "prototype.npz").write_bytes(data[: len(data) // 2])
    return ["predict", run, "--input", box.templates / "data" / "new.npz"]


@case("npz files", "refuse")
def data_npz_in_run_truncated(box):
    run = box.run("py")
    data = (run / "data.npz").read_bytes()
    (run / "data.npz").write_bytes(data[: len(data) // 2])
    return evaluate(run)


# ----------------------------------------------------------------------------- console script


def _console(argv: list) -> callable:
    """The real console script ``bayesdl ARGV`` (its status and output are the case's)."""

    def go():
        import shutil
        import subprocess
        import sys

        exe = shutil.which("bayesdl") or os.path.join(os.path.dirname(sys.executable), "bayesdl")
        try:  # a fresh process imports torch: minutes on a loaded machine
            p = subprocess.run([exe, *map(str, argv)], capture_output=True, text=True, timeout=280)
        except subprocess.TimeoutExpired:
            sys.stderr.write("the console script did not end within 280 s\n")
            raise SystemExit(124) from None
        sys.stdout.write(p.stdout)
        sys.stderr.write(p.stderr)
        raise SystemExit(p.returncode)

    return go


@case("console script", "refuse")
def console_config_json_is_a_fifo(box):
    run = box.run("coin")
    fifo(run / "config.json")
    return _console(evaluate(run))


@case("console script", "refuse")
def console_evaluation_json_link(box):
    run = box.run("coin")
    link(run / "evaluation.json", box.victim())
    return _console(evaluate(run))


@case("console script", "refuse")
def console_bnn_relative_net(box):
    run = box.run("bnn", "sbnn")
    box.evil(run / "net.py", (box.templates / "code" / "net.py").read_text())
    edit(run / "config.json", lambda c: c["args"].update(net="sbnn/net.py:make_net"))
    return _console(evaluate("sbnn"))


@case("console script", "refuse")
def console_data_symlink_loop(box):
    link(box.root / "a.npz", box.root / "a.npz")
    return _console(_user_fit(box, box.root / "a.npz"))


@case("console script", "refuse")
def console_config_guide_is_a_number(box):
    run = box.run("user")
    _args(run, guide=5)
    return _console(evaluate(run))


@case("console script", "refuse")
def console_checkpoint_nan(box):
    run = box.run("coin")
    edit_ckpt(run, lambda s: [v.fill_(float("nan")) for v in params(s).values()])
    return _console(evaluate(run))


_ = json  # (json is used by the helpers' callers)
