"""bayesdl's command line: each command parses its options and calls the Python API
(:mod:`bayesdl.api`, :mod:`bayesdl.fits.run`); :data:`HELP` is what ``bayesdl --help`` prints."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from bayesdl.inference.errors import UserError
from bayesdl.inference.train import Interrupted
from bayesdl.workflows.fit_options import from_namespace
from bayesdl.workflows.options import Parser, fit_parser

PROG = "bayesdl"

HELP = """\
bayesdl: Bayesian deep learning with Pyro. Fit any Pyro model (or one of the lecture's named
models) by variational inference or NUTS, check whether to trust the fit, save it in a run
folder, and evaluate, predict, sample and compare from there.

usage: bayesdl COMMAND [options]       bayesdl COMMAND --help: the command's options

commands:
  list                 the named models (coin, linreg, bnn, vae, ss-vae, stochastic-depth)
  fit MODEL            fit a named model or FILE.py:function into a run folder (--out)
  evaluate RUN         held-out metrics of a run (evaluation.json)
  predict RUN          posterior predictive at new inputs (--input FILE; --output FILE)
  sample RUN           draws of a fitted generative model (images and arrays)
  compare RUN_A RUN_B  how far posterior A is from the reference B, per latent site
  tour                 fit every model on bundled data into one HTML report (--out)
  gradient-variance M  the variance of the ELBO gradient, REINFORCE vs pathwise
  sbc MODEL            simulation-based calibration of a model and its fit

