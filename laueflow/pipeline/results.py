"""Open a results store for exploring: statuses by name, materials by name, positions in µm.

:func:`open_results` returns the store's Dataset (lazy, as ``xarray.open_zarr``) with

* ``status_name`` (y, x): the ``status`` codes decoded by the store's own ``status_codes``
  attribute (``status`` itself is kept, with CF ``flag_values`` / ``flag_meanings``);
* the coordinate ``material`` (dim ``material``): material names, from the store's ``materials``
  attribute (checked against ``material_definitions``); ``grain_material_name`` (y, x, grain):
  each grain's material name ("" for an empty slot);
* coordinates ``y_um``, ``x_um``: scan positions in µm (the stored ``y``/``x`` coordinates when they
  are in µm, else index × ``step_um``).

Selections (functions, each returns a new Dataset; variables without ``grain`` are unchanged):
:func:`best_grain` (at each point the brightest indexed grain, then the highest matching rate),
:func:`grain` (slot k), :func:`material` (only the grains of one material; others set to their
fill values).
Layout of the store: ``docs/results-schema.md``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.store_kind import KIND_NAMES, RESULTS_MARKER, read_store_attrs, store_kind
from ..stages.grain_choice import brightest_grain

__all__ = ["open_results", "best_grain", "grain", "material", "ResultsError", "GRAIN_DIM",
           "status_names", "material_names", "TENSOR_COMPONENTS"]

GRAIN_DIM = "grain"

#: symmetric tensor components (strain, stress) by name → (i3, j3)
TENSOR_COMPONENTS = {"xx": (0, 0), "yy": (1, 1), "zz": (2, 2), "xy": (0, 1), "xz": (0, 2), "yz": (1, 2)}


class ResultsError(ValueError):
    """A results store that cannot be read as asked (the message says what is wrong)."""


def status_names(attrs: dict) -> dict[int, str]:
    """``{code: name}`` from the store's ``status_codes`` attribute; refuses a missing table."""
    codes = attrs.get("status_codes")
    if not isinstance(codes, dict) or not codes:
        raise ResultsError("the store has no `status_codes` attribute, so its status codes cannot be "
                           "named: is it a results store of `laueflow run`?")
    return {int(k): str(v) for k, v in codes.items()}


def material_names(attrs: dict) -> list[str]:
    """Material names by index (``grain_material`` / ``peak_material`` values), from the store's
    ``materials`` attribute; refuses a missing list or one that disagrees with
    ``material_definitions``."""
    names = attrs.get("materials")
    if not isinstance(names, list) or not names:
        raise ResultsError("the store has no `materials` attribute: material indices cannot be named "
                           "(the run records the scan's materials; ingest with --material)")
    names = [n["name"] if isinstance(n, dict) else str(n) for n in names]
    definitions = attrs.get("material_definitions")
    if definitions is not None:
        defined = [d.get("name") for d in definitions]
        if defined != names:
            raise ResultsError(f"the store's `materials` {names} disagree with its `material_definitions` "
                               f"{defined}: material indices cannot be named safely")
    if len(set(names)) != len(names):
        raise ResultsError(f"the store's `materials` attribute names a material twice: {names}")
    return names


def _lookup(codes, table: np.ndarray, offset: int, what: str):
    """``table[codes - offset]`` for a numpy block; an unknown code is an error."""
    index = np.asarray(codes).astype(np.int64) - offset
    bad = (index < 0) | (index >= len(table))
    bad[~bad] = np.equal(table[index[~bad]], None)
    if bad.any():
        raise ResultsError(f"{what} holds codes {sorted(set((index[bad] + offset).tolist()))} that the store's "
                           "attributes do not name: the store is inconsistent")
    return table[index]


def _decoded(var, names: dict[int, str], what: str):
    """A lazy string DataArray of ``var``'s codes named by ``names``."""
    offset = min(names)
    table = np.array([names.get(c) for c in range(offset, max(names) + 1)], dtype=object)  # None: unnamed
    decoded = var.copy(data=var.data.map_blocks(_lookup, table, offset, what, dtype=object)
                       if hasattr(var.data, "map_blocks") else _lookup(var.values, table, offset, what))
    decoded.attrs = {"description": f"{var.name} decoded by the store's attributes"}
    return decoded


