"""``python -m bayesdl``: the command line."""

import os
import sys


def _exit(code: int) -> None:
    """End with ``code`` now, streams flushed. (A KeyboardInterrupt that arrived inside an
    exec(), as dataclasses and torch's lazy imports run, makes CPython end the process by
    SIGINT at exit, whatever the status: ``sys.exit(130)`` could end as -2.)"""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


try:
    from bayesdl.cli import main
except KeyboardInterrupt:  # Ctrl-C while torch and Pyro load
    sys.stderr.write("bayesdl: interrupted\n")
    _exit(130)

try:
    code = main()
except BrokenPipeError:  # `bayesdl predict ... | head`: the reader left; say nothing more
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)
dist = sys.modules.get("bayesdl.inference.distributed")
if code == 130 or (dist is not None and dist.abandoned()):  # Ctrl-C, or a peer died: reported
    _exit(code)
sys.exit(code)
