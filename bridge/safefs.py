"""File operations that never follow a symbolic link where the runner writes or deletes.

A link planted inside the workdir (`.bridge/staging -> /home/me`) must not make the runner delete, truncate
or write anything outside it. Reads of user inputs do follow links (model folders are often links), but only
regular files are read, and without blocking on a FIFO.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
NONBLOCK = getattr(os, "O_NONBLOCK", 0)
BINARY = getattr(os, "O_BINARY", 0)
_CHUNK = 1 << 20


class UnsafePath(Exception):
    """A path inside the workdir is a link (or a special file) the runner refuses to go through (exit 2)."""


def refuse_link(path: Path) -> None:
    """Raise UnsafePath when `path` is a symbolic link; a missing path is fine."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{path} is a symbolic link (to {os.readlink(path)}); the runner never follows links "
                         "inside its workdir: remove the link")


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that refuses a symbolic link in the last component and any file that is not a plain one."""
    try:
        # O_NONBLOCK: a FIFO planted under this name must not block the open (it is refused just below).
        fd = os.open(path, flags | NOFOLLOW | NONBLOCK | CLOEXEC | BINARY, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            refuse_link(path)  # names the link target
            raise UnsafePath(f"{path} is a symbolic link; remove it") from None
        if exc.errno == errno.ENXIO:  # a FIFO without a reader
            raise UnsafePath(f"{path} is not a regular file; remove it") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{path} is not a regular file; remove it")
        if st.st_nlink > 1:  # a hard link to someone else's file: writing (or truncating) it would change theirs
            raise UnsafePath(f"{path} is a hard link ({st.st_nlink} names); remove it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(path: Path):
    """A text file for appending lines (events.jsonl, stderr.log), created if missing, never through a link."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    return os.fdopen(fd, "a", encoding="utf-8", newline="\n")


def open_append_binary(path: Path):
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    return os.fdopen(fd, "ab")


def write_new(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Create `path` (it must not exist) and write `data`; `durable` fsyncs before returning."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Atomically replace `path` with `data` (temporary file + rename; rename replaces a link, never its target)."""
    tmp = path.with_name(path.name + ".tmp")
    remove_entry(tmp)
    write_new(tmp, data, durable=durable)
    os.replace(tmp, path)


def remove_entry(path: Path, on_tree_error: Callable[[str, BaseException], None] | None = None) -> None:
    """Delete a file, a link (the link itself) or a directory tree without following links; missing is fine.

    Errors inside a tree are ignored, or passed to `on_tree_error(path, exc)`; unlinking a file raises them."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    # rmtree never follows links below a real directory (shutil.rmtree.avoids_symlink_attacks on Linux).
    if on_tree_error is None:
        shutil.rmtree(path, ignore_errors=True)
    elif sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=lambda _function, where, exc: on_tree_error(where, exc))
    else:  # Python 3.11: onerror gets (type, value, traceback)
        shutil.rmtree(path, onerror=lambda _function, where, info: on_tree_error(where, info[1]))


def remove_entry_checked(path: Path) -> list[str]:
    """Like remove_entry, but returns what could not be removed ("path: reason"), so a caller can report it."""
    failures: list[str] = []

    def failed(where: str | Path, exc: BaseException) -> None:
        failures.append(f"{where}: {getattr(exc, 'strerror', None) or exc}")

    try:
        remove_entry(path, on_tree_error=failed)
    except OSError as exc:
        failed(path, exc)
    return failures


def empty_dir(directory: Path) -> None:
    """Remove every entry of `directory` (which the caller checked is a real directory, not a link)."""
    with os.scandir(directory) as entries:
        names = [e.name for e in entries]
    for name in names:
        remove_entry(directory / name)


def open_regular_for_reading(path: Path) -> tuple[int, os.stat_result] | None:
    """(fd, stat) of a regular file, following links; None for anything else (FIFO, device, directory).

    O_NONBLOCK: opening a FIFO must not wait for a writer (a path can change type between a stat and the open).
    Raises OSError when the file cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | NONBLOCK | CLOEXEC | BINARY)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_regular_file(path: Path) -> str | None:
    """Content sha256 of a regular file; None when `path` is not one. Raises OSError on a read error."""
    opened = open_regular_for_reading(path)
    if opened is None:
        return None
    fd, _ = opened
    try:
        return sha256_fd(fd)
    finally:
        os.close(fd)
