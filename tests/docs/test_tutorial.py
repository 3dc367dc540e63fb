"""docs/tutorial.md runs: its file block is written, its Python blocks run as one script, then
its shell commands run, in a fresh folder."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT

TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text()


@pytest.mark.slow  # over 45 s on 2 shared cores: run with -m slow
def test_tutorial_runs_top_to_bottom(tmp_path):
    files = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", TUTORIAL, re.S)
    assert files, "the tutorial names its model file"
    for name, body in files:
        (tmp_path / name).write_text(body)
    file_bodies = {body for _, body in files}
    blocks = [b for b in re.findall(r"```python\n(.*?)```", TUTORIAL, re.S) if b not in file_bodies]
    script = "\n".join(blocks)
    (tmp_path / "tutorial.py").write_text(script)
    proc = subprocess.run(
        [sys.executable, "tutorial.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for block in re.findall(r"```bash\n(.*?)```", TUTORIAL, re.S):
        for line in block.strip().splitlines():
            argv = shlex.split(line)
            assert argv[0] == "bayesdl"
            if argv[1] == "fit":
                argv += ["--quiet"]
            cmd = [sys.executable, "-m", "bayesdl", *argv[1:]]
            out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, (line, out.stderr[-2000:])
