"""One export at a time in a folder: a lock the running export holds (`exclusive`), so a
second export is refused instead of taking the first one's marker for an interrupted export and
deleting its staging folder (`fiftyone_elfs.export_folder` has the transaction itself).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: only exports of this process are excluded (see `exclusive`)
    fcntl = None  # type: ignore[assignment]

from fiftyone_elfs.errors import ElfsInputError
from fiftyone_elfs.export_folder import LOCK, read_json

_logger = logging.getLogger(__name__)
_running: dict[str, dict[str, Any]] = {}  # real folder -> holder, for the exports of this process
_running_lock = threading.Lock()


@contextlib.contextmanager
def exclusive(export_dir: str) -> Iterator[None]:
    """Holds the folder's export lock for the ``with`` block (creating the folder if needed).

    The lock is ``fcntl.flock`` on `LOCK` inside the folder, taken without waiting. The kernel
    (or the file server) drops it when its process ends, however it ends, so an export killed
    by ``kill -9`` never blocks the next one: that one takes the lock and rolls the interrupted
    export back (`recover`); there is no expiry to tune and no heartbeat. The lock file names
    its holder (process, host, start time) for the refusal and is removed when the export ends.

    Limits: on a shared disk the exclusion spans machines as far as the file system's locks do.
    NFS (v4, or v3 with lockd: Linux maps ``flock`` onto NFS byte-range locks) excludes across
    machines; there, a machine that dies while exporting holds the lock until
    the server reclaims it (the NFSv4 lease, typically 90 s; for v3 when the client restarts),
    and the refusal names that machine. An NFS mounted with ``nolock`` keeps locks per machine,
    so exports from two machines are then not excluded. Where no lock can be taken (a file
    system that refuses them, logged; Windows, which has no ``fcntl``), only the exports of one
    process exclude each other.

    Raises:
        ElfsInputError: another export into the folder is running (in this process or another);
            nothing is changed then; or the folder cannot be created.
    """
    try:
        os.makedirs(export_dir, exist_ok=True)
    except OSError as e:  # a read-only mount, a file system that refuses folders there
        raise ElfsInputError(
            f"export_dir '{export_dir}' cannot be created: {e.strerror or e}. Fix: pass a "
            "folder you can write to.",
            param="export_dir",
        ) from None
    real = os.path.realpath(export_dir)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        ),
        "thread": threading.current_thread().name,
    }
    with _running_lock:  # a flock emulated by POSIX locks (NFS) would not exclude two threads
        if real in _running:
            raise _busy_error(export_dir, _running[real])
        _running[real] = holder
    try:
        fd = _lock(export_dir, holder)
        try:
            yield
        finally:
            _unlock(export_dir, fd)
    finally:
        with _running_lock:
            del _running[real]


def _lock(export_dir: str, holder: dict[str, Any]) -> int | None:
    """Takes the lock file's ``flock`` and writes `holder` into it; None where no lock can be
    taken. Retries when the file it locked was removed meanwhile by the ending holder."""
    if fcntl is None:
        return None
    path = os.path.join(export_dir, LOCK)
    while True:
        fd, writable = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy_error(export_dir, read_json(path) or {}) from None
        except OSError as e:
            os.close(fd)
            _logger.warning(
                "no lock on %s (%s): other processes' exports are not excluded", path, e
            )
            return None
        if _is_same_file(fd, path):
            break
        os.close(fd)
    if writable:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode("utf-8"))
    return fd


def _open_lock(path: str) -> tuple[int, bool]:
    """The lock file, open for writing the holder when allowed (a lock file left by another
    user's killed export may be read-only to us: it is lockable all the same)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
    except PermissionError:
        return os.open(path, os.O_RDONLY), False


def _is_same_file(fd: int, path: str) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def _unlock(export_dir: str, fd: int | None) -> None:
    """Removes the lock file while still holding it (a waiting export re-creates it), then
    releases the lock."""
    if fd is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(export_dir, LOCK))
    os.close(fd)


def _busy_error(export_dir: str, holder: dict[str, Any]) -> ElfsInputError:
    """The refusal of a second export into a folder, naming the running one as far as known."""
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        who = f"this process (pid {holder['pid']}, thread {holder.get('thread', '?')})"
    elif holder.get("pid"):
        who = f"process {holder['pid']} on host {holder.get('host', '?')}"
    else:
        who = "another process (it has not yet said which)"
    return ElfsInputError(
        f"An export into '{export_dir}' is in progress (started "
        f"{holder.get('started_at', 'just now')} by {who}); a second export into the same "
        "folder would destroy its files, so nothing was changed. Fix: wait for it to finish and "
        "export again, or export into another folder.",
        param="export_dir",
    )
