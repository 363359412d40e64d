"""The stage contract: what a science step declares so the pipeline can run it.

A *stage* is one batched science step (find peaks, compute angles, index, refine strain …).
It is a plain function on numpy (or cupy) arrays for a batch of ``n`` images; it never opens a
file, never imports Dask and never decides where it runs. What the pipeline needs to know about
it is declared once, in a :class:`StageSpec` registered under a workflow name:

- ``func``: the function, or a lazy ``"module:function"`` reference (imported on first use, so
  heavy dependencies such as torch load only in the processes that run the stage);
- ``inputs``: ``{argument name: batch key}``; a batch key is ``"images"`` (``(n, rows, cols)``
  uint16), ``"calibration"`` (:class:`laueflow.physics.geometry.Calibration`), ``"materials"``
  (the scan's ``materials`` attribute), ``"scan_index"`` (``(n, 2)`` int: the (y, x) of each
  image), ``"mask"`` (``(rows, cols)`` bool bad-pixel mask of the detector, or None when the scan
  has none) or any variable produced by an earlier stage (``(n, ...)`` arrays). Images the scan
  marks invalid are never passed to stages (the pipeline fills their outputs);
- ``outputs``: :class:`Variable` records (name, extra dims after ``(y, x)``, dtype, fill value,
  units, description) — they become the variables of the results store;
- ``params``: parameter defaults (a workflow may override any of them, nothing else);
- ``dim_sizes``: ``{dim: int | parameter name}`` for the extra dims the stage introduces
  (``{"peak": "max_peaks"}``, ``{"i3": 3}``);
- ``status``: optional ``outputs -> (n,) int8`` giving a per-image status code (0 = fine), see
  :data:`STATUS_CODES`;
- ``resources``: Dask resources a task running this stage needs (``{"GPU": 1}``).

Example — a later stage plugs in with one call (in its own module or a workflow ``plugins:``
module)::

    register_stage(StageSpec(
        name="descriptors", func="laueflow.stages.descriptors:describe_spots",
        inputs={"images": "images", "peak_col": "peak_col", "peak_row": "peak_row"},
        outputs=(Variable("peak_similarity", ("peak",), "float32", float("nan"), "1", "CNN score"),),
        params={"model": "spot-cnn-v1", "batch_size": 4096}, resources={"GPU": 1}))

Models: :func:`cached_model` loads a model once per worker process, keyed by the model file's
SHA-256 (so a changed file reloads, an unchanged one never does).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

__all__ = [
    "Variable",
    "StageSpec",
    "STATUS_CODES",
    "BATCH_KEYS",
    "register_stage",
    "get_stage",
    "registered_stages",
    "resolve_callable",
    "cached_model",
    "file_sha256",
]

#: per-image status codes of the results store (``status`` variable). First non-zero wins, in
#: stage order; new stages add codes here (never renumber: results stores keep them).
STATUS_CODES: dict[int, str] = {
    0: "ok",
    1: "invalid_input",  # the scan marks the image invalid (missing, unreadable, …): fill values
    2: "no_peaks",  # the peak stage found no peak
    3: "not_indexed",  # reserved for the indexing stage
}

#: batch keys the pipeline always provides (besides earlier stages' outputs)
BATCH_KEYS = ("images", "calibration", "materials", "scan_index", "mask")


@dataclass(frozen=True)
class Variable:
    """One output variable of a stage, stored as ``(y, x, *dims)`` in the results store."""

    name: str
    dims: tuple[str, ...]
    dtype: str
    fill_value: Any
    units: str = ""
    description: str = ""

    def __post_init__(self):
        object.__setattr__(self, "dims", tuple(self.dims))
        dtype = np.dtype(self.dtype)
        object.__setattr__(self, "dtype", dtype.name)
        if dtype.kind in "iu" and (self.fill_value is None or isinstance(self.fill_value, float)):
            raise ValueError(f"{self.name}: integer variables need an integer fill value")

    def attrs(self) -> dict:
        """Attributes written next to the variable in the results store."""
        out = {"units": self.units, "description": self.description}
        fill = self.fill_value
        if not (isinstance(fill, float) and math.isnan(fill)):
            out["fill_value"] = fill.item() if hasattr(fill, "item") else fill
        return out


@dataclass(frozen=True)
class StageSpec:
    """Declaration of a stage (see the module docstring)."""

    name: str
    func: Callable | str
    inputs: Mapping[str, str]
    outputs: tuple[Variable, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    dim_sizes: Mapping[str, int | str] = field(default_factory=dict)
    status: Callable[[dict], np.ndarray] | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    description: str = ""
    #: like ``inputs``, but passed as ``None`` when no earlier stage produced them
    optional_inputs: Mapping[str, str] = field(default_factory=dict)
    #: driver-side hook, run once per ``laueflow run`` before tasks are submitted:
    #: ``prepare(params, context) -> params`` (e.g. train or locate a model once, not per worker);
    #: ``context`` holds ``calibration``, ``materials`` and ``log``. A callable or "module:function".
    prepare: Callable | str | None = None

    def __post_init__(self):
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "inputs", dict(self.inputs))
        object.__setattr__(self, "optional_inputs", dict(self.optional_inputs))
        object.__setattr__(self, "params", dict(self.params))
        names = [v.name for v in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"stage {self.name!r} declares an output twice: {names}")

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.outputs)

    def resolved_dim_sizes(self, params: Mapping[str, Any]) -> dict[str, int]:
        """Sizes of the dims this stage introduces, given its (merged) parameters."""
        sizes = {}
        for dim, size in self.dim_sizes.items():
            sizes[dim] = int(params[size]) if isinstance(size, str) else int(size)
        return sizes

    def function(self) -> Callable:
        return resolve_callable(self.func)

    def prepared_params(self, params: Mapping[str, Any], context: Mapping[str, Any]) -> dict:
        """Parameters for the tasks after the driver-side ``prepare`` hook (if any)."""
        if self.prepare is None:
            return dict(params)
        return dict(resolve_callable(self.prepare)(dict(params), dict(context)))

    def __call__(self, batch: Mapping[str, Any], params: Mapping[str, Any]) -> dict:
        """Run on a batch: pick the declared inputs, call, check and cast the declared outputs."""
        kwargs = {arg: batch[key] for arg, key in self.inputs.items()}
        kwargs.update({arg: batch.get(key) for arg, key in self.optional_inputs.items()})
        result = self.function()(**kwargs, **params)
        missing = [name for name in self.output_names if name not in result]
        if missing:
            raise RuntimeError(f"stage {self.name!r} did not return {missing}")
        out = {}
        for var in self.outputs:
            out[var.name] = _to_host(result[var.name]).astype(var.dtype, copy=False)
        return out


def _to_host(array):
    from ..backend import to_numpy

    return to_numpy(array)


_REGISTRY: dict[str, StageSpec] = {}
_LOCK = threading.Lock()


def register_stage(spec: StageSpec, *, replace: bool = False) -> StageSpec:
    """Add a stage to the registry under ``spec.name`` (``replace=True`` to override one)."""
    with _LOCK:
        if spec.name in _REGISTRY and not replace and _REGISTRY[spec.name] != spec:
            raise ValueError(f"a stage named {spec.name!r} is already registered")
        _REGISTRY[spec.name] = spec
    return spec


#: modules that declare the built-in stages beyond peaks/angles (imported on first registry use;
#: their declarations are light: heavy code loads only when a stage runs)
BUILTIN_STAGE_MODULES = (
    "laueflow.stages.descriptors",
    "laueflow.stages.indexing",
    "laueflow.stages.strain.stage",
)
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_STAGE_MODULES:
            importlib.import_module(module)


def get_stage(name: str) -> StageSpec:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown stage {name!r} (registered stages: {known})") from None


def registered_stages() -> dict[str, StageSpec]:
    _load_builtins()
    return dict(_REGISTRY)


@functools.lru_cache(maxsize=None)
def resolve_callable(ref: Callable | str) -> Callable:
    """``"package.module:function"`` → the function (callables pass through)."""
    if callable(ref):
        return ref
    module_name, _, attr = str(ref).partition(":")
    if not attr:
        raise ValueError(f"stage function reference {ref!r} must look like 'module:function'")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


# --------------------------------------------------------------------------- model cache
@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, computed once per (path, size, mtime) in this process."""
    st = os.stat(path)
    return _file_sha256(os.fspath(path), st.st_size, st.st_mtime_ns)


