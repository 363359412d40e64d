"""Set-up of the worker processes of local clusters (the workers' preload, ``dask_setup``).

Two things a terminal user would otherwise see as crashes:

* Ctrl-C: a terminal sends SIGINT to its whole foreground process group, worker processes
  included; the driver handles it (stops the run, shuts the cluster down), so workers ignore it.
* The cluster's closing: once the driver has said it is closing the cluster
  (:func:`expect_shutdown`), a worker whose heartbeat or stream meets the scheduler's closed
  connection logs it with a traceback (distributed 2026.8 logs ``Failed to communicate with
  scheduler during heartbeat`` with ``logger.exception``). Those records, and only while the
  shutdown is expected, are dropped; a scheduler lost during a run is still logged in full.
"""
from __future__ import annotations

import logging
import signal
import threading

__all__ = ["dask_setup", "expect_shutdown", "shutdown_expected", "ClosedConnectionFilter"]

#: set in a worker process once its driver is closing the cluster
_shutdown_expected = threading.Event()

#: messages distributed logs when the scheduler's connection is gone (with or without a traceback)
_CLOSED_CONNECTION_MESSAGES = ("Failed to communicate with scheduler", "Heartbeat to scheduler failed",
                               "Connection to scheduler broken")


def _own_process() -> bool:
    """The worker has a process of its own: its event loop runs in the process's main thread
    (a worker of a ``processes: false`` cluster runs in a thread of the driver, whose logs and
    signals stay the driver's)."""
    return threading.current_thread() is threading.main_thread()


def expect_shutdown(dask_worker=None) -> None:
    """Run on every worker (``client.run``) just before the driver closes the cluster; nothing
    for workers in the driver's process."""
    if _own_process():
        _shutdown_expected.set()


def shutdown_expected(dask_worker=None) -> bool:
    """Whether :func:`expect_shutdown` has run in this worker process."""
    return _shutdown_expected.is_set()


class ClosedConnectionFilter(logging.Filter):
    """Drop, once the shutdown is expected, records about the scheduler's closed connection:
    an ``OSError`` (``CommClosedError``, ``StreamClosedError`` are) in the record, or one of
    distributed's messages for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _shutdown_expected.is_set():
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError):
            return False
        return not record.getMessage().startswith(_CLOSED_CONNECTION_MESSAGES)


def _install_filter() -> None:
    """On the handlers of distributed's logger (its child loggers' records reach them)."""
    for handler in logging.getLogger("distributed").handlers:
        if not any(isinstance(f, ClosedConnectionFilter) for f in handler.filters):
            handler.addFilter(ClosedConnectionFilter())


def dask_setup(worker) -> None:
    """The preload's hook, in a worker process of its own: ignore SIGINT, install the filter above."""
    if _own_process():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _install_filter()
