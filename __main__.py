"""``python -m bayesdl`` and the ``bayesdl`` console script: the command line as a process.

:func:`main` is the entry point of both (``pyproject.toml``'s ``[project.scripts]``), so the two
behave alike. It owns what only a process has: SIGTERM raises ``KeyboardInterrupt`` from the
first line on, as SIGINT does (a fit then saves what it can and ends with status 130 and one
line, never killed by the signal with nothing saved); Ctrl-C while torch and Pyro load; a
reader that left the pipe (``bayesdl predict ... | head``: nothing more is said); a standard
output that cannot be written (``> /dev/full``: one line, status 2); and the exit itself.
"""

import errno
import os
import signal
import sys

PROG = "bayesdl"
#: a write to standard output that failed for want of room or of a device (not a bug's OSError)
_OUTPUT_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EBADF}


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


#: a SIGINT or SIGTERM has arrived (an import it interrupts may fail with another error)
_signalled = [False]


def _terminate(signum, frame):  # noqa: ARG001
    _signalled[0] = True
    raise KeyboardInterrupt


def _interrupted_or_raise() -> None:
    """Inside ``except``: after a signal, the error is the interruption (a signal inside a lazy
    import, sklearn's or scipy's, can surface as that import's error); else re-raise it."""
    if not _signalled[0]:
        raise  # noqa: PLE0704 - called from an except block
    sys.stderr.write(f"{PROG}: interrupted\n")
    _exit(130)


def _drop_stdout() -> None:
    """Send what standard output still buffers to /dev/null (it cannot be written)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main() -> None:
    """Run ``bayesdl ARGS`` (``sys.argv``) and end the process with its status."""
    try:
        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, _terminate)  # as Python's own, and remembered
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        from bayesdl.cli import main as cli_main
    except BaseException as e:  # Ctrl-C (or SIGTERM) while torch and Pyro load
        # a signal inside a module's import can surface as that import's error (numpy
        # half-imported: "has no attribute ..."): after a signal, any failure here is it
        if not (isinstance(e, KeyboardInterrupt) or _signalled[0]):
            raise
        sys.stderr.write(f"{PROG}: interrupted while starting; nothing was saved\n")
        _exit(130)
    if _signalled[0]:  # the KeyboardInterrupt was swallowed inside an import: still a stop
        sys.stderr.write(f"{PROG}: interrupted while starting; nothing was saved\n")
        _exit(130)
    try:
        code = cli_main()
        sys.stdout.flush()
    except KeyboardInterrupt:  # a second signal while the first was being reported
        sys.stderr.write(f"{PROG}: interrupted\n")
        _exit(130)
    except BrokenPipeError:  # `bayesdl predict ... | head`: the reader left; say nothing more
        _drop_stdout()
        _exit(1)
    except OSError as e:
        if e.filename is not None or e.errno not in _OUTPUT_ERRORS:
            _interrupted_or_raise()
        _drop_stdout()
        sys.stderr.write(f"{PROG}: error: cannot write the output: {e.strerror or e}\n")
        _exit(2)
    except Exception:  # noqa: BLE001
        _interrupted_or_raise()
    dist = sys.modules.get("bayesdl.inference.distributed")
    if code == 130 or (dist is not None and dist.abandoned()):  # Ctrl-C, or a peer died: reported
        _exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