_MODELS: dict[tuple, Any] = {}
_MODEL_LOCK = threading.Lock()


def cached_model(loader: Callable[[str], Any], path: str | os.PathLike, *, key: str | None = None):
    """Load a model once per process: ``loader(path)`` cached under the file's SHA-256.

    Stages call this instead of loading weights themselves; on a Dask worker the module-level
    cache lives as long as the worker process, so each model loads once per worker, not per task.
    ``key`` overrides the hash (e.g. a model name already hashed upstream).
    """
    cache_key = (getattr(loader, "__module__", ""), getattr(loader, "__qualname__", repr(loader)),
                 key or file_sha256(path))
    with _MODEL_LOCK:
        if cache_key not in _MODELS:
            _MODELS[cache_key] = loader(os.fspath(path))
        return _MODELS[cache_key]


def clear_model_cache() -> None:
    with _MODEL_LOCK:
        _MODELS.clear()


# --------------------------------------------------------------------------- built-in stages
NAN = float("nan")


def _peak_status(outputs: dict) -> np.ndarray:
    return np.where(outputs["peak_count"] == 0, 2, 0).astype(np.int8)


def _peak_outputs() -> tuple[Variable, ...]:
    return (
        Variable("peak_count", (), "int32", -1, "1", "number of peaks found (-1: image not processed)"),
        Variable("peak_col", ("peak",), "float32", NAN, "px", "centroid column, 0-based pixel coordinates"),
        Variable("peak_row", ("peak",), "float32", NAN, "px", "centroid row, 0-based pixel coordinates"),
        Variable("peak_col_int", ("peak",), "int32", -1, "px", "column of the local maximum"),
        Variable("peak_row_int", ("peak",), "int32", -1, "px", "row of the local maximum"),
        Variable("peak_intensity", ("peak",), "float32", NAN, "counts", "peak height above background"),
        Variable("peak_integrated_intensity", ("peak",), "float32", NAN, "counts",
                 "background-subtracted sum over the integration box"),
        Variable("peak_background", ("peak",), "float32", NAN, "counts", "local background level"),
        Variable("peak_noise", ("peak",), "float32", NAN, "counts", "local noise sigma"),
    )


PEAKS = register_stage(StageSpec(
    name="peaks",
    func="laueflow.stages.peaks:find_peaks",
    inputs={"images": "images"},
    optional_inputs={"mask": "mask"},
    outputs=_peak_outputs(),
    params={"threshold_sigma": 6.0, "threshold_counts": None, "min_distance_px": 3,
            "box_size_px": 5, "max_peaks": 500},
    dim_sizes={"peak": "max_peaks"},
    status=_peak_status,
    description="local-maximum peak search with centroid refinement",
))

ANGLES = register_stage(StageSpec(
    name="angles",
    func="laueflow.stages.angles:peak_angles",
    inputs={"peak_col": "peak_col", "peak_row": "peak_row", "calibration": "calibration"},
    outputs=(
        Variable("peak_two_theta", ("peak",), "float32", NAN, "deg", "scattering angle 2θ of the peak"),
        Variable("peak_chi", ("peak",), "float32", NAN, "deg", "azimuth χ of the peak (LaueTools)"),
    ),
    description="pixel → (2θ, χ) with the scan's detector calibration",
))
