"""Reading and writing files safely: the one place bayesdl opens a file it did not just make.

**Writing** (run folders, tour folders, output files): a file is written into a temporary file
of a random name created exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``) in the target's folder,
then renamed over the target (``replace=True``) or linked to it only if no such name exists yet
(``replace=False``). A target that is a symbolic link, a folder, a device or a pipe is refused:
nothing is ever written through a link or into a special file, and a rename replaces a name,
never the file a link points to. :func:`append_text` opens with ``O_APPEND | O_NOFOLLOW`` and
refuses anything but a regular file.

**Reading**: only regular files (a FIFO or ``/dev/zero`` would hang or never end), opened with
``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor, within a size limit; files
inside a run folder are opened with ``O_NOFOLLOW`` (``follow=False``: bayesdl never writes a
link into a run folder, so a link there was planted). JSON is parsed with its nesting bounded;
``.npz``/``.npy`` headers are checked against their sizes before numpy allocates anything.

Every failure is a one-line :class:`~bayesdl.inference.errors.UserError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bayesdl.inference.errors import UserError

MB = 1 << 20
#: config.json, summary.json, evaluation.json: far above what bayesdl writes (a few kB)
JSON_LIMIT = 64 * MB
#: metrics.jsonl: a million logged rows of a few hundred bytes
METRICS_LIMIT = 1024 * MB
#: the pickled (non-tensor) part of a checkpoint; its tensors are bounded by the file's size
PICKLE_LIMIT = 64 * MB
#: a model, guide or network file to import; a figure embedded in the tour's page
CODE_LIMIT = 16 * MB
FIGURE_LIMIT = 64 * MB
#: JSON nesting: bayesdl's files nest a few levels (json's own limit is Python's recursion)
JSON_DEPTH = 64

_TEMP = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{12}\.tmp$")


class Exists(UserError):
    """The target of a write with ``replace=False`` exists already."""


def _why(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a symbolic link (loop)"
    return e.strerror or str(e)


# ----------------------------------------------------------------------------- looking


def entry(path: str | Path, what: str = "file") -> os.stat_result | None:
    """``lstat`` of ``path`` (the link itself, not its target); ``None`` if nothing is there.
    An impossible path (a part over 255 bytes, a loop) is a :class:`UserError`."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise UserError(f"{what} {path}: {_why(e)}") from None


def is_dir(path: str | Path, what: str = "folder") -> bool:
    """Whether ``path`` is a folder (through links); an impossible path (a part over 255
    bytes, a loop) is a :class:`UserError` instead of an ``OSError``."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise UserError(f"{what} {path}: {_why(e)}") from None


def kind(st: os.stat_result) -> str:
    """``"a folder"``, ``"a symbolic link"``, ``"a pipe (FIFO)"``, ``"a device"``..."""
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file"


def check_regular(path: str | Path, what: str = "file", *, follow: bool = True) -> None:
    """Refuse ``path`` unless it is a regular file (through links when ``follow``): missing,
    a folder, a pipe, a device, a link loop or a name too long is a one-line UserError."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise UserError(f"{what} {path}: {_why(e)}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {path} is {kind(st)}, not a regular file")


def check_plain(path: str | Path, what: str = "file") -> None:
    """Refuse ``path`` if something other than a regular file is there (a link, a folder, a
    pipe...): what bayesdl may replace or read inside a folder it writes."""
    st = entry(path, what)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UserError(
            f"{what} {path} is {kind(st)}: bayesdl reads and writes only regular files there "
            "(never through a link); remove it or use another folder"
        )


# ----------------------------------------------------------------------------- reading


def open_regular(
    path: str | Path, what: str = "file", limit: int | None = None, *, follow: bool = False
) -> BinaryIO:
    """``path`` opened for reading as a binary file object, if it is a regular file of at most
    ``limit`` bytes (``O_NONBLOCK`` at open: a pipe does not block; ``O_NOFOLLOW`` unless
    ``follow``)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise UserError(
                f"{what} {path} is a symbolic link, which bayesdl does not follow in a run "
                "folder (it never writes one there); remove it or copy the file in"
            ) from None
        raise UserError(f"cannot read {what} {path}: {_why(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{what} {path} is {kind(st)}, not a regular file")
        if limit is not None and st.st_size > limit:
            raise UserError(
                f"{what} {path} is {st.st_size / MB:.0f} MB, more than the {limit // MB} MB "
                "bayesdl reads of such a file"
            )
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(
    path: str | Path, what: str = "file", limit: int | None = None, *, follow: bool = False
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (default
    :data:`JSON_LIMIT`; see :func:`open_regular`)."""
    limit = JSON_LIMIT if limit is None else limit
    with open_regular(path, what, limit, follow=follow) as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise UserError(f"cannot read {what} {path}: {_why(e)}") from None
    if len(data) > limit:  # it grew while being read
        raise UserError(f"{what} {path} is more than the {limit // MB} MB bayesdl reads")
    return data


