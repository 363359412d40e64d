"""The stage contract: what a science step declares so the pipeline can run it.

A *stage* is one batched science step (find peaks, compute angles, index, refine strain …). Its
:class:`StageSpec` is the **one** place where what it needs and what it produces is declared; the
pipeline builds the results store, the tasks and the validation from it, and the stage function
allocates its outputs from it (:meth:`StageSpec.empty_outputs`).

Two kinds:

- ``kind="map"``: a plain function on numpy (or cupy) arrays for a batch of ``n`` images of one
  tile; it never opens a file, never imports Dask and never decides where it runs.
- ``kind="reduce"``: a scan-wide step run once after every tile is done. It receives the earlier
  outputs it declares as **lazy dask arrays** read from the results store, the Dask ``client`` and
  a ``writer`` (:class:`laueflow.pipeline.reduce.ReduceWriter`) through which it writes its
  outputs region by region; it uses NumPy functions on the lazy arrays (they dispatch to
  ``dask.array``) and computes only what it needs. See ``docs/design.md``.

Fields of :class:`StageSpec`:

- ``func``: the function (or a lazy ``"module:function"`` reference);
- ``inputs`` / ``optional_inputs``: ``{argument: batch key}``; a batch key is one of
  :data:`BATCH_KEYS` (``images (n, rows, cols)`` uint16, ``calibration``, ``materials`` (the scan's
  ``materials`` attribute: names or material records), ``scan_index (n, 2)``, ``mask (rows, cols)``
  bool or None, ``monitor (n,)`` each image's incident-intensity monitor over the scan's median, or
  None) or any variable an earlier stage produces; optional ones are None when absent;
- ``outputs``: :class:`Variable` records — the variables of the results store;
- ``params``: parameter defaults (a workflow may override any of them, nothing else); a stage
  that can use a GPU has a ``device`` parameter (``auto | cpu | cuda``, see :data:`DEVICES`);
- ``check``: ``check(params)`` raises ``ValueError`` for impossible values (run before any
  store is created or any worker is used); ``check_scan``: ``check_scan(params, scan)`` raises
  ``ValueError`` when the scan cannot give the stage what it needs (``scan``: ``{"n_points",
  "n_valid", "has_monitor"}``, the scan's points, those its ingest read, and whether it has a
  monitor; e.g. more principal components than points), run at the same time;
- ``models``: ``{parameter: model kind}``: parameters that name model files; the pipeline resolves
  the file on the driver (training it if needed) and hands the stage the *loaded* model, once per
  worker process (:mod:`laueflow.pipeline.models`);
- ``dim_sizes``: ``{dim: int | parameter name}`` for the extra dims the stage introduces;
- ``status`` + ``status_codes``: optional ``outputs -> (n,) int8`` per-image code (0 = fine) and
  the codes it may return, ``{code: name}`` (one table per results store, :func:`status_table`);
  the first non-zero code of a chain stays, except ``warning_codes`` (a subset: the image is
  still fine, e.g. ``peaks_truncated``), which a later stage's failure code replaces;
- ``resources``: extra Dask resources its tasks need (``{"GPU": 1}`` is added automatically for a
  stage whose ``device`` resolves to CUDA).

Example — a plug-in stage is one call (in a workflow ``plugins:`` module)::

    register_stage(StageSpec(
        name="spot_sum", func=spot_sum, inputs={"peak_intensity": "peak_intensity"},
        outputs=(Variable("spot_sum", (), "float32", float("nan"), "counts", "Σ peak heights"),)))
"""
from __future__ import annotations

import functools
import importlib
import math
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ..backend import to_numpy

__all__ = [
    "Variable",
    "StageSpec",
    "STATUS_CODES",
    "combine_status",
    "warning_codes",
    "BATCH_KEYS",
    "DEVICES",
    "STAGE_KINDS",
    "StageOverrideWarning",
    "register_stage",
    "get_stage",
    "registered_stages",
    "resolve_callable",
    "status_table",
]

#: per-image status codes every results store has; stages add theirs in ``status_codes``.
#: First non-zero wins, in stage order. Never renumber: results stores keep them.
STATUS_CODES: dict[int, str] = {
    0: "ok",
    1: "invalid_input",  # the scan marks the image invalid (missing, unreadable, …): fill values
}

#: batch keys the pipeline always provides (besides earlier stages' outputs)
BATCH_KEYS = ("images", "calibration", "materials", "scan_index", "mask", "monitor")

#: values of a stage's ``device`` parameter: ``auto`` = the worker's GPU when the cluster offers
#: the ``GPU`` resource (the stage then runs on GPU workers), else the CPU
DEVICES = ("auto", "cpu", "cuda")

STAGE_KINDS = ("map", "reduce")


class StageOverrideWarning(UserWarning):
    """A plug-in replaced a built-in stage (on purpose, with ``replace=True``)."""


