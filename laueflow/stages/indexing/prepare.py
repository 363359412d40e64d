"""Driver-side preparation of the ``index`` stage: find or train the LaueNN model once per run.

Without it every Dask worker would resolve (and possibly train) the model in its first task.
"""
from __future__ import annotations

from .training import IndexerConfig, get_indexer, model_path, resolve_materials

__all__ = ["prepare_index"]


def _names(materials):
    if isinstance(materials, str):
        return [materials]
    return [m if isinstance(m, str) else (m.get("name") if isinstance(m, dict) else getattr(m, "name", m))
            for m in materials or []]


def prepare_index(params: dict, context: dict) -> dict:
    """Set ``params["model"]`` to the cached model file, training it first when allowed."""
    if params.get("model"):
        return params
    names = _names(context.get("materials"))
    calibration = context.get("calibration")
    if not names:
        raise ValueError("the 'index' stage needs the scan's materials: ingest with --material NAME "
                         "(or give the stage a 'model' path)")
    if calibration is None:
        raise ValueError("the 'index' stage needs the scan's calibration: ingest with --calibration FILE.det")
    config = IndexerConfig.from_dict(params.get("indexer_config") or {})
    log = context.get("log") or print
    get_indexer(names, calibration, config, cache_dir=params.get("cache_dir"),
                train=bool(params.get("train_if_missing", True)), log=log)
    path = model_path(resolve_materials(names, config.extinction_rule), calibration, config, params.get("cache_dir"))
    return {**params, "model": str(path)}
