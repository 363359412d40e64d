"""``scan_summary``: a small scan-wide (reduce) stage — per-scan statistics after every tile.

- ``peak_count_normalised (y, x)``: peaks found per image divided by the scan's median over the
  processed images (1 = a typical image; dark or off-sample points stand out below, grain
  boundaries and overlapping patterns above); NaN where the image was not processed or the median
  is 0.
- ``peak_count_median ()``: that median.
- ``matching_rate_histogram (matching_rate_bin,)``: how many indexed grains have a matching rate
  in each bin of ``[0, 100] %`` (``matching_rate_bins`` equal bins, edges in
  ``matching_rate_bin_edges (matching_rate_bin, bound)``); −1 everywhere when the workflow has no
  ``index`` stage.

It follows the reduce contract (``docs/design.md``): the inputs are lazy dask arrays read from the
results store; NumPy functions on them stay lazy (they dispatch to ``dask.array``); only the
per-image peak counts (4 bytes an image) and the histogram are computed on the cluster and brought
back; the normalised map is written region by region by the ``writer``.
"""
from __future__ import annotations

import numpy as np

from .base import StageSpec, Variable

__all__ = ["STAGE", "scan_summary"]


def scan_summary(peak_count, matching_rate=None, *, client, writer, matching_rate_bins: int = 20) -> None:
    """Write the scan statistics (see the module docstring).

    ``peak_count``: lazy ``(y, x)`` int (−1: not processed); ``matching_rate``: lazy
    ``(y, x, grain)`` % (NaN: empty slot) or None.
    """
    counts = np.asarray(client.compute(peak_count).result())
    processed = counts[counts >= 0]
    median = float(np.median(processed)) if processed.size else float("nan")
    scale = median if median > 0 else float("nan")
    normalised = np.where(peak_count >= 0, peak_count / scale, np.nan).astype(np.float32)
    writer.write("peak_count_normalised", normalised)
    writer.write("peak_count_median", np.float64(median))

    edges = np.linspace(0.0, 100.0, int(matching_rate_bins) + 1)
    writer.write("matching_rate_bin_edges", np.stack([edges[:-1], edges[1:]], axis=1))
    if matching_rate is None:
        writer.write("matching_rate_histogram", np.full(len(edges) - 1, -1, np.int64))
        return
    histogram, _ = np.histogram(matching_rate, bins=edges)  # NaN (empty slots) fall outside
    writer.write("matching_rate_histogram", np.asarray(client.compute(histogram).result(), np.int64))


def check_params(params) -> None:
    bins = params["matching_rate_bins"]
    if not isinstance(bins, int) or isinstance(bins, bool) or not 1 <= bins <= 1000:
        raise ValueError(f"matching_rate_bins must be an integer in 1–1000, got {bins!r}")


_SCAN = dict(per_point=False)

STAGE = StageSpec(
    name="scan_summary",
    kind="reduce",
    func=scan_summary,
    inputs={"peak_count": "peak_count"},
    optional_inputs={"matching_rate": "matching_rate"},
    outputs=(
        Variable("peak_count_normalised", (), "float32", float("nan"), "1",
                 "peak_count / its scan median over processed images (NaN: not processed)"),
        Variable("peak_count_median", (), "float64", float("nan"), "1",
                 "median peak_count over the processed images of the scan", **_SCAN),
        Variable("matching_rate_histogram", ("matching_rate_bin",), "int64", -1, "1",
                 "indexed grains per matching-rate bin (-1: no index stage)", **_SCAN),
        Variable("matching_rate_bin_edges", ("matching_rate_bin", "bound"), "float64", float("nan"), "%",
                 "lower and upper edge of each matching-rate bin", **_SCAN),
    ),
    params={"matching_rate_bins": 20},
    dim_sizes={"matching_rate_bin": "matching_rate_bins", "bound": 2},
    check=check_params,
    description="scan-wide statistics: peak-count map normalised by its median, matching-rate histogram",
)
