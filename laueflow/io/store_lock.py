"""One writer per store: an advisory lock file next to the store (``.<name>.lock``).

``laueflow ingest`` and ``laueflow run`` hold the *exclusive* lock of the store they write for
their whole life; ``run`` also holds a *shared* lock on the scan store it reads, so no ingest
changes the images under a running run. The lock is a kernel ``flock`` on the lock file: it is
released by the kernel when its process dies, so a lock left by a killed process (SIGKILL,
power cut, OOM killer) is taken over safely by the next writer — and said so. The exclusive
holder writes its host, pid, command and start time into the file, for the message the next
writer gets. On a filesystem without ``flock`` (some Lustre mounts) the file is created with
``O_EXCL`` instead, and a stale lock is recognised only when its holder ran on this host.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["StoreLock", "StoreLockedError", "lock_path"]

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
#: locks this process holds: lock file → [thread id, shared, depth, holder info] (re-entrant in one thread)
_HELD: dict[Path, list] = {}
_HELD_LOCK = threading.Lock()


class StoreLockedError(Exception):
    """Another process writes (or, for a shared lock, reads) the store."""


def lock_path(store) -> Path:
    """The lock file of ``store``: ``.<name>.lock`` in the folder of the store's real path
    (symbolic links followed, so every path to one store meets the same lock)."""
    store = Path(store).expanduser().resolve()
    return store.parent / f".{store.name}.lock"


def _holder_info(purpose: str, shared: bool) -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "purpose": purpose,
            "mode": "shared" if shared else "exclusive",
            "command": " ".join(sys.argv), "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _describe(info: dict | None) -> str:
    if not info:
        return "another process (it has not written its details yet)"
    return (f"`{info.get('purpose', 'laueflow')}` pid {info.get('pid')} on host {info.get('host')} "
            f"since {info.get('since')} ({info.get('command', '')!r})")


def _read_info(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return None


def _holder_details(fd: int, wait_s: float = 1.0) -> dict | None:
    """The holder's details; a holder that has just taken the lock may not have written them
    yet (or the file still holds a dead predecessor's): wait for them a little."""
    deadline = time.monotonic() + wait_s
    while True:
        info = _read_info(fd)
        current = info and info.get("pid") and (info.get("host") != socket.gethostname()
                                                or _pid_alive(int(info["pid"])))
        if current or time.monotonic() > deadline:
            return info
        time.sleep(0.02)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class StoreLock:
    """``with StoreLock(path, "run"):`` — exclusive (``shared=False``) or shared lock of a store.

    Raises :class:`StoreLockedError` at once (no waiting) when the lock is held, naming the holder.
    ``taken_over`` is the previous holder's details when a stale lock was taken over, else None.
    """

    def __init__(self, store, purpose: str, *, shared: bool = False, log=None):
        self.store = Path(store)
        self.path = lock_path(store)
        self.purpose = purpose
        self.shared = shared
        self.log = log
        self.taken_over: dict | None = None
        self._fd: int | None = None
        self._excl_file = False
        self._nested = False

    def acquire(self) -> "StoreLock":
        """Take the lock, or raise :class:`StoreLockedError` naming its holder. Re-entrant in one
        thread (the CLI takes the locks before it starts a cluster, the driver again inside)."""
        if self._fd is not None or self._nested:
            raise RuntimeError(f"{self.path} is already held by this StoreLock")
        with _HELD_LOCK:
            held = _HELD.get(self.path)
            if held is not None:
                if held[0] != threading.get_ident() or (held[1] and not self.shared):
                    raise StoreLockedError(self._busy_message(held[3]))
                held[2] += 1
                self._nested = True
                return self
            self._take()
            _HELD[self.path] = [threading.get_ident(), self.shared, 1, _holder_info(self.purpose, self.shared)]
        return self

    def _take(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                info = _holder_details(fd)
                os.close(fd)
                raise StoreLockedError(self._busy_message(info)) from None
            except OSError as err:
                os.close(fd)
                if err.errno in _NO_FLOCK:
                    self._acquire_without_flock()
                    return
                raise
            if self._same_file(fd):
                break
            os.close(fd)  # the file was removed by its last holder while we waited: retry
        self._fd = fd
        previous = _read_info(fd)
        if not self.shared and previous and previous.get("mode") == "exclusive":
            # a writer that died without releasing (the kernel dropped its flock)
            self.taken_over = previous
            if self.log:
                self.log(f"note: took over the lock {self.path} left by {_describe(previous)}, "
                         "which is no longer running")
        self._write_info(fd)  # readers write theirs too: the message of a blocked writer names one

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _write_info(self, fd: int) -> None:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(_holder_info(self.purpose, self.shared)).encode())
        os.fsync(fd)

    def _acquire_without_flock(self) -> "StoreLock":
        """``O_EXCL`` create; a stale file is taken over only if its holder ran on this host."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                fd = os.open(self.path, os.O_RDONLY)
                info = _read_info(fd)
                os.close(fd)
                if not info or info.get("host") != socket.gethostname() or _pid_alive(int(info["pid"])):
                    raise StoreLockedError(self._busy_message(info) + f" (this filesystem has no file locks: "
                                           f"if that process is gone, delete {self.path})") from None
                self.taken_over = info
                self.path.unlink(missing_ok=True)
                continue
            self._fd, self._excl_file = fd, True
            self._write_info(fd)
            return self
        raise StoreLockedError(f"could not take the lock {self.path}; try again")

    def _busy_message(self, info) -> str:
        what = "being read by" if (info or {}).get("mode") == "shared" else "being written by"
        return (f"{self.store} is {what} {_describe(info)}. laueflow lets one process write a store at a "
                "time, and none while a run reads it: wait for that process to finish (or stop it; a "
                f"re-run then resumes) and try again. Lock file: {self.path}")

    def release(self) -> None:
        with _HELD_LOCK:
            if self._nested:
                _HELD[self.path][2] -= 1
                self._nested = False
                return
            if self._fd is None:
                return
            _HELD.pop(self.path, None)
            self._release_file()

    def _release_file(self) -> None:
        try:
            if self.shared and not self._excl_file:
                try:  # the last reader out removes the file too (only when it can hold it alone)
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return
            self.path.unlink(missing_ok=True)  # while still held: waiters see a new file
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None or self._nested

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
