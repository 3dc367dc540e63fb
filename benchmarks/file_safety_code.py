"""File-safety audit cases: code from a folder, writes through links, replaced outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from file_safety_cases import (
    CASES,
    Box,
    case,
    edit,
    evaluate,
    fifo,
    link,
    load,
    resume,
    unchanged,
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


# ----------------------------------------------------------------------------- code


@case("code from a folder", "refuse")
def bnn_relative_net_evaluate(box):
    run = box.run("bnn", "sbnn")
    box.evil(run / "net.py", (box.templates / "code" / "net.py").read_text())
    edit(run / "config.json", lambda c: c["args"].update(net="sbnn/net.py:make_net"))
    return evaluate("sbnn")


@case("code from a folder", "refuse")
def bnn_relative_net_load(box):
    run = box.run("bnn", "sbnn")
    box.evil(run / "net.py", (box.templates / "code" / "net.py").read_text())
    edit(run / "config.json", lambda c: c["args"].update(net="sbnn/net.py:make_net"))
    return load(Path("sbnn"))


@case("code from a folder", "refuse")
def bnn_absolute_net_in_folder(box):
    run = box.run("bnn", "sbnn")
    box.evil(run / "net.py", (box.templates / "code" / "net.py").read_text())
    edit(run / "config.json", lambda c: c["args"].update(net=f"{run}/net.py:make_net"))
    return evaluate(run)


@case("code from a folder", "refuse")
def proc_cwd_model_evaluate(box):
    _code_in_folder(box, "/proc/self/cwd/shared")
    return evaluate("shared")


@case("code from a folder", "refuse")
def proc_cwd_model_predict(box):
    _code_in_folder(box, "/proc/self/cwd/shared")
    return ["predict", "shared", "--input", box.templates / "data" / "new.npz"]


@case("code from a folder", "refuse")
def proc_cwd_model_load(box):
    _code_in_folder(box, "/proc/self/cwd/shared")
    return load(Path("shared"))


@case("code from a folder", "refuse")
def absolute_model_in_folder_evaluate(box):
    run = _code_in_folder(box, str(box.root / "shared"))
    return evaluate(run)


@case("code from a folder", "refuse")
def absolute_model_in_folder_sample(box):
    run = _code_in_folder(box, str(box.root / "shared"))
    return ["sample", run]


@case("code from a folder", "refuse")
def guide_file_in_folder(box):
    run = box.run("user", "shared")
    guide = box.evil(run / "guide.py", "\n\ndef guide(counts):\n    pass\n")
    edit(run / "config.json", lambda c: c["args"].update(guide=f"{guide}:guide"))
    return evaluate(run)


@case("code from a folder", "refuse")
def guide_file_in_folder_with_model_given(box):
    run = box.run("user", "shared")
    guide = box.evil(run / "guide.py", "\n\ndef guide(counts):\n    pass\n")
    edit(run / "config.json", lambda c: c["args"].update(guide=f"{guide}:guide"))

    def go():
        import pyro
        import pyro.distributions as dist

        def model(counts):
            rate = pyro.sample("rate", dist.Gamma(5.0, 0.5))
            with pyro.plate("data", len(counts)):
                pyro.sample("obs", dist.Poisson(rate), obs=counts)

        import bayesdl

        bayesdl.load(run, model=model)

    return go


@case("code from a folder", "ok")
def builtin_run_names_a_plugin_and_model_file(box):
    run = box.run("coin")
    evil = box.evil(box.root / "evil.py")

    def plant(cfg):
        cfg["args"].update(plugin=[str(evil)], model_file=str(evil), model_function="model")

    edit(run / "config.json", plant)
    return evaluate(run)


@case("code from a folder", "refuse")
def plugin_model_run_names_its_plugin(box):
    run = box.run("user")
    evil = box.evil(box.root / "evil.py")

    def plant(cfg):  # a run of a plugin's model: the plugin must be named again
        cfg["model"] = "some-plugin-model"
        cfg["args"].update(plugin=[str(evil)], model_file=None, model_function=None)

    edit(run / "config.json", plant)
    return ["predict", run, "--input", box.templates / "data" / "new.npz"]


@case("code from a folder", "refuse")
def relative_model_file(box):
    run = box.run("user")
    box.evil(box.root / "evil.py")
    edit(run / "config.json", lambda c: (c.update(model="evil.py:model"),
                                         c["args"].update(model_file="evil.py")))  # fmt: skip
    return evaluate(run)


@case("code from a folder", "refuse")
def model_file_is_a_fifo(box):
    run = box.run("user")
    fifo(box.root / "m.py")
    path = str(box.root / "m.py")
    edit(run / "config.json", lambda c: (c.update(model=f"{path}:model"),
                                         c["args"].update(model_file=path)))  # fmt: skip
    return evaluate(run)


@case("code from a folder", "refuse")
def model_file_links_to_dev_zero(box):
    run = box.run("user")
    link(box.root / "m.py", "/dev/zero")
    path = str(box.root / "m.py")
    edit(run / "config.json", lambda c: (c.update(model=f"{path}:model"),
                                         c["args"].update(model_file=path)))  # fmt: skip
    return evaluate(run)


@case("code from a folder", "ok")
def copy_of_the_recorded_model_file_named_again(box):
    run = box.run("user", "shared")
    mine = box.root / "mine.py"
    mine.write_bytes((box.templates / "code" / "gp.py").read_bytes())

    def elsewhere(cfg):  # the run was fitted on another machine
        cfg["model"] = "/home/alice/gp.py:model"
        cfg["args"]["model_file"] = "/home/alice/gp.py"
        cfg["model_file"] = {"path": "/home/alice/gp.py", "sha256": _sha(mine)}

    edit(run / "config.json", elsewhere)
    return ["evaluate", run, "--model-file", mine]


@case("code from a folder", "ok")
def own_user_run_evaluate(box):
    return evaluate(box.run("user"))


@case("code from a folder", "ok")
def own_user_run_load(box):
    return load(box.run("user"))


@case("code from a folder", "ok")
def own_bnn_net_run_evaluate(box):
    run = box.run("bnn")
    box.cwd = box.templates  # where it was fitted: `--net code/net.py:make_net`
    return evaluate(run)


@case("code from a folder", "refuse")
def own_model_file_edited_after_the_fit(box):
    (box.root / "own").mkdir()
    model = box.root / "own" / "gp.py"
    model.write_text((box.templates / "code" / "gp.py").read_text())
    out = box.root / "own" / "run"
    box.fit([f"{model}:model", "--data", box.templates / "data" / "counts.npz", "--steps", 10,
             "--quiet", "--out", out])  # fmt: skip
    box.allowed.append(out)
    box.evil(model)  # the file changed: now it also writes the marker
    return evaluate(out)


# ----------------------------------------------------------------------------- writes


@case("writes through links", "refuse")
def evaluation_json_links_to_a_victim(box):
    run = box.run("coin")
    link(run / "evaluation.json", box.victim())
    return evaluate(run)


@case("writes through links", "refuse")
def summary_json_link_on_resume(box):
    run = box.run("coin")
    link(run / "summary.json", box.victim())
    return resume(box, run)


@case("writes through links", "refuse")
def config_json_link_on_resume(box):
    run = box.run("coin")
    victim = box.victim("config.json", (run / "config.json").read_bytes())
    link(run / "config.json", victim)
    return resume(box, run)


@case("writes through links", "refuse")
def prototype_npz_link_on_resume(box):
    run = box.run("user")
    victim = box.victim("p.npz", (run / "prototype.npz").read_bytes())
    link(run / "prototype.npz", victim)
    return resume(box, run, "user")


@case("writes through links", "ok")
def checkpoint_tmp_link_on_resume(box):
    run = box.run("coin")
    link(run / "checkpoint.pt.tmp", box.victim())
    return resume(box, run)


@case("writes through links", "refuse")
def metrics_jsonl_link_on_resume(box):
    run = box.run("coin")
    lines = (run / "metrics.jsonl").read_bytes() + b'{"step": 999, "elbo": 1.0}\nmine\n'
    link(run / "metrics.jsonl", box.victim("m.jsonl", lines))
    return resume(box, run)


@case("writes through links", "refuse")
def checkpoint_link_on_resume(box):
    run = box.run("coin")
    victim = box.victim("c.pt", (run / "checkpoint.pt").read_bytes())
    link(run / "checkpoint.pt", victim)
    return resume(box, run)


@case("writes through links", "refuse")
def dangling_lock_link_on_resume(box):
    run = box.run("coin")
    link(run / ".bayesdl.lock", box.victims / "created-by-bayesdl")
    return resume(box, run)


@case("writes through links", "refuse")
def figure_link_on_resume(box):
    run = box.run("coin")
    link(run / "coin_posterior.png", box.victim())
    return resume(box, run)


@case("writes through links", "refuse")
def evaluation_json_is_a_fifo(box):
    run = box.run("coin")
    fifo(run / "evaluation.json")
    return evaluate(run)


@case("writes through links", "refuse")
def tour_index_links_to_a_victim_overwrite(box):
    site = box.root / "site"
    site.mkdir()
    box.allowed.append(site)
    link(site / "index.html", box.victim())
    return ["tour", "--only", "coin", "--out", site, "--quiet", "--overwrite"]


@case("writes through links", "refuse")
def tour_index_links_to_a_victim(box):
    site = box.root / "site"
    site.mkdir()
    box.allowed.append(site)
    link(site / "index.html", box.victim())
    return ["tour", "--only", "coin", "--out", site, "--quiet"]


@case("writes through links", "refuse")
def tour_run_folder_links_outside_overwrite(box):
    site = box.root / "site"
    site.mkdir()
    box.allowed.append(site)
    elsewhere = box.victims / "important"
    elsewhere.mkdir()
    (elsewhere / "summary.json").write_text("{}\n")
    link(site / "coin", elsewhere)
    return ["tour", "--only", "coin", "--out", site, "--quiet", "--overwrite"]


@case("writes through links", "refuse")
def predict_output_links_to_a_victim(box):
    run = box.run("coin")
    link(box.root / "out.json", box.victim())
    return ["predict", run, "--input", box.templates / "data" / "flips.npz",
            "--output", box.root / "out.json"]  # fmt: skip


@case("writes through links", "refuse")
def compare_figure_links_to_a_victim(box):
    a, b = box.run("coin"), box.run("coin2")
    out = box.root / "cmp"
    out.mkdir()
    link(out / "compare.png", box.victim())
    return ["compare", a, b, "--out", out, "--samples", 50]


@case("writes through links", "refuse")
def data_npz_link_in_a_python_run(box):
    run = box.run("py")
    victim = box.victim("d.npz", (run / "data.npz").read_bytes())
    link(run / "data.npz", victim)
    return evaluate(run)


@case("writes through links", "ok")
def save_over_planted_links_with_overwrite(box):
    run, dest = box.run("coin"), box.run("coin2", "dest")
    link(dest / "summary.json", box.victim())
    link(dest / "checkpoint.pt", box.victim("c.pt", (run / "checkpoint.pt").read_bytes()))

    def go():
        import bayesdl

        bayesdl.load(run).save(dest, overwrite=True)

    return go


@case("writes through links", "refuse")
def save_over_planted_links(box):
    run, dest = box.run("coin"), box.run("coin2", "dest")
    link(dest / "summary.json", box.victim())
    (dest / "checkpoint.pt").unlink()

    def go():
        import bayesdl

        bayesdl.load(run).save(dest)

    return go


@case("writes through links", "refuse")
def evaluate_a_run_a_fit_holds(box):
    run = box.run("coin")
    box.hold_lock(run)
    unchanged(box, run / "summary.json")
    return evaluate(run)


@case("writes through links", "ok")
def metrics_link_removed_by_overwrite(box):
    run = box.run("coin")
    link(run / "metrics.jsonl", box.victim())
    return ["fit", "coin", "--steps", 10, "--quiet", "--overwrite", "--out", run]


# ----------------------------------------------------------------------------- replaced


@case("replaced without --overwrite", "refuse")
def tour_replaces_index_html(box):
    site = box.root / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>mine</p>\n")
    box.allowed.append(site)
    unchanged(box, site / "index.html")
    return ["tour", "--only", "coin", "--out", site, "--quiet"]


@case("replaced without --overwrite", "refuse")
def compare_json_replaces_a_file(box):
    a, b = box.run("coin"), box.run("coin2")
    (box.root / "cmp.json").write_text("mine\n")
    box.allowed.append(box.root / "cmp")
    return ["compare", a, b, "--out", box.root / "cmp", "--samples", 50,
            "--json", box.root / "cmp.json"]  # fmt: skip


@case("replaced without --overwrite", "refuse")
def compare_replaces_compare_png(box):
    a, b = box.run("coin"), box.run("coin2")
    (box.root / "cmp").mkdir()
    (box.root / "cmp" / "compare.png").write_text("mine\n")
    return ["compare", a, b, "--out", box.root / "cmp", "--samples", 50]


@case("replaced without --overwrite", "refuse")
def predict_output_replaces_a_file(box):
    run = box.run("coin")
    (box.root / "p.json").write_text("mine\n")
    return ["predict", run, "--input", box.templates / "data" / "flips.npz",
            "--output", box.root / "p.json"]  # fmt: skip


@case("replaced without --overwrite", "refuse")
def predict_output_into_a_locked_run_config(box):
    run = box.run("coin")
    unchanged(box, run / "config.json")
    other = box.run("coin2", "locked")
    unchanged(box, other / "config.json")
    box.hold_lock(other)
    return ["predict", run, "--input", box.templates / "data" / "flips.npz",
            "--output", other / "config.json"]  # fmt: skip


@case("replaced without --overwrite", "refuse")
def predict_output_new_file_in_a_locked_run(box):
    run = box.run("coin")
    other = box.run("coin2", "locked", allow=False)
    box.hold_lock(other)
    return ["predict", run, "--input", box.templates / "data" / "flips.npz",
            "--output", other / "p.json"]  # fmt: skip


@case("replaced without --overwrite", "refuse")
def predict_output_over_the_run_config(box):
    run = box.run("coin")
    unchanged(box, run / "config.json")
    return ["predict", run, "--input", box.templates / "data" / "flips.npz",
            "--output", run / "config.json"]  # fmt: skip


@case("replaced without --overwrite", "refuse")
def compare_json_into_a_locked_run(box):
    a, b = box.run("coin"), box.run("coin2")
    box.hold_lock(a)
    box.allowed.append(box.root / "cmp")
    return ["compare", a, b, "--out", box.root / "cmp", "--samples", 50,
            "--json", a / "summary.json"]  # fmt: skip
