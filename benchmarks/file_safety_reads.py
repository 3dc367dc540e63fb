"""File-safety audit cases: special files and limits, wrong JSON types."""

from __future__ import annotations

import hashlib
from pathlib import Path

from file_safety_cases import (
    CASES,
    LONG,
    Box,
    case,
    edit,
    evaluate,
    fifo,
    link,
    load,
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


# ----------------------------------------------------------------------------- special files


def _user_fit(box, data) -> list:
    out = box.root / "out"
    box.allowed.append(out)
    gp = f"{box.templates / 'code' / 'gp.py'}:model"
    return ["fit", gp, "--data", data, "--steps", 5, "--quiet", "--out", out]


@case("special files and limits", "refuse")
def config_json_is_a_fifo(box):
    run = box.run("coin")
    fifo(run / "config.json")
    return evaluate(run)


@case("special files and limits", "refuse")
def config_json_links_to_dev_zero(box):
    run = box.run("coin")
    link(run / "config.json", "/dev/zero")
    return evaluate(run)


@case("special files and limits", "refuse")
def metrics_links_to_dev_zero_on_resume(box):
    run = box.run("coin")
    link(run / "metrics.jsonl", "/dev/zero")
    return resume(box, run)


@case("special files and limits", "refuse")
def metrics_is_a_fifo_on_resume(box):
    run = box.run("coin")
    fifo(run / "metrics.jsonl")
    return resume(box, run)


@case("special files and limits", "refuse")
def data_is_a_fifo(box):
    fifo(box.root / "data.csv")
    return _user_fit(box, box.root / "data.csv")


@case("special files and limits", "refuse")
def data_links_to_dev_zero(box):
    link(box.root / "data.csv", "/dev/zero")
    return _user_fit(box, box.root / "data.csv")


@case("special files and limits", "refuse")
def data_is_a_symlink_loop(box):
    link(box.root / "a.npz", box.root / "b.npz")
    link(box.root / "b.npz", box.root / "a.npz")
    return _user_fit(box, box.root / "a.npz")


@case("special files and limits", "refuse")
def data_path_part_over_255_bytes(box):
    return _user_fit(box, box.root / f"{LONG}.npz")


@case("special files and limits", "refuse")
def out_path_part_over_255_bytes(box):
    return ["fit", "coin", "--steps", 5, "--quiet", "--out", box.root / LONG]


@case("special files and limits", "refuse")
def run_path_part_over_255_bytes(box):
    return evaluate(box.root / LONG)


@case("special files and limits", "refuse")
def input_is_a_fifo(box):
    run = box.run("coin")
    fifo(box.root / "in.npz")
    return ["predict", run, "--input", box.root / "in.npz"]


@case("special files and limits", "refuse")
def input_is_a_symlink_loop(box):
    run = box.run("coin")
    link(box.root / "in.npz", box.root / "in.npz")
    return ["predict", run, "--input", box.root / "in.npz"]


@case("special files and limits", "refuse")
def checkpoint_is_a_fifo(box):
    run = box.run("coin")
    fifo(run / "checkpoint.pt")
    return evaluate(run)


@case("special files and limits", "refuse")
def checkpoint_links_to_dev_zero(box):
    run = box.run("coin")
    link(run / "checkpoint.pt", "/dev/zero")
    return evaluate(run)


@case("special files and limits", "refuse")
def summary_is_a_fifo_on_load(box):
    run = box.run("coin")
    fifo(run / "summary.json")
    return load(run)


@case("special files and limits", "refuse")
def summary_links_to_dev_zero_on_load(box):
    run = box.run("coin")
    link(run / "summary.json", "/dev/zero")
    return load(run)


@case("special files and limits", "refuse")
def draws_is_a_fifo(box):
    run = box.run("nuts")
    fifo(run / "draws.npz")
    return evaluate(run)


@case("special files and limits", "refuse")
def prototype_is_a_fifo(box):
    run = box.run("user")
    fifo(run / "prototype.npz")
    return ["predict", run, "--input", box.templates / "data" / "new.npz"]


@case("special files and limits", "refuse")
def data_npz_in_run_is_a_fifo(box):
    run = box.run("py")
    fifo(run / "data.npz")
    return evaluate(run)


@case("special files and limits", "refuse")
def lock_file_is_a_fifo_on_resume(box):
    run = box.run("coin")
    fifo(run / ".bayesdl.lock")
    return resume(box, run)


@case("special files and limits", "refuse")
def metrics_is_a_folder_on_resume(box):
    run = box.run("coin")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    return resume(box, run)


@case("special files and limits", "refuse")
def config_json_is_a_folder(box):
    run = box.run("coin")
    (run / "config.json").unlink()
    (run / "config.json").mkdir()
    return evaluate(run)


@case("special files and limits", "refuse")
def config_json_of_70_mb(box):
    run = box.run("coin")
    text = (run / "config.json").read_text().rstrip()
    (run / "config.json").write_text(text[:-1] + " " * (70 << 20) + "}")
    return evaluate(run)


@case("special files and limits", "refuse")
def input_is_a_folder(box):
    run = box.run("coin")
    return ["predict", run, "--input", box.victims]


# ----------------------------------------------------------------------------- JSON types


def _args(run: Path, **kw) -> None:
    edit(run / "config.json", lambda c: c["args"].update(kw))


@case("wrong JSON types", "refuse")
def config_guide_is_a_number(box):
    run = box.run("user")
    _args(run, guide=5)
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_data_is_a_number(box):
    run = box.run("user")
    _args(run, data=5)
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_x_cols_is_a_number(box):
    run = box.run("user")
    _args(run, x_cols=7)
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_steps_is_a_word_on_resume(box):
    run = box.run("coin")
    _args(run, steps="many")
    return resume(box, run)


@case("wrong JSON types", "refuse")
def config_seed_is_a_word(box):
    run = box.run("coin")
    _args(run, seed="x")
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_deeply_nested(box):
    run = box.run("coin")
    (run / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_deeply_nested_in_args(box):
    run = box.run("coin")
    text = (run / "config.json").read_text().rstrip()
    (run / "config.json").write_text(text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    return load(run)


@case("wrong JSON types", "refuse")
def config_is_a_list(box):
    run = box.run("coin")
    (run / "config.json").write_text("[]")
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_model_is_a_number(box):
    run = box.run("coin")
    edit(run / "config.json", lambda c: c.update(model=5))
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_plugin_is_a_string(box):
    run = box.run("coin")
    _args(run, plugin="notalist")
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_lr_is_true_on_resume(box):
    run = box.run("coin")
    _args(run, lr=True)
    return resume(box, run)


@case("wrong JSON types", "refuse")
def config_method_is_a_number(box):
    run = box.run("coin")
    _args(run, method=5)
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_heads_is_a_list(box):
    run = box.run("coin")
    _args(run, heads=[1, 2])
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_guide_is_null(box):
    run = box.run("user")
    _args(run, guide=None)
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_arg_holds_numbers(box):
    run = box.run("user")
    _args(run, arg=[5])
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_init_value_is_a_string(box):
    run = box.run("user")
    _args(run, init_value="x")
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_max_plate_nesting_is_a_word(box):
    run = box.run("coin")
    _args(run, max_plate_nesting="x")
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_device_is_a_number(box):
    run = box.run("coin")
    _args(run, device=5)
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_batch_size_is_a_word(box):
    run = box.run("user")
    _args(run, batch_size="x")
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_data_in_run_is_a_number(box):
    run = box.run("py")
    edit(run / "config.json", lambda c: c.update(data_in_run=5))
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_model_file_record_is_a_number(box):
    run = box.run("user")
    edit(run / "config.json", lambda c: c.update(model_file=5))
    return evaluate(run)


@case("wrong JSON types", "refuse")
def config_model_function_is_a_number(box):
    run = box.run("user")
    _args(run, model_function=5)
    return evaluate(run)


@case("wrong JSON types", "refuse")
def nuts_summary_is_a_list(box):
    run = box.run("nuts")
    (run / "summary.json").write_text("[]")
    return load(run)


@case("wrong JSON types", "refuse")
def nuts_summary_wall_seconds_is_a_word(box):
    run = box.run("nuts")
    edit(run / "summary.json", lambda s: s.update(wall_seconds="x"))
    return load(run)


@case("wrong JSON types", "refuse")
def nuts_summary_chain_stats_is_a_word(box):
    run = box.run("nuts")
    edit(run / "summary.json", lambda s: s.update(chain_stats="x"))
    return load(run)


@case("wrong JSON types", "refuse")
def nuts_summary_divergences_is_a_word(box):
    run = box.run("nuts")
    edit(run / "summary.json", lambda s: s.update(divergences="x"))
    return load(run)


@case("wrong JSON types", "refuse")
def vi_summary_is_a_list(box):
    run = box.run("coin")
    (run / "summary.json").write_text("[]")
    return load(run)


@case("wrong JSON types", "refuse")
def vi_summary_final_elbo_is_a_word(box):
    run = box.run("coin")
    edit(run / "summary.json", lambda s: s.update(final_elbo="x"))
    return load(run)


@case("wrong JSON types", "refuse")
def vi_summary_steps_is_a_word(box):
    run = box.run("coin")
    edit(run / "summary.json", lambda s: s.update(steps="x"))
    return load(run)


@case("wrong JSON types", "ok")
def metrics_garbage_lines_on_resume(box):
    run = box.run("coin")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('garbage\n[1, 2]\n{"step": "x"}\n\x00\x01\n')
    return resume(box, run)


@case("wrong JSON types", "ok")
def metrics_deeply_nested_line_on_resume(box):
    run = box.run("coin")
    with open(run / "metrics.jsonl", "a") as f:
        f.write("[" * 100_000 + "]" * 100_000 + "\n")
    return resume(box, run)
