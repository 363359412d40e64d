"""Driver-side preparation of the ``index`` stage: find or train the LaueNN model once per run.

Without it every Dask worker would resolve (and possibly train) the model in its first task.
"""
from __future__ import annotations

from .training import IndexerConfig, get_indexer, model_path, resolve_materials

__all__ = ["prepare_index"]


def prepare_index(params: dict, context: dict) -> dict:
    """Set ``params["model"]`` to the cached model file, training it first when allowed."""
    if params.get("model"):
        return params
    materials = context.get("materials")
    calibration = context.get("calibration")
    if not materials:
        raise ValueError("the 'index' stage needs the scan's materials: ingest with --material NAME "
                         "(or give the stage a 'model' path)")
    if calibration is None:
        raise ValueError("the 'index' stage needs the scan's calibration: ingest with --calibration FILE.det")
    config = IndexerConfig.from_dict(params.get("indexer_config") or {})
    resolved = resolve_materials(materials, config.extinction_rule)
    get_indexer(resolved, calibration, config, cache_dir=params.get("cache_dir"),
                train=bool(params.get("train_if_missing", True)), log=context.get("log") or print)
    path = model_path(resolved, calibration, config, params.get("cache_dir"))
    return {**params, "model": str(path)}
