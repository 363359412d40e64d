"""StoreLock: one writer per store across real processes; stale locks of killed processes;
shared readers; re-entrant in one thread, refused in another. And store_kind/remove_store."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
import zarr

from laueflow.io.store_kind import NotOurStoreError, remove_store, store_kind
from laueflow.io.store_lock import StoreLock, StoreLockedError, lock_path

HOLD = ("import sys, time; from laueflow.io.store_lock import StoreLock\n"
        "lock = StoreLock(sys.argv[1], sys.argv[2], shared=sys.argv[3] == 'shared').acquire()\n"
        "print('held', flush=True); time.sleep(120)")


def _holder(store, purpose="run", mode="exclusive"):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(store), purpose, mode], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_refuses_others_naming_the_holder_and_a_killed_holder_is_taken_over(tmp_path):
    store = tmp_path / "results.zarr"
    proc = _holder(store)
    try:
        for shared in (False, True):
            with pytest.raises(StoreLockedError, match=rf"being written by `run` pid {proc.pid} on host"):
                StoreLock(store, "ingest", shared=shared).acquire()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert lock_path(store).exists()  # left behind by the killed process
    notes = []
    with StoreLock(store, "run", log=notes.append) as lock:
        assert lock.taken_over["pid"] == proc.pid
    assert "no longer running" in notes[0] and str(proc.pid) in notes[0]
    assert not lock_path(store).exists()  # a clean release removes the file
    with StoreLock(store, "run") as lock:  # nothing stale now
        assert lock.taken_over is None


def test_readers_share_writers_wait_for_all_readers(tmp_path):
    store = tmp_path / "scan.zarr"
    reader = _holder(store, "run (reading the scan)", "shared")
    try:
        with StoreLock(store, "run (reading the scan)", shared=True):
            with pytest.raises(StoreLockedError, match="being read by"):
                StoreLock(store, "ingest").acquire()
        with pytest.raises(StoreLockedError, match="being read by"):
            StoreLock(store, "ingest").acquire()  # the other process still reads
    finally:
        reader.kill()
        reader.wait()
    with StoreLock(store, "ingest") as lock:
        assert lock.taken_over is None  # a reader that died is not reported as a writer
    with StoreLock(store, "run (reading the scan)", shared=True):
        assert lock_path(store).exists()
    assert not lock_path(store).exists()  # the last reader out removes the file


def test_reentrant_in_one_thread_refused_in_another(tmp_path):
    store = tmp_path / "results.zarr"
    errors = []
    with StoreLock(store, "run"):
        with StoreLock(store, "run"):  # the CLI takes it, then the driver again
            pass
        assert lock_path(store).exists()  # the inner release keeps the outer's lock

        def other():
            try:
                StoreLock(store, "run").acquire()
            except StoreLockedError as err:
                errors.append(str(err))

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert errors and f"pid {os.getpid()}" in errors[0]
    assert not lock_path(store).exists()


def test_store_kind_and_remove_store_delete_only_their_own_kind(tmp_path):
    scan = zarr.open_group(str(tmp_path / "scan.zarr"), mode="w", zarr_format=3)
    scan.attrs["laueflow_scan"] = True
    results = zarr.open_group(str(tmp_path / "results.zarr"), mode="w", zarr_format=3)
    results.attrs["laueflow_results"] = True
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    kinds = {name: store_kind(tmp_path / name) for name in
             ("scan.zarr", "results.zarr", "other.zarr", "folder", "file.txt", "absent")}
    assert kinds == {"scan.zarr": "scan", "results.zarr": "results", "other.zarr": "zarr", "folder": "folder",
                     "file.txt": "file", "absent": None}
    for name in ("results.zarr", "other.zarr", "folder", "file.txt"):
        with pytest.raises(NotOurStoreError, match="left untouched"):
            remove_store(tmp_path / name, "scan")
        assert (tmp_path / name).exists()
    (tmp_path / "link.zarr").symlink_to(tmp_path / "scan.zarr")
    with pytest.raises(NotOurStoreError):
        remove_store(tmp_path / "link.zarr", "scan")  # never through a symlink
    remove_store(tmp_path / "scan.zarr", "scan")
    assert not (tmp_path / "scan.zarr").exists()


def test_a_symbolic_link_to_a_store_meets_the_same_lock(tmp_path):
    store = tmp_path / "results.zarr"
    store.mkdir()
    (tmp_path / "elsewhere").mkdir()
    link = tmp_path / "elsewhere" / "link.zarr"
    link.symlink_to(store)
    assert lock_path(link) == lock_path(store) == tmp_path.resolve() / ".results.zarr.lock"
    proc = _holder(link)
    try:
        with pytest.raises(StoreLockedError, match=rf"being written by `run` pid {proc.pid}"):
            StoreLock(store, "segment").acquire()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
