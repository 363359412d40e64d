"""Workflow files (YAML): what to run on which scan, validated with messages that say how to fix.

Schema (see ``docs/workflow.md``)::

    input: scan.zarr                 # scan store written by `laueflow ingest` (required)
    output: results.zarr             # results store (required unless `run --output`)
    images_per_task: 8               # images per Dask task = results chunk (default 8)
    chunk: [2, 4]                    # …or an explicit (y, x) chunk; overrides images_per_task
    cluster: ../cluster-configs/local.yaml   # optional; `run --cluster/--scheduler` override
    plugins: [mypackage.stages]      # optional: modules imported to register extra stages
    energy_band_kev: [5, 23]         # optional: the one energy band (index training + strain)
    stages:                          # in order; a name, or {name: {parameter: value}}
      - peaks: {threshold_sigma: 5.0, max_peaks: 300}
      - angles

Relative paths are relative to the workflow file.

Phases (:func:`workflow_steps`): every map stage without ``points`` runs in the first map phase,
on every point; then, in workflow order, each reduce stage and each *late map phase*: consecutive
map stages with the reserved key ``points: VARIABLE`` (a boolean per-point output of an earlier
reduce stage), run only on the points where it is true.
"""
from __future__ import annotations

import copy
import difflib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..stages.base import BATCH_KEYS, StageSpec, get_stage, registered_stages

__all__ = ["WorkflowError", "StageConfig", "Workflow", "Step", "workflow_steps", "load_workflow",
           "parse_workflow", "DEFAULT_IMAGES_PER_TASK", "POINTS_KEY"]

DEFAULT_IMAGES_PER_TASK = 8

#: the reserved stage key of a map stage that runs only on selected points (a late map phase)
POINTS_KEY = "points"

_TOP_KEYS: dict[str, tuple] = {
    "input": (str,),
    "output": (str,),
    "images_per_task": (int,),
    "chunk": (list,),
    "cluster": (str,),
    "plugins": (list,),
    "stages": (list,),
    "materials_file": (str,),
    "energy_band_kev": (list,),
}


class WorkflowError(ValueError):
    """An invalid workflow (the message names the file, the key and the fix)."""


@dataclass
class StageConfig:
    """One stage of a workflow with its merged parameters (defaults + overrides)."""

    name: str
    params: dict
    points: str | None = None  # map stages: run only where this reduce output is true (late phase)

    @property
    def spec(self) -> StageSpec:
        return get_stage(self.name)

    def to_dict(self) -> dict:
        params = _jsonable(self.params)
        return {self.name: params if self.points is None else {**params, POINTS_KEY: self.points}}


@dataclass
class Step:
    """One step of a run, in execution order: a map phase (``phase`` 1: every point; 2, 3 …:
    late phases on the points where the reduce output ``points`` is true) or one reduce stage."""

    kind: str  # "map" | "reduce"
    stages: list
    phase: int = 0  # map phases only
    points: str | None = None

    @property
    def names(self) -> str:
        return ", ".join(s.name for s in self.stages)


def workflow_steps(stages: list[StageConfig]) -> list[Step]:
    """The run's steps in execution order: map phase 1 (every map stage without ``points``), then
    in workflow order each reduce stage and each late map phase (consecutive map stages with the
    same ``points``, no reduce stage between them; map stages of phase 1 listed between them do
    not split a late phase)."""
    first = [s for s in stages if s.spec.kind == "map" and s.points is None]
    steps = [Step("map", first, 1)] if first else []
    late, phase = None, 1
    for stage in stages:
        if stage.spec.kind == "reduce":
            steps.append(Step("reduce", [stage]))
            late = None
        elif stage.points is not None:
            if late is not None and late.points == stage.points:
                late.stages.append(stage)
            else:
                phase += 1
                late = Step("map", [stage], phase, stage.points)
                steps.append(late)
    return steps