def _positions(ds, attrs: dict) -> dict:
    coords = {}
    step = attrs.get("step_um")
    for i, dim in enumerate(("y", "x")):
        if dim not in ds.dims:
            continue
        stored = ds.coords.get(dim)
        if stored is not None and stored.attrs.get("units") in ("um", "µm"):
            values = np.asarray(stored.values, dtype=float)
        elif step is not None:
            values = np.arange(ds.sizes[dim]) * float(step[i])
        else:
            raise ResultsError(f"the store has neither µm coordinates on {dim} nor a `step_um` attribute: "
                               "positions in µm are unknown")
        coords[f"{dim}_um"] = (dim, values, {"units": "um", "long_name": f"scan position {dim}"})
    return coords


def open_results(path, *, group: str | None = None):
    """Open ``path`` (a results store of ``laueflow run``) lazily with statuses and materials named
    and positions in µm; ``group``: a segmentation group, e.g. ``"segmentations/k6-pcs32-kmeans"``
    (its variables are merged over the root's coordinates).

    Raises :class:`ResultsError` for a store that is not a results store, or whose status or
    material attributes are missing or inconsistent (nothing is guessed by position).
    """
    import xarray as xr  # deferred: heavy

    path = Path(path)
    if not path.exists():
        raise ResultsError(f"results store not found: {path}")
    if store_kind(path) != "results":
        raise ResultsError(f"{path} is {KIND_NAMES.get(store_kind(path), 'not a laueflow store')}, "
                           f"not a results store (no `{RESULTS_MARKER}` attribute): give the store of `laueflow run`")
    attrs = read_store_attrs(path) or {}
    ds = xr.open_zarr(path)
    if group is not None:
        seg = xr.open_zarr(path, group=group)
        ds = ds.drop_vars([v for v in seg.data_vars if v in ds]).merge(seg, compat="override")
        ds.attrs = attrs
    return decorate(ds)


def decorate(ds):
    """Add the named statuses, materials and µm positions to a results Dataset (see module doc)."""
    attrs = ds.attrs
    ds = ds.assign_coords(_positions(ds, attrs))
    if "status" in ds:
        names = status_names(attrs)
        ds["status"].attrs.update(flag_values=list(names), flag_meanings=" ".join(names.values()))
        ds["status_name"] = _decoded(ds["status"], names, "status")
    needs_materials = any(v in ds for v in ("grain_material", "peak_material", "delegate_material"))
    if needs_materials or attrs.get("materials"):
        materials = material_names(attrs)
        ds = ds.assign_coords(material=("material", materials))
        if "grain_material" in ds:
            table = {-1: "", **dict(enumerate(materials))}
            ds["grain_material_name"] = _decoded(ds["grain_material"], table, "grain_material")
    return ds


def _grain_vars(ds) -> list[str]:
    return [name for name, var in ds.data_vars.items() if GRAIN_DIM in var.dims]


BRIGHTNESS = "brightness"
_BRIGHTNESS_VARS = ("matching_rate", "peak_grain", "peak_intensity")