def read_text(
    path: str | Path, what: str = "file", limit: int | None = None, *, follow: bool = False
) -> str:
    """A UTF-8 text file (see :func:`read_bytes`)."""
    try:
        return read_bytes(path, what, limit, follow=follow).decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def parse_json(text: str | bytes, where: str) -> Any:
    """``json.loads`` with nesting at most :data:`JSON_DEPTH` levels; NaN/Infinity literals are
    read as floats (Python's json writes them)."""
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if _depth(raw) > JSON_DEPTH:
        raise UserError(f"{where} nests JSON more than {JSON_DEPTH} levels deep")
    try:
        return json.loads(raw)
    except RecursionError:  # pragma: no cover - _depth prevents it
        raise UserError(f"{where} nests JSON too deeply") from None
    except ValueError as e:
        raise UserError(f"{where} is not valid JSON ({e})") from None


_TOKENS = re.compile(r'\\.|"|[\[\]{}]', re.S)


def _depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (an upper bound for invalid text)."""
    if text.count("[") + text.count("{") <= JSON_DEPTH:
        return 0
    depth = deepest = 0
    in_string = False
    for m in _TOKENS.finditer(text):
        t = m.group()
        if t == '"':
            in_string = not in_string
        elif in_string or t[0] == "\\":
            continue
        elif t in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > JSON_DEPTH:
                break
        else:
            depth -= 1
    return deepest


def read_json(
    path: str | Path, what: str = "file", limit: int | None = None, *, follow: bool = False
) -> Any:
    """A JSON file, bounded in size and nesting (types are the caller's to check)."""
    return parse_json(read_text(path, what, limit, follow=follow), str(path))


def read_lines(
    path: str | Path, what: str = "file", limit: int = METRICS_LIMIT, *, follow: bool = False
) -> Iterator[str]:
    """The lines of a text file (undecodable bytes replaced), read a line at a time."""
    with open_regular(path, what, limit, follow=follow) as f:
        for line in f:
            yield line.decode("utf-8", "replace").rstrip("\r\n")


# ----------------------------------------------------------------------------- numpy files


def load_npz(
    path: str | Path, what: str = "file", *, follow: bool = True, stored: bool = False
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``: every member a ``.npy`` whose header agrees with its size
    (a truncated or crafted file is refused before numpy allocates), numbers only (never
    unpickled); ``stored``: members uncompressed, as ``np.savez`` writes them (a run folder's
    files), so reading takes no more memory than the file's size."""
    with open_regular(path, what, follow=follow) as f:
        try:
            with zipfile.ZipFile(f) as z:
                for info in z.infolist():
                    _check_member(z, info, f"{what} {path}", stored)
            f.seek(0)
            with np.load(f, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except UserError:
            raise
        except MemoryError:
            raise UserError(f"{what} {path} holds arrays too large for this machine") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise UserError(f"cannot read {what} {path}: {_first(e)}") from None
        except NotImplementedError as e:  # a compression method zipfile does not know
            raise UserError(f"cannot read {what} {path}: {_first(e)}") from None


def _check_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, stored: bool) -> None:
    if not info.filename.endswith(".npy") or info.is_dir():
        raise UserError(
            f"{where} holds {info.filename!r}, which is not an array (.npy): an .npz of "
            "numpy arrays only (np.savez) is read"
        )
    if stored and info.compress_type != zipfile.ZIP_STORED:
        raise UserError(f"{where}: member {info.filename!r} is compressed; bayesdl wrote it not")
    with z.open(info) as m:
        header, shape, dtype = _npy_header(m, f"{where}, array {info.filename[:-4]!r}")
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if header + size != info.file_size:
        raise UserError(
            f"{where}, array {info.filename[:-4]!r}: its header says {size} bytes of "
            f"{dtype} {tuple(shape)}, the file holds {info.file_size - header} (truncated or "
            "not written by numpy)"
        )


def _npy_header(f, where: str) -> tuple[int, tuple, np.dtype]:
    """(header length, shape, dtype) of a ``.npy`` stream; object arrays refused."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        else:
            shape, _, dtype = fmt.read_array_header_2_0(f)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"{where} is not a numpy array file ({_first(e)})") from None
    if dtype.hasobject:
        raise UserError(f"{where} holds Python objects; save numbers only")
    return f.tell() if hasattr(f, "tell") else 0, shape, dtype


def load_npy(path: str | Path, what: str = "file", *, follow: bool = True) -> np.ndarray:
    """The array of a ``.npy`` file, its header checked against the file's size first."""
    with open_regular(path, what, follow=follow) as f:
        header, shape, dtype = _npy_header(f, f"{what} {path}")
        size = int(np.prod(shape, dtype=object)) * dtype.itemsize
        actual = os.fstat(f.fileno()).st_size - header
        if size != actual:
            raise UserError(
                f"{what} {path}: its header says {size} bytes of {dtype} {tuple(shape)}, "
                f"the file holds {actual} (truncated or not written by numpy)"
            )
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise UserError(f"cannot read {what} {path}: {_first(e)}") from None


def _first(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ----------------------------------------------------------------------------- writing


def _folder(path: Path, named: str) -> int:
    """A descriptor of the folder ``path`` is in (through links: the folder the user named)."""
    try:
        return os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise UserError(f"cannot write {named}: {_why(e)}") from None


def _target(dirfd: int, path: Path, replace: bool) -> None:
    """Refuse what is at ``path`` unless it is a regular file that may be replaced."""
    try:
        st = os.stat(path.name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as e:
        raise UserError(f"cannot write {path}: {_why(e)}") from None
    if stat.S_ISLNK(st.st_mode):
        raise UserError(
            f"{path} is a symbolic link: bayesdl writes no file through a link (remove the "
            "link, or write elsewhere)"
        )
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"cannot write {path}: it is {kind(st)}, not a regular file")
    if not replace:
        raise Exists(f"{path} already exists")


def write_with(
    path: str | Path,
    write: Callable[[BinaryIO], None],
    *,
    replace: bool = True,
    sync: bool = False,
    what: str = "",
) -> None:
    """Write ``path`` atomically by ``write(file)``: a fresh temporary file of a random name
    next to it, then renamed over it (``replace``) or linked to its name only if that name is
    free (not ``replace``: :class:`Exists` otherwise). ``sync``: fsync before the rename (a
    crash keeps the old file or the new one, never a torn one). ``what`` names the file in
    messages (``cannot write checkpoint PATH: ...``)."""
    path = Path(path)
    named = f"{what} {path}" if what else str(path)
    dirfd = _folder(path, named)
    tmp = f".{path.name}.{secrets.token_hex(6)}.tmp"
    made = False
    try:
        _target(dirfd, path, replace)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o666, dir_fd=dirfd)
        made = True
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        if replace:
            os.rename(tmp, path.name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        else:
            _link_new(dirfd, tmp, path)
        made = False
    except OSError as e:
        raise UserError(f"cannot write {named}: {_why(e)}") from None
    finally:
        if made:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dirfd)
        os.close(dirfd)


def _link_new(dirfd: int, tmp: str, path: Path) -> None:
    """Give the temporary file ``tmp`` the name ``path`` only if it is free (atomically, by a
    hard link; where links are not supported, by a check then a rename)."""
    try:
        os.link(tmp, path.name, src_dir_fd=dirfd, dst_dir_fd=dirfd, follow_symlinks=False)
    except FileExistsError:
        raise Exists(f"{path} already exists") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        _target(dirfd, path, replace=False)
        os.rename(tmp, path.name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        return
    os.unlink(tmp, dir_fd=dirfd)


def write_bytes(path: str | Path, data: bytes, *, replace: bool = True, sync: bool = False):
    """:func:`write_with` of ``data``."""
    write_with(path, lambda f: f.write(data), replace=replace, sync=sync)


def write_text(path: str | Path, text: str, *, replace: bool = True) -> None:
    """:func:`write_with` of UTF-8 ``text``."""
    write_bytes(path, text.encode("utf-8"), replace=replace)


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to the regular file ``path`` (made if missing), never through a link."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(
                f"{path} is a symbolic link: bayesdl writes no file through a link"
            ) from None
        raise UserError(f"cannot write {path}: {_why(e)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"cannot write {path}: it is {kind(st)}, not a regular file")
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data) :]
    except OSError as e:
        raise UserError(f"cannot write {path}: {_why(e)}") from None
    finally:
        os.close(fd)


def remove(path: str | Path) -> None:
    """Remove the file or link ``path`` (never what a link points to); missing is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UserError(f"cannot remove {path}: {_why(e)}") from None


def remove_temporaries(folder: str | Path, names: Iterable[str]) -> None:
    """Remove what :func:`write_with` left of ``names`` in ``folder`` when a process died
    mid-write (``.NAME.<random>.tmp``), and older bayesdl's ``NAME.tmp``."""
    names = set(names)
    try:
        listing = os.listdir(folder)
    except OSError:
        return
    for n in listing:
        m = _TEMP.match(n)
        if (m and m.group("name") in names) or (n.endswith(".tmp") and n[:-4] in names):
            with contextlib.suppress(OSError):
                os.unlink(Path(folder) / n)