example: bayesdl fit coin --heads 6 --tails 4     (into runs/coin-TIMESTAMP, printed)
docs: README.md, docs/tutorial.md"""


def _registry() -> dict:
    from bayesdl.api import registry

    return registry()


def _lookup(name: str):
    from bayesdl.api import workflow_for

    return workflow_for(name)  # a registered name or `fit path/to/file.py:model`


def _run_registry(run: str, plugins: list[str] = ()) -> dict:
    """The registry with what a saved run needs: the --plugin files given now, its model file."""
    from bayesdl.fits.rebuild import run_registry

    return run_registry(Path(run), _registry(), plugins)


_PLUGIN_HELP = "the plugin file of the run's model (a run folder's plugins are not imported)"
_CODE_HELP = (
    "a code file the run needs (its model, guide or --net file), named again: imported "
    "although you did not fit it yourself (repeatable; a run folder's code is never imported "
    "because the folder names it)"
)


def _code_options(p: Parser) -> None:
    p.add_argument("--plugin", action="append", default=[], metavar="FILE", help=_PLUGIN_HELP)
    p.add_argument("--model-file", action="append", default=[], metavar="FILE", help=_CODE_HELP)


def _named(args):
    """The code files the user names for this command (``--model-file``)."""
    from bayesdl.workflows import trust

    return trust.named(args.model_file)


def _seed_option(p: Parser) -> None:
    from bayesdl.workflows.options import seed

    p.add_argument(
        "--seed",
        type=seed,
        default=None,
        help="seed of the posterior draws, 0 to 2**32-1 (default: the run's --seed)",
    )


def _model_and_rest(argv: list[str], what: str):
    from bayesdl.workflows.user_code import load_plugins, plugin_paths

    load_plugins(plugin_paths(argv))  # before the name is looked up: `fit NAME --plugin FILE`
    if not argv or argv[0].startswith("-"):
        if argv and argv[0] in ("-h", "--help"):
            models = ", ".join(sorted(_registry()))
            if what == "fit":
                from bayesdl.workflows.options import common_fit_parser

                p = common_fit_parser(f"{PROG} fit MODEL", models)
                _run_options(p, "fit")
                p.print_help()
            else:
                print(f"usage: {PROG} {what} MODEL [options]; models: {models}")
            raise SystemExit(0)
        raise UserError(f"{what} needs a MODEL: one of {', '.join(sorted(_registry()))}")
    return _lookup(argv[0]), argv[1:]


def cmd_list(argv: list[str]) -> int:
    p = Parser(prog=f"{PROG} list", description="registered models")
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE",
        help="also list the @register models of this Python file (repeatable)",
    )
    from bayesdl.workflows.user_code import load_plugins

    registry = _registry()
    load_plugins(p.parse_args(argv).plugin)
    width = max(len(n) for n in registry)
    for name in sorted(registry):
        w = registry[name]
        print(f"{name:<{width}}  {w.latent:<10}  {w.default_estimator:<8}  {w.description}")
    return 0


def _run_options(p: Parser, what: str) -> None:
    g = p.add_argument_group("run")
    g.add_argument(
        "--out",
        default=None,
        help="run folder (summary, metrics, checkpoint, figures); default runs/MODEL-TIMESTAMP",
    )
    g.add_argument("--resume", action="store_true", help=f"continue the {what} in --out")
    g.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def default_out(name: str) -> Path:
    """``runs/MODEL-YYYYmmdd-HHMMSS`` (a file model ``dir/my_model.py:model`` as
    ``my_model-model``), ``-2``, ``-3``... added if it exists."""
    import re
    import time

    if ":" in name:
        path, _, fn = name.rpartition(":")
        name = f"{Path(path).stem}-{fn}"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "run"
    base = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, i = base, 1
    while out.exists():
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    return out


def cmd_fit(argv: list[str]) -> int:
    workflow, rest = _model_and_rest(argv, "fit")
    p = fit_parser(workflow, f"{PROG} fit {workflow.name}")
    _run_options(p, "run")
    args = p.parse_args(rest)
    from bayesdl.fits.run import run_fit

    if args.out is None:
        if args.resume:
            raise UserError("--resume needs --out: the run folder to continue")
        if os.environ.get("WORLD_SIZE", "1") != "1":  # torchrun: every process, one folder
            raise UserError("under torchrun give --out: every process must name the same folder")
        args.out = default_out(argv[0])
        print(f"run folder: {args.out} (choose it with --out)")
    out, resume, overwrite, quiet = Path(args.out), args.resume, args.overwrite, args.quiet
    options = from_namespace(workflow, args)  # --out, --resume ... are not options of the fit
    try:
        summary = run_fit(
            workflow, options, out, resume=resume, overwrite=overwrite, progress=not quiet
        )
    except KeyboardInterrupt:  # outside the loop (start-up, data, NUTS, the summary)
        from bayesdl.inference.signals import interrupted_line
        from bayesdl.inference.train import CHECKPOINT

        sys.stderr.write(f"{PROG}: {interrupted_line(out, CHECKPOINT)}\n")
        return 130
    from bayesdl.fits.checks import verdict_line
    from bayesdl.inference import distributed

    if not distributed.is_main():  # under torchrun rank 0 reports
        return 0
    if summary.get("method") == "nuts":
        print(
            f"{workflow.name}: NUTS, {summary['chains']} chain(s) x {summary['samples']} draws, "
            f"{summary['divergences']} divergences, R-hat <= "
            f"{summary['convergence']['max_r_hat']:.3f}, {summary['wall_seconds']:.1f} s; "
            f"{verdict_line(summary)} -> {out / 'summary.json'}"
        )
        return 130 if summary.get("interrupted") else 0
    print(
        f"{workflow.name}: {summary['steps']} steps, final ELBO {summary['final_elbo']:.4f}, "
        f"{summary['wall_seconds']:.1f} s on {summary['device']}; {verdict_line(summary)} "
        f"-> {out / 'summary.json'}"
    )
    note = ((summary.get("checks") or {}).get("k_hat") or {}).get("corrected", {}).get("note")
    if note:
        print(note)
    return 0


def _print_table(result: dict, prefix: str = "") -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            _print_table(value, f"{prefix}{key}.")
        elif isinstance(value, list) and len(value) > 12:
            print(f"  {prefix + key:<40} [{len(value)} values]")
        else:
            v = f"{value:.6g}" if isinstance(value, float) else value
            print(f"  {prefix + key:<40} {v}")


def cmd_evaluate(argv: list[str]) -> int:
    p = Parser(prog=f"{PROG} evaluate", description="held-out metrics of a fitted run")
    p.add_argument("run", help="run folder made by `bayesdl fit`")
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default: the run's)")
    _code_options(p)
    p.add_argument(
        "--iw-samples",
        type=int,
        default=None,
        help="importance samples per example for log p(x) (generative models)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="posterior samples M of the predictive (default: the run's --samples)",
    )
    _seed_option(p)
    args = p.parse_args(argv)
    from bayesdl.fits.run import evaluate_run

    overrides = {"iw_samples": args.iw_samples} if args.iw_samples is not None else {}
    if args.samples is not None:
        overrides["samples"] = args.samples
    with _named(args):
        registry = _run_registry(args.run, args.plugin)
        result = evaluate_run(Path(args.run), registry, args.device, overrides, args.seed)
    print(f"evaluation of {args.run}:")
    _print_table(result)
    print(f"-> {Path(args.run) / 'evaluation.json'}")
    return 0


def cmd_predict(argv: list[str]) -> int:
    p = Parser(prog=f"{PROG} predict", description="posterior predictive for new inputs")
    p.add_argument("run", help="run folder made by `bayesdl fit`")
    p.add_argument("--input", required=True, help="inputs (.npz with `x`, .csv or .npy)")
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write the predictions here: FILE.npz (one array per entry, 'y.mean', "
        "'y.std', ...) or any other name as JSON; default: print JSON",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default: the run's)")
    _code_options(p)
    _seed_option(p)
    args = p.parse_args(argv)
    from bayesdl.fits import outputs
    from bayesdl.fits.folder import json_text
    from bayesdl.fits.run import predict_run

    if args.output:  # before any work
        outputs.check_file(args.output, args.overwrite, "--output")
    with _named(args):
        registry = _run_registry(args.run, args.plugin)
        result = predict_run(Path(args.run), registry, Path(args.input), args.device, args.seed)
    if args.output:
        npz = Path(args.output).suffix.lower() == ".npz"
        content = outputs.npz_writer(result) if npz else json_text(result)
        outputs.write(args.output, content, overwrite=args.overwrite, flag="--output")
        print(f"predictions -> {args.output}")
    else:
        print(json.dumps(result, indent=1))
    return 0


def cmd_sample(argv: list[str]) -> int:
    p = Parser(prog=f"{PROG} sample", description="draw from a fitted generative model")
    p.add_argument("run", help="run folder made by `bayesdl fit`")
    p.add_argument("--out", default=None, help="folder for the images (default: the run folder)")
    p.add_argument(
        "--overwrite", action="store_true", help="write into an --out folder that holds files"
    )
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default: the run's)")
    _code_options(p)
    _seed_option(p)
    args = p.parse_args(argv)
    from bayesdl.fits.run import sample_run

    with _named(args):
        result = sample_run(
            Path(args.run),
            _run_registry(args.run, args.plugin),
            None if args.out is None else Path(args.out),
            args.device,
            args.seed,
            overwrite=args.overwrite,
        )
    print(f"samples of {args.run}:")
    _print_table(result)
    return 0


def cmd_tour(argv: list[str]) -> int:
    p = Parser(prog=f"{PROG} tour", description="fit every model on bundled data, one HTML report")
    p.add_argument("--out", required=True, help="report folder (index.html and one folder per run)")
    p.add_argument("--only", help="comma-separated models to include (default all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the runs of an earlier tour in --out"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the tour's models are small, and more threads "
        "spin-wait against other jobs on a busy machine)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        help="sections fitted at once, each in its own process of --threads threads (default: "
        "one per core, at most 4; 1: all in this process); the page is the same for any --jobs",
    )
    args = p.parse_args(argv)
    from bayesdl.inference.devices import check_threads
    from bayesdl.reports.tour_jobs import default_jobs

    check_threads(args.threads)
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    import torch

    from bayesdl.reports import tour

    torch.set_num_threads(args.threads)
    registry = _registry()
    names = tour.model_names(registry, args.only)
    for n in names:
        if n not in registry:
            _lookup(n)  # the "unknown model" error
            raise UserError(f"tour fits registered models only, not {n!r}: use `fit {n}`")
    out = Path(args.out)
    tour.run(
        registry,
        names,
        out,
        whole=not args.only,
        overwrite=args.overwrite,
        progress=not args.quiet,
        jobs=default_jobs() if args.jobs is None else args.jobs,
        threads=args.threads,
    )
    print(f"tour: {len(names)} models -> {out / 'index.html'}")
    return 0


def cmd_compare(argv: list[str]) -> int:
    p = Parser(
        prog=f"{PROG} compare",
        description="how far posterior A is from the reference B, per latent site: the "
        "difference of means in B's sd and the ratio of sds (flagged past 0.3 sd or outside "
        "[0.7, 1.3]); a table and compare.png",
    )
    p.add_argument("run_a", help="run folder A (e.g. a VI fit)")
    p.add_argument("run_b", help="run folder B, the reference (e.g. --inference nuts)")
    p.add_argument("--json", metavar="FILE", help="also write {site: {mean_diff_sd, ...}} here")
    p.add_argument("--out", default=".", help="folder of compare.png (default: here)")
    p.add_argument("--samples", type=int, default=2000, help="draws of a VI run (default 2000)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing compare.png or --json file"
    )
    _code_options(p)
    _seed_option(p)
    args = p.parse_args(argv)
    from bayesdl.api import compare
    from bayesdl.fits import outputs
    from bayesdl.fits.folder import json_text
    from bayesdl.inference import files
    from bayesdl.reports.compare import FIGURE

    if args.samples < 2:
        raise UserError("--samples must be >= 2")
    out = Path(args.out)
    if files.entry(out, "--out") is not None and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    outputs.check_file(out / FIGURE, args.overwrite, "--out")  # before any work
    if args.json:
        outputs.check_file(args.json, args.overwrite, "--json")
    result = compare(
        args.run_a,
        args.run_b,
        num_samples=args.samples,
        seed=args.seed or 0,
        plugins=args.plugin,
        model_files=args.model_file,
    )
    print(result.table())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot make {out}: {e.strerror or e}") from None
    with outputs.not_busy(out):
        print(f"figure -> {result.figure(out / FIGURE, overwrite=args.overwrite)}")
    if args.json:
        text = json_text(result.to_json())
        outputs.write(args.json, text, overwrite=args.overwrite, flag="--json")
        print(f"json -> {args.json}")
    return 0


def cmd_gradient_variance(argv: list[str]) -> int:
    workflow, rest = _model_and_rest(argv, "gradient-variance")
    p = fit_parser(workflow, f"{PROG} gradient-variance {workflow.name}")
    p.add_argument("--draws", type=int, default=1000, help="gradient estimates per estimator")
    p.add_argument(
        "--compare",
        default="reparam,score",
        help="comma-separated estimators to compare (default reparam,score)",
    )
    p.add_argument(
        "--init-steps",
        type=int,
        default=0,
        help="fit this many steps first (default 0: at initialisation)",
    )
    args = p.parse_args(rest)
    from bayesdl.inference.diagnostics import gradient_variance_table

    if args.draws < 2:
        raise UserError("--draws must be >= 2")
    from bayesdl.fits.base import build
    from bayesdl.workflows.base import start

    problem = build(start(workflow, from_namespace(workflow, args)))
    table = gradient_variance_table(problem, args, [e.strip() for e in args.compare.split(",")])
    print(f"{'estimator':<10} {'parameter':<24} {'mean':>12} {'variance':>12} {'std err':>10}")
    for row in table:
        print(
            f"{row['estimator']:<10} {row['param']:<24} {row['mean']:>12.5g} "
            f"{row['variance']:>12.5g} {row['stderr']:>10.3g}"
        )
    return 0


def cmd_sbc(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(
            f"usage: {PROG} sbc MODEL [options] --out DIR; MODEL: FILE.py:function or a "
            f"registered user model (--plugin FILE); {PROG} sbc MODEL --help lists the options"
        )
        return 0
    workflow, rest = _model_and_rest(argv, "sbc")
    from bayesdl.calibration import SBC_STEPS, SBCConfig, run_sbc
    from bayesdl.workflows.options import add_options

    p = fit_parser(workflow, f"{PROG} sbc {workflow.name}")
    p.description = (
        "simulation-based calibration: fit R data sets drawn from the model, rank the true "
        "latents among L posterior draws, test the ranks for uniformity"
    )
    p.set_defaults(steps=SBC_STEPS)  # a fixed count per replication unless --steps says
    add_options(p.add_argument_group("simulation-based calibration"), SBCConfig)
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, help="folder of sbc.json and sbc_ranks.png")
    g.add_argument("--resume", action="store_true", help="continue the SBC in --out")
    g.add_argument("--overwrite", action="store_true", help="replace an SBC already in --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(rest)

    config = SBCConfig(args.replications, args.num_draws)
    out, resume, overwrite, quiet = Path(args.out), args.resume, args.overwrite, args.quiet
    options = from_namespace(workflow, args)
    result = run_sbc(
        workflow, options, config, out, overwrite=overwrite, resume=resume, progress=not quiet
    )
    print(result.table())
    print(f"-> {out / 'sbc.json'}, {out / 'sbc_ranks.png'}")
    return 130 if result.interrupted else 0


COMMANDS = {
    "list": cmd_list,
    "fit": cmd_fit,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "sample": cmd_sample,
    "tour": cmd_tour,
    "compare": cmd_compare,
    "gradient-variance": cmd_gradient_variance,
    "sbc": cmd_sbc,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bayesdl`` command."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.getLogger("pyro").setLevel(logging.WARNING)  # "Guessed max_plate_nesting" etc.
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        sys.stderr.write(
            f"{PROG}: error: unknown command {argv[0]!r}; choose {', '.join(COMMANDS)}\n"
        )
        return 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except UserError as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 2
    except RuntimeError as e:  # a collective failed: another torchrun process died or timed out
        from bayesdl.inference import distributed

        if not distributed.is_peer_failure(e):
            raise
        distributed.abandon()
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        sys.stderr.write(
            f"{PROG}: error: data-parallel run stopped, another process failed or timed out "
            f"({first}); rank 0's last checkpoint is kept, fix the cause and rerun with --resume\n"
        )
        return 1
    except Interrupted as e:
        where = f"; checkpoint saved to {e.path}" if e.path else ""
        sys.stderr.write(
            f"{PROG}: interrupted at step {e.step}{where}; "
            "rerun the command with --resume to continue\n"
        )
        return 130
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (which saves and resumes)
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
