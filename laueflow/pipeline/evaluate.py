"""`laueflow evaluate`: accuracy of a results store against the simulator's ground truth.

:func:`evaluate` takes the two stores as xarray Datasets, selects the numpy arrays each
registered metric needs (the metrics — science — are in :mod:`laueflow.stages.evaluation`),
runs the metrics whose variables are present and returns the report; :func:`format_report` and
:func:`to_json` turn it into text and JSON.

Before any metric, :func:`check_stores` makes sure the two stores are what they claim (a results
store of `laueflow run`, a truth store of `laueflow simulate`) and cover the same scan shape;
:func:`check_evaluated` refuses a report in which no metric could run.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..io.store_kind import KIND_NAMES, RESULTS_MARKER, SCAN_MARKER, TRUTH_MARKER
from ..stages.base import get_stage, registered_stages
from ..stages.evaluation import DEFAULT_OPTIONS, METRICS, StoreArrays

__all__ = ["evaluate", "check_stores", "check_evaluated", "store_kind", "incomplete_warning",
           "format_report", "to_json", "segmentation_derived", "with_segmentation"]

#: the store each side of an evaluation must be, and the command that writes it (for messages)
_WANTED = {"results": ("a results store", "`laueflow run`"),
           "truth": ("a truth store", "`laueflow simulate`")}
TRUTH_FORMAT_VERSIONS = (1,)


def store_kind(store) -> str | None:
    """``"results"``, ``"truth"``, ``"scan"`` or None, from a Dataset's markers (those of
    :mod:`laueflow.io.store_kind`: ``laueflow_results: True``, ``truth_format_version``,
    ``laueflow_scan: True``; scan stores written before that marker: an ``images`` array)."""
    attrs = store.attrs
    if attrs.get(RESULTS_MARKER) is True:
        return "results"
    if TRUTH_MARKER in attrs:
        return "truth"
    if attrs.get(SCAN_MARKER) is True or "images" in store.variables:
        return "scan"
    return None


def _check_kind(store, kind: str, name) -> None:
    found = store_kind(store)
    if found == kind:
        return
    what = KIND_NAMES[found] if found else (
        f"not a laueflow store (no attribute {RESULTS_MARKER}, {TRUTH_MARKER} or {SCAN_MARKER})")
    wanted, writer = _WANTED[kind]
    raise ValueError(f"{name} is {what}, not {wanted}: give the store written by {writer}")


def _scan_shape(store, name) -> tuple[int, int]:
    if "y" not in store.sizes or "x" not in store.sizes:
        raise ValueError(f"{name} has no y, x (scan point) dimensions, so its scan shape is unknown")
    return int(store.sizes["y"]), int(store.sizes["x"])


def check_stores(results, truth, *, results_name="the results store", truth_name="the truth store") -> str | None:
    """ValueError, naming the store, unless ``results`` is a results store and ``truth`` a truth
    store (of a known format version) of the same scan shape (y, x) and of the same scan
    (:func:`_check_truth_matches_scan`). Returns a note when the latter could not be checked."""
    _check_kind(results, "results", results_name)
    _check_kind(truth, "truth", truth_name)
    version = truth.attrs["truth_format_version"]
    if version not in TRUTH_FORMAT_VERSIONS:
        raise ValueError(f"{truth_name} has truth_format_version {version!r}; this laueflow reads "
                         f"{list(TRUTH_FORMAT_VERSIONS)}: upgrade laueflow or simulate the scan again")
    (ny, nx), (ty, tx) = _scan_shape(results, results_name), _scan_shape(truth, truth_name)
    if (ny, nx) != (ty, tx):
        raise ValueError(f"scan shapes differ: {results_name} is {ny}×{nx} (y × x) but {truth_name} is "
                         f"{ty}×{tx}: give the truth of the scan that was run")
    return _check_truth_matches_scan(results, truth, truth_name=truth_name)


def _check_truth_matches_scan(results, truth, *, truth_name="the truth store") -> str | None:
    """ValueError unless the truth's ``image_count_sum`` equals the sum of the counts of the
    images of the scan store ``results`` was computed from (its ``scan_store`` attribute), at the
    first, centre and last points of the raster: the truth of another scan of the same shape (or
    images ingested in another order) is refused. Returns a note when this cannot be checked
    (a truth without ``image_count_sum``, the scan store not found), else None."""
    import zarr  # deferred: heavy

    if "image_count_sum" not in truth.variables:
        return (f"{truth_name} records no image sums (written before 2026-12-02): whether it is the truth of "
                "this scan was not checked")
    path = results.attrs.get("scan_store")
    if not path or not Path(path).is_dir():
        return (f"the scan store {path!r} the results were computed from is not found: whether {truth_name} "
                "is the truth of this scan was not checked")
    group = zarr.open_group(str(path), mode="r")
    images = group["images"]
    ny, nx = images.shape[:2]
    valid = np.asarray(group["valid"][...], bool) if "valid" in group else np.ones((ny, nx), bool)
    sums = np.asarray(truth["image_count_sum"].values)
    for y, x in dict.fromkeys([(0, 0), (ny // 2, nx // 2), (ny - 1, nx - 1)]):
        if not valid[y, x]:
            continue
        counts = int(np.asarray(images[y, x]).sum(dtype=np.int64))
        if counts != int(sums[y, x]):
            raise ValueError(f"{truth_name} is not the truth of this scan: the image at point (y={y}, x={x}) of "
                             f"the scan store {path} sums to {counts} counts, the truth's to {int(sums[y, x])}. Give "
                             "the truth.zarr that `laueflow simulate` wrote with the ingested images (and ingest "
                             "them in their raster order)")
    return None


def check_evaluated(report: dict) -> None:
    """ValueError listing why each metric was skipped when none could run."""
    if report["metrics"]:
        return
    why = "; ".join(f"{name}: {reason}" for name, reason in report["skipped"].items())
    raise ValueError(f"no metric could be run: {why}. Each metric needs the variables listed (truth: "
                     "from the truth store); run a workflow with the stages that write them (at least "
                     "`peaks`), then evaluate again")


def incomplete_warning(report: dict, name="the results store") -> str | None:
    """The warning for a report of a partial results store (None when it is complete)."""
    if report.get("complete", True):
        return None
    tiles = report.get("tiles_done")
    done = f" ({tiles[0]} of {tiles[1]} tiles)" if tiles else ""
    return (f"{name} is incomplete{done}: the numbers cover only the finished tiles; re-run "
            "`laueflow run` on its workflow to finish it, then evaluate again")


def _select(store, needs, optional) -> StoreArrays:
    """The variables ``needs`` and those of ``optional`` present in ``store``, as numpy arrays."""
    names = [*needs, *(v for v in optional if v in store.variables)]
    return StoreArrays({name: np.asarray(store[name].values) for name in names}, dict(store.attrs))


def segmentation_derived() -> set[str]:
    """The variables computed, directly or through other stages, from the ``segmentation``
    stage's outputs (the delegates, the delegate map, the phase groups), by the registered
    stages' inputs; the segmentation's own outputs are not in it."""
    own = set(get_stage("segmentation").output_names)
    derived, grew = set(), True
    while grew:
        grew = False
        for spec in registered_stages().values():
            sources = {*spec.inputs.values(), *spec.optional_inputs.values()}
            new = set(spec.output_names) - own - derived
            if new and sources & (own | derived):
                derived |= new
                grew = True
    return derived


def with_segmentation(results, segmentation, name: str):
    """``(dataset, withheld)``: ``results`` with the ``segmentation`` stage's variables of the
    named segmentation ``segmentation`` (the Dataset of its group) in place of the run's, and the
    variables derived from the run's segmentation removed (``withheld``: name → why), so no
    metric mixes two segmentations."""
    own = [v for v in get_stage("segmentation").output_names if v in segmentation.variables]
    if "cluster_label" not in own:
        raise ValueError(f"segmentation {name!r} has no cluster_label: it is not a finished segmentation")
    derived = sorted(segmentation_derived() & set(results.variables))
    ds = results.drop_vars([v for v in (*derived, *own) if v in results.variables])
    ds = ds.assign({v: segmentation[v] for v in own})
    why = f"computed from the run's own segmentation, not from segmentations/{name}"
    return ds, {v: why for v in derived}


def evaluate(results, truth, *, withheld: dict | None = None, **options) -> dict:
    """Run every metric whose variables are present: ``{"metrics": {...}, "skipped": {...},
    "complete": results.attrs["complete"] is True, "tiles_done": [done, total] (if chunk_done)}``.
    ``withheld``: variables removed on purpose (name → why; :func:`with_segmentation`), given
    as the reason a metric that needs them is skipped.
    Checks nothing about the stores: call :func:`check_stores` first."""
    opts = {**DEFAULT_OPTIONS, **{k: v for k, v in options.items() if v is not None}}
    out: dict = {"metrics": {}, "skipped": {}, "options": _jsonable(opts),
                 "complete": results.attrs.get("complete") is True}
    if "chunk_done" in results.variables:
        done = np.asarray(results["chunk_done"].values)
        out["tiles_done"] = [int(done.sum()), int(done.size)]
    for metric in METRICS:
        missing = [v for v in metric.needs_results if v not in results.variables]
        missing += [f"truth:{v}" for v in metric.needs_truth if v not in truth.variables]
        if missing:
            reasons = sorted({(withheld or {}).get(v, "") for v in missing} - {""})
            out["skipped"][metric.name] = "; ".join(reasons) if reasons else f"missing {', '.join(missing)}"
            continue
        out["metrics"][metric.name] = metric.func(_select(results, metric.needs_results, metric.optional_results),
                                                  _select(truth, metric.needs_truth, metric.optional_truth), opts)
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if math.isnan(v) else ("inf" if math.isinf(v) else v)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2e}"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["  (empty)"]
    cols = list(rows[0])
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths))
    out = [line, "  " + "  ".join("-" * w for w in widths)]
    out += ["  " + "  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return out


def format_report(report: dict) -> str:
    warning = incomplete_warning(report)
    lines = [f"WARNING: {warning}"] if warning else []
    if report.get("segmentation"):
        lines.append(f"segmentation scored: {report['segmentation']}")
    for name, result in report["metrics"].items():
        lines.append(f"== {name} ==")
        width = max(len(k) for k in result["summary"])
        for k, v in result["summary"].items():
            lines.append(f"  {k.ljust(width)}  {_fmt(v)}")
        for title, rows in result.get("tables", {}).items():
            lines.append(f"  -- {title}")
            lines += _table(rows)
        lines += [f"  note: {n}" for n in result.get("notes", [])]
    for name, why in report.get("skipped", {}).items():
        lines.append(f"(skipped {name}: {why})")
    return "\n".join(lines)


def to_json(report: dict) -> dict:
    return _jsonable(report)