@dataclass
class Workflow:
    input: Path
    output: Path | None
    stages: list[StageConfig]
    images_per_task: int = DEFAULT_IMAGES_PER_TASK
    chunk: tuple[int, int] | None = None
    cluster: Path | None = None
    plugins: list[str] = field(default_factory=list)
    source: Path | None = None
    materials_file: Path | None = None  # the scan's materials must be defined there identically
    energy_band_kev: tuple | None = None  # the band of the index and strain stages (see _energy_band)

    def to_dict(self) -> dict:
        """The full resolved config (written to the results store's attributes)."""
        return {
            "input": str(self.input),
            "output": str(self.output) if self.output else None,
            "images_per_task": self.images_per_task,
            "chunk": list(self.chunk) if self.chunk else None,
            "cluster": str(self.cluster) if self.cluster else None,
            "plugins": list(self.plugins),
            "stages": [s.to_dict() for s in self.stages],
            "source": str(self.source) if self.source else None,
            "materials_file": str(self.materials_file) if self.materials_file else None,
            "energy_band_kev": list(self.energy_band_kev) if self.energy_band_kev else None,
        }

    def stage_dim_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for stage in self.stages:
            for dim, size in stage.spec.resolved_dim_sizes(stage.params).items():
                if dim in sizes and sizes[dim] != size:
                    raise WorkflowError(f"dimension {dim!r} has size {sizes[dim]} and {size} in "
                                        f"different stages; make the parameters agree")
                sizes[dim] = size
        return sizes


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def _where(source) -> str:
    return f"{source}: " if source else "workflow: "


def _type_name(types) -> str:
    names = {"str": "a string", "int": "an integer", "list": "a list", "dict": "a mapping",
             "float": "a number", "bool": "true/false"}
    return " or ".join(names.get(t.__name__, t.__name__) for t in types)


def _did_you_mean(word, options) -> str:
    hint = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def import_plugins(plugins) -> None:
    """Import plug-in modules (they register their stages on import)."""
    for name in plugins:
        importlib.import_module(name)


