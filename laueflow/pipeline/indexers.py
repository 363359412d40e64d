"""The LaueNN model cache: find a trained indexer for (materials, calibration, configuration) or
train it once, and the ``index`` stage's driver-side preparation.

Cache directory: argument ``cache_dir``, else ``$LAUEFLOW_CACHE/indexers``, else
``~/.cache/laueflow/indexers``; one file per model, ``lauenn-<materials>-<hash16>.pt``
(:mod:`laueflow.io.indexer_files`). Without :func:`prepare_index` every Dask worker would resolve
(and possibly train) the model in its first task; with it the driver does so once and the stage
receives the file path.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..io.indexer_files import load_indexer, save_indexer
from ..physics.geometry import Calibration
from ..stages.indexing.training import (Indexer, IndexerConfig, model_hash, resolve_materials,
                                        train_indexer)

__all__ = ["IndexerNotTrainedError", "default_cache_dir", "model_path", "get_indexer", "prepare_index"]


class IndexerNotTrainedError(LookupError):
    """No cached model for the requested materials/calibration and training was not allowed."""


def default_cache_dir() -> Path:
    """``$LAUEFLOW_CACHE/indexers`` when set, else ``~/.cache/laueflow/indexers``."""
    env = os.environ.get("LAUEFLOW_CACHE")
    if env:
        return Path(env).expanduser() / "indexers"
    return Path("~/.cache/laueflow/indexers").expanduser()


def model_path(materials, calibration: Calibration, config: IndexerConfig | None = None,
               cache_dir=None) -> Path:
    """Where the model for these inputs is (or would be) cached."""
    mats = resolve_materials(materials, (config or IndexerConfig()).extinction_rule)
    config = (config or IndexerConfig()).for_materials(len(mats))
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    return base / f"lauenn-{'-'.join(m.name for m in mats)}-{model_hash(mats, calibration, config)[:16]}.pt"


def get_indexer(materials, calibration: Calibration, config: IndexerConfig | None = None, *,
                cache_dir=None, train: bool = True, retrain: bool = False, verbose: bool = True,
                threads: int | None = None, log=print) -> Indexer:
    """The cached indexer for these inputs; trained (and stored) on demand when ``train``.

    Raises :class:`IndexerNotTrainedError` when no model is cached and ``train=False``.
    """
    config = config or IndexerConfig()
    mats = resolve_materials(materials, config.extinction_rule)
    path = model_path(mats, calibration, config, cache_dir)
    if path.exists() and not retrain:
        indexer = load_indexer(path)
        if verbose:
            log(f"indexer: loaded {path} (validation accuracy {100 * indexer.validation_accuracy:.3f} %)")
        return indexer
    if not train:
        raise IndexerNotTrainedError(
            f"no trained indexer for materials {[m.name for m in mats]} with this calibration and configuration "
            f"(expected {path}); run `laueflow train indexer " + " ".join(f"--material {m.name}" for m in mats)
            + " --calibration <file.det>` or allow training")
    indexer = train_indexer(mats, calibration, config, threads=threads, verbose=verbose, log=log)
    save_indexer(indexer, path)
    if verbose:
        log(f"indexer: saved {path}")
    return indexer


def prepare_index(params: dict, context: dict) -> dict:
    """Driver-side hook of the ``index`` stage: set ``params["model"]`` to the cached model file,
    training it first unless ``train_if_missing`` is false."""
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
    indexer = get_indexer(resolved, calibration, config, cache_dir=params.get("cache_dir"),
                          train=bool(params.get("train_if_missing", True)), log=context.get("log") or print)
    return {**params, "model": str(indexer.path)}