@dataclass(frozen=True)
class Variable:
    """One output variable of a stage.

    Stored as ``(y, x, *dims)`` in the results store (``per_point``), or as ``dims`` alone for a
    scan-wide result of a reduce stage (``per_point=False``).
    """

    name: str
    dims: tuple[str, ...]
    dtype: str
    fill_value: Any
    units: str = ""
    description: str = ""
    per_point: bool = True

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

    def full(self, leading: tuple[int, ...], dim_sizes: Mapping[str, int]) -> np.ndarray:
        """A new array ``(*leading, *dims)`` filled with the fill value."""
        shape = (*leading, *(int(dim_sizes[d]) for d in self.dims))
        return np.full(shape, self.fill_value, dtype=self.dtype)


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
    optional_inputs: Mapping[str, str] = field(default_factory=dict)
    #: optional driver-side hook, once per run before tasks: ``prepare(params, context) -> params``
    #: (``context``: ``calibration``, ``materials``, ``log``); a callable or "module:function"
    prepare: Callable | str | None = None
    kind: str = "map"
    check: Callable[[Mapping[str, Any]], None] | None = None
    check_scan: Callable[[Mapping[str, Any], Mapping[str, int]], None] | str | None = None
    models: Mapping[str, str] = field(default_factory=dict)
    status_codes: Mapping[int, str] = field(default_factory=dict)
    warning_codes: frozenset = frozenset()

    def __post_init__(self):
        for name in ("inputs", "optional_inputs", "params", "dim_sizes", "resources", "models",
                     "status_codes"):
            object.__setattr__(self, name, dict(getattr(self, name)))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        names = [v.name for v in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"stage {self.name!r} declares an output twice: {names}")
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"stage {self.name!r}: kind must be one of {STAGE_KINDS}, got {self.kind!r}")
        if self.kind == "map" and any(not v.per_point for v in self.outputs):
            raise ValueError(f"map stage {self.name!r}: every output is per point (y, x, …)")
        missing = [p for p in self.models if p not in self.params]
        if missing:
            raise ValueError(f"stage {self.name!r}: model parameters {missing} need a default in params")
        clash = set(self.status_codes) & set(STATUS_CODES)
        if clash:
            raise ValueError(f"stage {self.name!r}: status codes {sorted(clash)} are reserved")
        object.__setattr__(self, "warning_codes", frozenset(self.warning_codes))
        if not self.warning_codes <= set(self.status_codes):
            raise ValueError(f"stage {self.name!r}: warning_codes {sorted(self.warning_codes)} must be among "
                             f"its status_codes {sorted(self.status_codes)}")

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.outputs)

    @property
    def uses_device(self) -> bool:
        """The stage can run on a GPU (it has a ``device`` parameter)."""
        return "device" in self.params

    def resolved_dim_sizes(self, params: Mapping[str, Any]) -> dict[str, int]:
        """Sizes of the dims this stage introduces, given its (merged) parameters."""
        return {dim: int(params[size]) if isinstance(size, str) else int(size)
                for dim, size in self.dim_sizes.items()}

    def empty_outputs(self, n: int, params: Mapping[str, Any], **other_dims: int) -> dict[str, np.ndarray]:
        """Every per-point output ``(n, *dims)`` filled with its fill value (the stage fills it).

        ``other_dims``: sizes of dims that earlier stages introduce (e.g. ``peak=500``).
        """
        sizes = {**other_dims, **self.resolved_dim_sizes(params)}
        return {v.name: v.full((n,), sizes) for v in self.outputs if v.per_point}

    def validate_params(self, params: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` (naming the stage) for impossible parameter values."""
        try:
            if self.uses_device and params.get("device") not in DEVICES:
                raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {params.get('device')!r}")
            if self.check is not None:
                resolve_callable(self.check)(params)
            for dim, size in self.resolved_dim_sizes(params).items():
                if size < 1:
                    raise ValueError(f"dimension {dim!r} must have size ≥ 1, got {size}")
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"stage {self.name!r}: {err}") from None

    def validate_for_scan(self, params: Mapping[str, Any], scan: Mapping[str, int]) -> None:
        """Raise ``ValueError`` (naming the stage) when the scan (``{"n_points", "n_valid",
        "has_monitor"}``) cannot give the stage what it needs."""
        if self.check_scan is None:
            return
        try:
            resolve_callable(self.check_scan)(params, scan)
        except ValueError as err:
            raise ValueError(f"stage {self.name!r}: {err}") from None

    def function(self) -> Callable:
        return resolve_callable(self.func)

    def prepared_params(self, params: Mapping[str, Any], context: Mapping[str, Any]) -> dict:
        """Parameters for the tasks after the driver-side ``prepare`` hook (if any)."""
        if self.prepare is None:
            return dict(params)
        return dict(resolve_callable(self.prepare)(dict(params), dict(context)))

    def __call__(self, batch: Mapping[str, Any], params: Mapping[str, Any]) -> dict:
        """Run a map stage on a batch: pick the inputs, call, check and cast the outputs."""
        kwargs = {arg: batch[key] for arg, key in self.inputs.items()}
        kwargs.update({arg: batch.get(key) for arg, key in self.optional_inputs.items()})
        result = self.function()(**kwargs, **params)
        missing = [name for name in self.output_names if name not in result]
        if missing:
            raise RuntimeError(f"stage {self.name!r} did not return {missing}")
        return {var.name: to_numpy(result[var.name]).astype(var.dtype, copy=False)
                for var in self.outputs}


def combine_status(earlier: np.ndarray, codes: np.ndarray, warnings) -> np.ndarray:
    """Per-image status after a stage: the first failure stays; a warning code (``warnings``:
    codes of any stage's ``warning_codes``) gives way to a later non-zero code."""
    earlier = np.asarray(earlier)
    replace = (earlier == 0) | (np.isin(earlier, list(warnings)) & (np.asarray(codes) != 0))
    return np.where(replace, codes, earlier).astype(earlier.dtype)


def warning_codes() -> frozenset:
    """The warning status codes of every registered stage (codes are unique across stages)."""
    return frozenset().union(*(spec.warning_codes for spec in registered_stages().values()))


def status_table(specs) -> dict[int, str]:
    """The per-image status codes of a results store written by ``specs`` (one table)."""
    table = dict(STATUS_CODES)
    for spec in specs:
        for code, name in spec.status_codes.items():
            if table.get(code, name) != name:
                raise ValueError(f"status code {code} means {table[code]!r} and {name!r} "
                                 f"(stage {spec.name!r}); give the stage another code")
            table[code] = name
    return dict(sorted(table.items()))


# --------------------------------------------------------------------------- registry
#: the built-in stages: ``"module:STAGE"`` references, imported on first registry use (their
#: modules are light: heavy code such as torch loads only when a stage runs)
BUILTIN_STAGES = (
    "laueflow.stages.peaks:STAGE",
    "laueflow.stages.angles:STAGE",
    "laueflow.stages.descriptors:STAGE",
    "laueflow.stages.indexing:STAGE",
    "laueflow.stages.strain:STAGE",
    "laueflow.stages.summary:STAGE",
    "laueflow.stages.features:STAGE",
    "laueflow.stages.segmentation:STAGE",
    "laueflow.stages.delegates:SELECT_STAGE",
    "laueflow.stages.delegates:MAP_STAGE",
    "laueflow.stages.phase_groups:STAGE",
)

_REGISTRY: dict[str, StageSpec] = {}
_BUILTIN_NAMES: set[str] = set()
_LOCK = threading.RLock()
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    with _LOCK:
        if _builtins_loaded:
            return
        _builtins_loaded = True
        for ref in BUILTIN_STAGES:
            spec = resolve_callable(ref, allow_objects=True)
            _REGISTRY.setdefault(spec.name, spec)
            _BUILTIN_NAMES.add(spec.name)


def register_stage(spec: StageSpec, *, replace: bool = False) -> StageSpec:
    """Add a stage to the registry under ``spec.name``.

    Registering a name that exists is an error unless ``replace=True``; replacing a built-in
    stage warns (:class:`StageOverrideWarning`) so the override is never silent.
    """
    _load_builtins()
    with _LOCK:
        old = _REGISTRY.get(spec.name)
        if old is not None and old != spec:
            if not replace:
                raise ValueError(f"a stage named {spec.name!r} is already registered; pass "
                                 "replace=True to override it on purpose, or choose another name")
            if spec.name in _BUILTIN_NAMES:
                warnings.warn(f"stage {spec.name!r} ({_origin(spec)}) replaces the built-in stage "
                              f"{spec.name!r} ({_origin(old)})", StageOverrideWarning, stacklevel=2)
        _REGISTRY[spec.name] = spec
    return spec


def unregister_stage(name: str) -> None:
    """Remove a plug-in stage (a built-in comes back as it was); for tests and notebooks."""
    _load_builtins()
    with _LOCK:
        _REGISTRY.pop(name, None)
        if name in _BUILTIN_NAMES:
            for ref in BUILTIN_STAGES:
                spec = resolve_callable(ref, allow_objects=True)
                if spec.name == name:
                    _REGISTRY[name] = spec


def _origin(spec: StageSpec) -> str:
    func = spec.func
    return func if isinstance(func, str) else f"{func.__module__}:{func.__qualname__}"


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
def resolve_callable(ref: Callable | str, allow_objects: bool = False) -> Callable:
    """``"package.module:function"`` → the function (callables pass through)."""
    if callable(ref):
        return ref
    module_name, _, attr = str(ref).partition(":")
    if not attr:
        raise ValueError(f"reference {ref!r} must look like 'module:function'")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not allow_objects and not callable(obj):
        raise ValueError(f"{ref!r} is not callable")
    return obj