def best_grain(ds, by: str = BRIGHTNESS):
    """One grain per point: every ``grain`` variable loses its ``grain`` dim; ``grain_index`` (y, x)
    says which slot (-1: no grain, fill values there); the variables that had it get the attribute
    ``selected_grain = "best"``. The selected variables stay lazy.

    ``by="brightness"`` (default): the grain whose matched peaks are brightest (mean
    ``peak_intensity`` of the peaks ``peak_grain`` gives it), then the highest matching rate —
    the rule of the delegate map and ``laueflow evaluate`` (:mod:`laueflow.stages.grain_choice`):
    at a point that sees two twin variants both are often indexed at 100 %, and the bright one
    fills the beam. Reads ``matching_rate``, ``peak_grain`` and ``peak_intensity``.
    ``by=<a grain variable>`` (e.g. ``"matching_rate"``): its highest value (NaN-aware)."""
    if by == BRIGHTNESS:
        missing = [v for v in _BRIGHTNESS_VARS if v not in ds]
        if missing:
            raise ResultsError(f"best_grain: choosing the brightest grain needs {missing}, which the Dataset "
                               "lacks (no `peaks`/`index` stage?); choose by another grain variable, e.g. "
                               "best_grain(ds, by='matching_rate')")
        index = _brightest_slot(ds).compute()
        has = index >= 0
        index = index.where(has, 0)
    elif by not in ds or GRAIN_DIM not in ds[by].dims:
        raise ResultsError(f"best_grain: the Dataset has no grain variable {by!r} (no `index` stage in the "
                           f"workflow?); by='{BRIGHTNESS}' or one of {_grain_vars(ds)}")
    else:
        score = ds[by]
        has = score.notnull().any(GRAIN_DIM).compute()  # small (y, x): the rest stays lazy
        index = score.fillna(-np.inf).argmax(GRAIN_DIM).compute()
    out = ds.isel({GRAIN_DIM: index})
    out = _blank_where(out, ~has, only=_grain_vars(ds))
    for name in _grain_vars(ds):
        out[name].attrs = {**out[name].attrs, "selected_grain": "best"}  # a new dict: ds keeps its own
    out["grain_index"] = index.where(has, -1).astype(np.int16)
    return out


def _brightest_slot(ds):
    """(y, x) lazy slot of each point's brightest grain (−1: none), block by block."""
    import xarray as xr

    rate, peak_grain, height = (ds[v] for v in _BRIGHTNESS_VARS)
    if rate.chunks is not None:  # core dims whole in each block
        rate = rate.chunk({GRAIN_DIM: -1})
        peak_grain, height = peak_grain.chunk({"peak": -1}), height.chunk({"peak": -1})
    return xr.apply_ufunc(brightest_grain, rate, peak_grain, height,
                          input_core_dims=[[GRAIN_DIM], ["peak"], ["peak"]], dask="parallelized",
                          output_dtypes=[np.int64])


def grain(ds, k: int):
    """Grain slot ``k`` of every point (``grain`` variables lose their ``grain`` dim)."""
    n = ds.sizes.get(GRAIN_DIM, 0)
    if not 0 <= k < n:
        raise ResultsError(f"grain {k} does not exist: the store has {n} grain slots (0 … {n - 1})")
    return ds.isel({GRAIN_DIM: k})


def material(ds, name: str):
    """Keep only the grains of material ``name``: every other grain slot holds its fill value
    (NaN / the variable's ``fill_value``); ``grain_material`` tells them apart."""
    if "material" not in ds.coords or "grain_material" not in ds:
        raise ResultsError("material: the Dataset has no materials coordinate or `grain_material` "
                           "(open it with laueflow.open_results; an `index` stage is needed)")
    if GRAIN_DIM not in ds.dims:
        raise ResultsError("material: the Dataset has no grain dim (one grain per point already chosen): "
                           "select the material first, then the grain — best_grain(material(ds, name))")
    names = [str(v) for v in ds.coords["material"].values]
    if name not in names:
        raise ResultsError(f"material {name!r} is not in this store; its materials: {names}")
    keep = ds["grain_material"] == names.index(name)
    return _blank_where(ds, ~keep, only=_grain_vars(ds))


def _blank_where(ds, blank, only):
    """``ds`` with its (y, x[, grain]) variables set to their fill values where ``blank``."""
    out = ds.copy()
    for name in only:
        var = ds[name]
        if not set(blank.dims) <= set(var.dims):
            continue
        fill = _fill_value(var)
        out[name] = var.where(~blank, fill)
        out[name].attrs = dict(var.attrs)
    return out


def _fill_value(var):
    kind = np.dtype(var.dtype).kind
    if kind == "f":
        return np.nan
    if kind == "b":
        return False
    if kind == "O":
        return ""
    return var.attrs.get("fill_value", var.encoding.get("_FillValue", -1))
