"""The file-safety audit of issue 22: shared run folders, planted links, special files, wrong
JSON types, broken checkpoints and npz files, outputs replaced, against the command line and
the Python API; each case classified ``clean``, ``acceptable`` or ``defect``.

    OMP_NUM_THREADS=1 python benchmarks/file_safety_audit.py [--only WORD] [--json FILE]
    python benchmarks/file_safety_audit.py --table FILE.json [MORE.json ...]

To audit another checkout (e.g. the commit before a change), put a folder holding it as
``bayesdl/`` first on the path: ``PYTHONPATH=/tmp/base python benchmarks/file_safety_audit.py``.

Every case runs in a child forked from this process (bayesdl and torch imported once), in a
fresh folder (``--keep`` keeps them), with its own ``XDG_STATE_HOME`` copied from the
templates' (the runs the templates fitted, as the user). The templates are a coin run, a user
model run (``FILE.py:model``), a NUTS run, a ``bnn --net`` run and a run fitted from Python.

A case is a **defect** when the command hangs (60 s), prints a traceback, exits with a status
other than 0 or 2, imports a planted file (its marker appears), changes anything outside the
folders it may write (victims, sentinels, existing outputs), or, for the cases marked silent
(NaN, infinite or complex parameters or draws, draws of sites the model lacks, a negative
step), ends with status 0: a wrong answer given as right. Otherwise it is **clean** when it
does what the case expects (``refuse``: status 2 and one ``error:`` line; ``ok``: status 0) and
**acceptable** when it does something else harmless (refuses what could work, or works on what
could be refused, or adds a warning line)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from file_safety_cases import Box, make_templates  # noqa: E402
from file_safety_groups import CASES  # noqa: E402

import bayesdl  # noqa: E402
import bayesdl.cli as cli  # noqa: E402

torch.set_num_threads(1)
TIMEOUT = 60.0


def _child(box: Box, action, state: Path) -> None:
    """Run one case's command in this (forked) process; never returns."""
    code = 1
    try:
        os.chdir(box.cwd)
        os.environ["XDG_STATE_HOME"] = str(state)
        out = os.open(box.root / "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        err = os.open(box.root / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        if isinstance(action, list):
            code = cli.main([str(a) for a in action])
        else:
            try:
                action()
                code = 0
            except bayesdl.UserError as e:
                sys.stderr.write(f"error: {e}\n")
                code = 2
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - what a user would see
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_case(case, templates: Path, work: Path) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"{case.name}-", dir=work))
    box = Box(root, templates)
    shutil.copytree(templates / "state", box.state)
    try:
        action = case.setup(box)
    except Exception as e:  # noqa: BLE001 - a case that cannot be set up here
        return {"case": case.name, "group": case.group, "verdict": "skipped", "why": repr(e)}
    before = box.snapshot()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _child(box, action, box.state)
    status, hung = None, False
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(raw)
        elif time.perf_counter() - t0 > case.timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status, hung = -9, True
        else:
            time.sleep(0.05)
    box.release()
    seconds = time.perf_counter() - t0
    stderr = (root / "stderr").read_text(errors="replace")
    stdout = (root / "stdout").read_text(errors="replace")
    after = box.snapshot()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    problems = []
    if hung:
        problems.append("hangs")
    if "Traceback" in stderr or "Traceback" in stdout:
        problems.append("traceback")
    if not hung and status not in (0, 2):
        problems.append(f"exit {status}")
    if box.marker.exists():
        problems.append("imported a planted file")
    if changed:
        problems.append("changed outside: " + ", ".join(changed[:3]))
    problems += [h for h in (check() for check in box.checks) if h]
    if case.silent and status == 0:
        problems.append("a silently wrong answer (status 0)")
    one_line = len(lines) == 1 and "error:" in lines[0]
    if problems:
        verdict = "defect"
    elif case.expect == "refuse" and status == 2 and one_line:
        verdict = "clean"
    elif case.expect == "ok" and status == 0:
        verdict = "clean"
    else:
        verdict = "acceptable"
    result = {
        "case": case.name,
        "group": case.group,
        "expect": case.expect,
        "verdict": verdict,
        "status": status,
        "seconds": round(seconds, 1),
        "problems": problems,
        "last_line": lines[-1][:300] if lines else "",
    }
    return result


def table(results: list[dict]) -> None:
    """The counts of verdicts, in all and per group."""
    counts = Counter(r["verdict"] for r in results)
    groups = Counter((r["group"], r["verdict"]) for r in results)
    print(f"\n{len(results)} cases: " + ", ".join(f"{counts[k]} {k}" for k in sorted(counts)))
    for g in sorted({r["group"] for r in results}):
        row = ", ".join(f"{groups[g, k]} {k}" for k in ("clean", "acceptable", "defect"))
        print(f"  {g:<28} {row}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="cases whose name contains this word")
    p.add_argument("--json", help="write every case's result here")
    p.add_argument("--keep", action="store_true", help="keep the cases' folders")
    p.add_argument(
        "--table",
        nargs="+",
        metavar="JSON",
        help="no cases: the table of results files (a case in a later file replaces it)",
    )
    args = p.parse_args()
    if args.table:
        merged = {}
        for f in args.table:
            merged.update({r["case"]: r for r in json.loads(Path(f).read_text())})
        table(list(merged.values()))
        return
    work = Path(tempfile.mkdtemp(prefix="bayesdl-audit-"))
    print(f"bayesdl from {Path(bayesdl.__file__).parent}; folders in {work}", file=sys.stderr)
    templates = work / "templates"
    make_templates(templates)
    results = []
    for case in CASES:
        if args.only and args.only not in case.name:
            continue
        r = run_case(case, templates, work)
        results.append(r)
        print(
            f"{r['verdict']:<10} {r['case']:<40} {r.get('status', '')!s:>4} "
            f"{'; '.join(r.get('problems', [])) or r.get('last_line', r.get('why', ''))[:110]}",
            flush=True,
        )
    table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
