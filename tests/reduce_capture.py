"""Test helpers for reduce stages called directly: a writer that keeps what it is given and an
in-process Dask client."""
from __future__ import annotations

import numpy as np
from distributed import Client


class Capture:
    """A reduce writer that keeps what it is given (computed), for assertions."""

    def __init__(self):
        self.written = {}

    def write(self, name, array):
        self.written[name] = np.asarray(array.compute() if hasattr(array, "compute") else array)


def in_process_client() -> Client:
    """One in-process worker, one thread (use as a context manager)."""
    return Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0")
