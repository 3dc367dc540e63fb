"""Issue 22, property-based: whatever a shared run folder holds, ``evaluate``, ``predict``,
``fit --resume`` and :func:`bayesdl.load` end with status 0 or 2 (one ``bayesdl: error:``
line; from Python a :class:`bayesdl.UserError`), never a traceback, write nothing outside the
folder (a sentinel tree keeps its contents and mtimes) and import no code (a planted
``evil.py``, which some configs name in every way a path can be written, never runs).

Generated: ``config.json``, ``summary.json`` and ``metrics.jsonl`` with values of any JSON
type put anywhere, keys deleted, documents replaced, bytes truncated or garbled;
``checkpoint.pt`` with entries replaced by tensors of any shape and dtype (NaN, inf), strings,
numbers, lists, or truncated; ``draws.npz`` with arrays of other shapes, dtypes, NaN, extra or
missing members, a text member, truncated; and any run file replaced by a link to a sentinel
file, a link to ``/dev/zero``, a dangling link, a link loop, a FIFO or a folder. Commands run
in this process (:func:`bayesdl.cli.main`).

More examples: ``BAYESDL_PROPERTY_EXAMPLES=200 pytest tests/test_run_folder_properties.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from folder_kit import EVIL, copy, tree
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bayesdl
import bayesdl.cli as cli

EXAMPLES = int(os.environ.get("BAYESDL_PROPERTY_EXAMPLES", "15"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HANG_GUARD = 600  # seconds: a command that blocks (a FIFO opened for reading) fails, not hangs
COMMANDS = ["evaluate", "predict", "load", "resume"]
TEMPLATES = ("coin", "user", "nuts")


@pytest.fixture
def t(run_templates) -> dict[str, Path]:
    """The template runs (``conftest.run_templates``)."""
    return run_templates


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- the sandbox


@contextlib.contextmanager
def sandbox(t, template: str) -> Iterator[tuple[Path, Path]]:
    """``(root, run)``: ``root/run`` a copy of the template run (the only folder a command may
    write), ``root/sentinel`` files that must not change, ``run/evil.py`` planted code."""
    root = Path(tempfile.mkdtemp(prefix="bayesdl-folder-prop-"))
    old = os.getcwd()
    try:
        run = copy(t[template], root / "run")
        (root / "sentinel").mkdir()
        (root / "sentinel" / "keep.txt").write_text("untouched\n")
        (run / "evil.py").write_text(EVIL.format(marker=str(root / "marker")) + "def model(): 0\n")
        os.chdir(root)
        yield root, run
    finally:
        os.chdir(old)
        shutil.rmtree(root, ignore_errors=True)


def outside(root: Path, t) -> dict:
    """What must not change: the sandbox but its run folder, the templates."""
    keep = {k: v for k, v in tree(root).items() if not k.startswith(str(root / "run"))}
    return keep | tree(t["root"])


class Hang(Exception):
    """The command blocked past :data:`HANG_GUARD`."""


def _alarm(signum, frame):
    raise Hang()


def command(capsys, t, template: str, run: Path, which: str) -> int:
    """One command on the run folder: status 0 or 2, no traceback, one error line for 2."""
    capsys.readouterr()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_GUARD)
    try:
        if which == "load":
            try:
                post = bayesdl.load(run)
                print(post)
                post.sample(5)
                code = 0
            except bayesdl.UserError as e:
                assert "\n" not in str(e), str(e)
                code = 2
        else:
            code = cli.main([str(a) for a in argv(t, template, run, which)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out, err = capsys.readouterr()
    assert code in (0, 2), (which, code, err)
    assert "Traceback" not in err + out, (which, err)
    if code == 2 and which != "load":
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines and lines[-1].startswith("bayesdl: error: "), err
    event(f"{which}: exit {code}")
    return code


def argv(t, template: str, run: Path, which: str) -> list:
    data = t["root"] / "data"
    if which == "evaluate":
        return ["evaluate", run]
    if which == "predict":
        return [
            "predict",
            run,
            "--input",
            data / ("flips.npz" if template == "coin" else "new.npz"),
        ]
    model = ["coin", "--heads", 3, "--tails", 1]
    if template != "coin":
        model = [f"{t['root'] / 'code' / 'gp.py'}:model", "--data", data / "counts.npz"]
    return ["fit", *model, "--steps", 25, "--quiet", "--resume", "--out", run]


def check(capsys, t, template: str, root: Path, run: Path, which: str) -> None:
    before = outside(root, t)
    command(capsys, t, template, run, which)
    assert outside(root, t) == before, "a command wrote outside its run folder"
    assert not (root / "marker").exists(), "a command imported code the folder named"


# ----------------------------------------------------------------------------- JSON

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "auto", "inf", "nan", "cpu", "beta", "auto-normal", "digits"]),
    st.text(max_size=8),
)
JSON = st.recursive(
    LEAVES,
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=8,
)
CODE_PATHS = ["{run}/evil.py", "run/evil.py", "/proc/self/cwd/run/evil.py", "evil.py"]


@st.composite
def json_mutation(draw, doc: object, run: Path) -> bytes:
    """``doc`` (a config or summary) changed as a careless user or an attacker might."""
    kind = draw(st.sampled_from(["value", "value", "arg", "arg", "delete", "code", "replace"]))
    doc = json.loads(json.dumps(doc))
    if kind == "replace":
        doc = draw(JSON)
    elif isinstance(doc, dict) and doc:
        target = (
            doc["args"] if kind in ("arg", "code") and isinstance(doc.get("args"), dict) else doc
        )
        key = draw(st.sampled_from(sorted(target))) if target else "x"
        if kind == "delete":
            target.pop(key, None)
        elif kind == "code":  # name the planted file as code, with its sha256
            path = draw(st.sampled_from(CODE_PATHS)).format(run=run)
            option = draw(st.sampled_from(["model_file", "guide", "net", "plugin"]))
            target[option] = {"guide": f"{path}:guide", "net": f"{path}:make_net"}.get(
                option, [path] if option == "plugin" else path
            )
            doc["model_file"] = {"path": path, "sha256": "0" * 64}
        else:
            target[key] = draw(JSON)
    text = json.dumps(doc).encode()
    cut = draw(st.sampled_from(["none"] * 6 + ["truncate", "garbage", "nest"]))
    if cut == "truncate":
        text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
    elif cut == "garbage":
        text = draw(st.binary(max_size=40)) + text
    elif cut == "nest":
        text = b"[" * 5000 + text + b"]" * 5000
    return text


@SETTINGS
@given(data=st.data())
def test_mutated_json_files(capsys, t, data):
    template = data.draw(st.sampled_from(TEMPLATES))
    name = data.draw(
        st.sampled_from(["config.json", "config.json", "summary.json", "metrics.jsonl"])
    )
    which = data.draw(st.sampled_from(COMMANDS))
    with sandbox(t, template) as (root, run):
        path = run / name
        if name == "metrics.jsonl":
            lines = data.draw(st.lists(JSON.map(json.dumps) | st.text(max_size=20), max_size=4))
            keep = data.draw(st.booleans())
            text = (path.read_text() if keep else "") + "".join(x + "\n" for x in lines)
            path.write_text(text)
        else:
            path.write_bytes(data.draw(json_mutation(json.loads(path.read_text()), run)))
        check(capsys, t, template, root, run, which)


# ----------------------------------------------------------------------------- binary files

# hypothesis' default elements of a float dtype include NaN and infinities
TENSORS = st.builds(
    lambda a: torch.from_numpy(np.ascontiguousarray(a)),
    hnp.arrays(
        st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.complex64]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    ),
)
CHECKPOINT_VALUES = st.one_of(TENSORS, LEAVES, st.lists(LEAVES, max_size=3), st.just({}))


def _entries(state: dict, prefix=()) -> list[tuple]:
    out = []
    for k, v in state.items():
        out.append((*prefix, k))
        if isinstance(v, dict) and len(prefix) < 3:
            out += _entries(v, (*prefix, k))
    return out


def mutate_checkpoint(data, path: Path) -> None:
    kind = data.draw(st.sampled_from(["value", "value", "value", "delete", "truncate", "garbage"]))
    raw = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
        return
    if kind == "garbage":
        path.write_bytes(data.draw(st.binary(max_size=64)))
        return
    state = torch.load(path, weights_only=True)
    where = data.draw(st.sampled_from(_entries(state)))
    parent = state
    for k in where[:-1]:
        parent = parent[k]
    if kind == "delete":
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(CHECKPOINT_VALUES)
    torch.save(state, path)


def mutate_draws(data, path: Path) -> None:
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    kind = data.draw(st.sampled_from(["array", "array", "drop", "add", "text", "truncate"]))
    if kind == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
        return
    if kind == "array":
        key = data.draw(st.sampled_from(sorted(arrays)))
        arrays[key] = data.draw(TENSORS).numpy()
    elif kind == "drop":
        arrays.pop(data.draw(st.sampled_from(sorted(arrays))))
    elif kind == "add":
        arrays[data.draw(st.sampled_from(["other", "obs", "rate2"]))] = np.ones((1, 30))
    np.savez(path, **arrays)
    if kind == "text":
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(data.draw(st.sampled_from(["notes.txt", "x.npy.bak", "dir/"])), "hello")


@SETTINGS
@given(data=st.data())
def test_mutated_checkpoints_and_draws(capsys, t, data):
    template = data.draw(st.sampled_from(TEMPLATES))
    which = data.draw(st.sampled_from(COMMANDS))
    with sandbox(t, template) as (root, run):
        if template == "nuts":
            mutate_draws(data, run / "draws.npz")
        else:
            mutate_checkpoint(data, run / "checkpoint.pt")
        check(capsys, t, template, root, run, which)


# ----------------------------------------------------------------------------- special files

RUN_FILES = [
    "config.json",
    "summary.json",
    "checkpoint.pt",
    "metrics.jsonl",
    "evaluation.json",
    "prototype.npz",
    "draws.npz",
    ".bayesdl.lock",
    "coin_posterior.png",
]


@SETTINGS
@given(data=st.data())
def test_special_files_in_place_of_run_files(capsys, t, data):
    template = data.draw(st.sampled_from(TEMPLATES))
    which = data.draw(st.sampled_from(COMMANDS))
    name = data.draw(st.sampled_from(RUN_FILES))
    special = data.draw(st.sampled_from(["sentinel", "zero", "dangling", "loop", "fifo", "dir"]))
    with sandbox(t, template) as (root, run):
        path = run / name
        if path.exists() or path.is_symlink():
            path.unlink()
        if special == "sentinel":
            path.symlink_to(root / "sentinel" / "keep.txt")
        elif special == "zero":
            path.symlink_to("/dev/zero")
        elif special == "dangling":
            path.symlink_to(root / "sentinel" / "created-through-a-link")
        elif special == "loop":
            path.symlink_to(path)
        elif special == "fifo":
            os.mkfifo(path)
        else:
            path.mkdir()
        check(capsys, t, template, root, run, which)