def load_workflow(path: str | os.PathLike, *, output: str | os.PathLike | None = None,
                  check_input: bool = True) -> Workflow:
    """Read and validate a workflow YAML file (``output`` overrides its ``output:``)."""
    path = Path(path)
    if not path.is_file():
        raise WorkflowError(f"workflow file {path} does not exist (see workflows/demo.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise WorkflowError(f"{path}: not valid YAML: {err}") from None
    return parse_workflow(data, base_dir=path.parent, source=path, output=output,
                          check_input=check_input)


def parse_workflow(data: Any, *, base_dir: str | os.PathLike = ".", source=None,
                   output: str | os.PathLike | None = None, check_input: bool = True) -> Workflow:
    """Validate a workflow mapping; see the module docstring for the schema."""
    where = _where(source)
    if not isinstance(data, dict):
        raise WorkflowError(f"{where}the workflow must be a YAML mapping with keys "
                            f"{', '.join(_TOP_KEYS)}; got {type(data).__name__}")
    data = copy.deepcopy(data)
    for key, value in data.items():
        if key not in _TOP_KEYS:
            raise WorkflowError(f"{where}unknown key {key!r}{_did_you_mean(key, _TOP_KEYS)}; "
                                f"allowed keys: {', '.join(_TOP_KEYS)}")
        types = _TOP_KEYS[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise WorkflowError(f"{where}{key!r} must be {_type_name(types)}, got {value!r}")
    base_dir = Path(base_dir)

    def resolve(p) -> Path:
        p = Path(os.path.expanduser(p))
        return p if p.is_absolute() else base_dir / p

    if "input" not in data:
        raise WorkflowError(f"{where}missing 'input:' (the scan store written by `laueflow ingest`)")
    input_path = resolve(data["input"])
    if check_input:
        check_scan_store(input_path, where)

    if output is not None:
        output_path = Path(output)
    elif "output" in data:
        output_path = resolve(data["output"])
    else:
        raise WorkflowError(f"{where}missing 'output:' (where to write results.zarr), "
                            "or pass `laueflow run --output results.zarr`")

    images_per_task = data.get("images_per_task", DEFAULT_IMAGES_PER_TASK)
    if images_per_task < 1:
        raise WorkflowError(f"{where}'images_per_task' must be ≥ 1, got {images_per_task}")
    chunk = data.get("chunk")
    if chunk is not None:
        if len(chunk) != 2 or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1
                                      for c in chunk):
            raise WorkflowError(f"{where}'chunk' must be two positive integers [y, x], got {chunk!r}")
        chunk = (int(chunk[0]), int(chunk[1]))

    plugins = data.get("plugins", [])
    for name in plugins:
        if not isinstance(name, str):
            raise WorkflowError(f"{where}'plugins' must list module names, got {name!r}")
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise WorkflowError(f"{where}plugin module {name!r} cannot be imported ({err}); "
                                "install it or fix PYTHONPATH") from None

    if "stages" not in data or not data["stages"]:
        raise WorkflowError(f"{where}'stages' is missing or empty; e.g. `stages: [peaks, angles]`")
    stages = [_parse_stage(item, i, where) for i, item in enumerate(data["stages"])]
    _check_stage_inputs(stages, where)
    energy_band = _energy_band(data, stages, where)

    cluster = resolve(data["cluster"]) if "cluster" in data else None
    materials_file = resolve(data["materials_file"]) if "materials_file" in data else None
    if materials_file is not None and not materials_file.is_file():
        raise WorkflowError(f"{where}materials_file {materials_file} does not exist; fix 'materials_file:'")
    workflow = Workflow(input_path, output_path, stages, int(images_per_task), chunk, cluster,
                        list(plugins), Path(source) if source else None, materials_file,
                        energy_band_kev=energy_band)
    workflow.stage_dim_sizes()  # dims agree across stages
    return workflow


#: where the energy band may be given, as named in messages: workflow key → (stage, parameter path)
_BAND_KEYS = {"energy_band_kev": (None, ()),
              "index: indexer_config: energy_band_kev": ("index", ("indexer_config", "energy_band_kev")),
              "strain: energy_band_kev": ("strain", ("energy_band_kev",))}


def _energy_band(data: dict, stages: list[StageConfig], where) -> tuple[float, float] | None:
    """The workflow's one energy band (keV), used to train the indexer and by the strain stage.

    It may be given as the top-level ``energy_band_kev``, the index stage's
    ``indexer_config: {energy_band_kev: …}`` or the strain stage's ``energy_band_kev`` (null by
    default); all that are given must be equal (else :class:`WorkflowError` naming them), none
    given = the simulator's default. The band is written into both stages' parameters (the
    indexer's cache key and the strain simulation then use the same band). None without either
    stage."""
    from ..physics.simulate import DEFAULT_ENERGY_BAND_KEV  # deferred: the CLI imports this module for --help

    by_name = {s.name: s for s in stages}
    given = {}
    for key, (stage, path) in _BAND_KEYS.items():
        value = data.get(key) if stage is None else (by_name[stage].params if stage in by_name else None)
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            continue
        if not (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
                and 0 < value[0] < value[1]):
            raise WorkflowError(f"{where}{key!r} must be [low, high] in keV with 0 < low < high, got {value!r}")
        given[key] = (float(value[0]), float(value[1]))
    if len(set(given.values())) > 1:
        listed = " and ".join(f"{key!r} = {list(value)}" for key, value in given.items())
        raise WorkflowError(f"{where}the energy band is given more than once, with different values: {listed}; "
                            "the indexer must be trained for the band the strain stage simulates — give it once, "
                            "as the top-level `energy_band_kev: [low, high]`")
    if "index" not in by_name and "strain" not in by_name:
        return next(iter(given.values()), None)
    band = next(iter(given.values()), tuple(float(e) for e in DEFAULT_ENERGY_BAND_KEV))
    if "index" in by_name:
        index = by_name["index"].params
        config = index.get("indexer_config")
        if config is not None and not isinstance(config, dict):
            raise WorkflowError(f"{where}stage 'index': indexer_config must be a mapping of IndexerConfig "
                                f"fields, got {config!r}")
        index["indexer_config"] = {**(config or {}), "energy_band_kev": list(band)}
    if "strain" in by_name:
        by_name["strain"].params["energy_band_kev"] = list(band)
    return band


def _parse_stage(item, index, where) -> StageConfig:
    if isinstance(item, str):
        name, overrides = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        (name, overrides), = item.items()
        overrides = overrides or {}
        if not isinstance(overrides, dict):
            raise WorkflowError(f"{where}stage {name!r}: parameters must be a mapping "
                                f"(`- {name}: {{param: value}}`), got {overrides!r}")
    else:
        raise WorkflowError(f"{where}stages[{index}] must be a stage name or "
                            f"`{{name: {{param: value}}}}`, got {item!r}")
    overrides = dict(overrides)
    points = overrides.pop(POINTS_KEY, None)
    registry = registered_stages()
    if name not in registry:
        raise WorkflowError(f"{where}unknown stage {name!r}{_did_you_mean(name, registry)}; "
                            f"registered stages: {', '.join(sorted(registry))} "
                            "(stages from other packages need `plugins: [module]`)")
    spec = registry[name]
    params = dict(spec.params)
    for key, value in overrides.items():
        if key not in spec.params:
            raise WorkflowError(f"{where}stage {name!r}: unknown parameter {key!r}"
                                f"{_did_you_mean(key, spec.params)}; parameters: "
                                f"{', '.join(spec.params) or 'none'}")
        default = spec.params[key]
        if default is not None and value is not None and not _same_kind(default, value):
            raise WorkflowError(f"{where}stage {name!r}: parameter {key!r} must be "
                                f"{type(default).__name__} like its default {default!r}, got {value!r}")
        params[key] = value
    try:  # impossible values (ranges, choices, devices) stop the workflow here, before any cluster
        spec.validate_params(params)
    except ValueError as err:
        raise WorkflowError(f"{where}{err}; fix it under `stages:` in the workflow") from None
    if points is not None:
        if spec.kind != "map":
            raise WorkflowError(f"{where}stage {name!r}: `{POINTS_KEY}:` selects the points of a map stage; "
                                f"{name!r} is a reduce stage (it runs once on the whole scan): remove it")
        if not isinstance(points, str) or not points:
            raise WorkflowError(f"{where}stage {name!r}: `{POINTS_KEY}:` must name a boolean per-point output "
                                f"of an earlier reduce stage (e.g. `{POINTS_KEY}: selected_points`), got {points!r}")
    return StageConfig(name, params, points)


def _same_kind(default, value) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and (isinstance(default, float) or isinstance(value, int))
    return isinstance(value, type(default))


def _check_stage_inputs(stages: list[StageConfig], where) -> None:
    """Every stage's inputs come from the pipeline or an earlier stage, and the phases can run
    (:func:`workflow_steps`): a map stage of the first phase reads only the scan and other
    first-phase outputs; a map stage with ``points`` reads those, the outputs of earlier late
    phases and the per-point outputs of earlier reduce stages, and its ``points`` is a boolean
    per-point output of an earlier reduce stage; reduce stages never read images."""
    from_map: set[str] = set()  # first map phase
    from_late: dict[str, StageConfig] = {}  # late map phases: output → its stage
    from_reduce: dict[str, Any] = {}  # output → Variable
    reduce_stage: dict[str, str] = {}
    seen_names: set[str] = set()
    producers: dict[str, str] = {}
    for name, spec in registered_stages().items():
        for out in spec.output_names:
            producers.setdefault(out, name)
    if stages and not any(s.spec.kind == "map" and s.points is None for s in stages):
        raise WorkflowError(f"{where}every map stage has `{POINTS_KEY}:`; the first map phase (every point) "
                            "needs at least one map stage without it (the reduce stage that selects the points "
                            "needs its outputs)")
    for stage in stages:
        if stage.name in seen_names:
            raise WorkflowError(f"{where}stage {stage.name!r} is listed twice")
        seen_names.add(stage.name)
        spec = stage.spec
        if spec.kind == "map" and stage.points is not None:
            _check_points(stage, from_map, from_late, from_reduce, where)
            per_point_reduce = {k for k, v in from_reduce.items() if v.per_point}
            available = set(BATCH_KEYS) | from_map | set(from_late) | per_point_reduce
        elif spec.kind == "map":
            available = set(BATCH_KEYS) | from_map
        else:
            available = from_map | set(from_late) | set(from_reduce)
        for key in [*spec.inputs.values(), *spec.optional_inputs.values()]:
            required = key in spec.inputs.values()
            if key in available or not (required or key in from_reduce or key in from_late):
                continue
            _input_error(stage, key, from_late, from_reduce, reduce_stage, producers, where)
        for out in spec.outputs:
            if out.name in from_map | set(from_late) | set(from_reduce) or out.name in BATCH_KEYS:
                raise WorkflowError(f"{where}stage {stage.name!r} produces {out.name!r}, "
                                    "which an earlier stage already produces")
            if spec.kind == "reduce":
                from_reduce[out.name], reduce_stage[out.name] = out, stage.name
            elif stage.points is not None:
                from_late[out.name] = stage
            else:
                from_map.add(out.name)


def _check_points(stage: StageConfig, from_map, from_late, from_reduce, where) -> None:
    """``points`` names a boolean per-point output (no extra dims) of an earlier reduce stage."""
    points = stage.points
    fix = f"; `{POINTS_KEY}:` names a boolean per-point output of an earlier reduce stage (e.g. selected_points " \
          "of select_delegates)"
    if points in from_map or points in from_late:
        raise WorkflowError(f"{where}stage {stage.name!r}: {POINTS_KEY} {points!r} is the output of a map stage, "
                            f"not of a reduce stage{fix}")
    if points not in from_reduce:
        raise WorkflowError(f"{where}stage {stage.name!r}: {POINTS_KEY} {points!r} is not written by any earlier "
                            f"reduce stage{fix}")
    var = from_reduce[points]
    if not var.per_point or var.dims or var.dtype != "bool":
        dims = ("y", "x", *var.dims) if var.per_point else var.dims
        raise WorkflowError(f"{where}stage {stage.name!r}: {POINTS_KEY} {points!r} is {var.dtype} with dims "
                            f"{dims}, not a boolean per-point (y, x) variable{fix}")


def _input_error(stage, key, from_late, from_reduce, reduce_stage, producers, where):
    spec = stage.spec
    if spec.kind == "reduce" and key in BATCH_KEYS:
        raise WorkflowError(f"{where}reduce stage {stage.name!r} needs {key!r}: reduce stages read "
                            "earlier outputs from the results store, not the scan")
    if key in from_reduce and stage.points is None:
        raise WorkflowError(f"{where}map stage {stage.name!r} needs {key!r}, the output of reduce stage "
                            f"{reduce_stage[key]!r}, which runs after the first map phase: give {stage.name!r} "
                            f"`{POINTS_KEY}: VARIABLE` (a boolean per-point output of {reduce_stage[key]!r} or a "
                            "later reduce stage) so that it runs in a late phase, after it")
    if key in from_reduce:
        raise WorkflowError(f"{where}map stage {stage.name!r} needs {key!r}, a scan-wide output of reduce stage "
                            f"{reduce_stage[key]!r}; map stages read per-point (y, x, …) variables only")
    if key in from_late:
        late = from_late[key]
        raise WorkflowError(f"{where}map stage {stage.name!r} needs {key!r}, the output of {late.name!r}, which "
                            f"runs only on the points of {late.points!r} after a reduce stage: give "
                            f"{stage.name!r} `{POINTS_KEY}: {late.points}` too")
    fix = (f"; add {producers[key]!r} before it" if key in producers
           else "; no registered stage produces it")
    raise WorkflowError(f"{where}stage {stage.name!r} needs {key!r}, which no earlier "
                        f"stage produces{fix}")


def check_scan_store(path: Path, where: str = "") -> None:
    """Fail early, clearly, if ``path`` is not a scan store with an ``images`` array."""
    if not path.exists():
        raise WorkflowError(f"{where}input scan store {path} does not exist; create it with "
                            "`laueflow ingest IMAGES/ --out scan.zarr` or fix 'input:'")
    import zarr  # deferred: the CLI imports this module for --help; zarr is heavy

    try:
        group = zarr.open_group(str(path), mode="r")
        images = group["images"]
    except Exception as err:  # noqa: BLE001 - any zarr failure means "not a scan store"
        raise WorkflowError(f"{where}{path} is not a laueflow scan store (no 'images' array: "
                            f"{err}); create it with `laueflow ingest`") from None
    if images.ndim != 4:
        raise WorkflowError(f"{where}{path}: 'images' must have dims (y, x, row, col), "
                            f"got shape {images.shape}")
