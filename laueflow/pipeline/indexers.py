"""The LaueNN model cache: find a trained indexer for (materials, calibration, configuration) or
train it once; the ``lauenn-indexer`` model kind of :mod:`laueflow.pipeline.models`.

Cache directory: argument ``cache_dir``, else ``$LAUEFLOW_CACHE/indexers``, else
``~/.cache/laueflow/indexers``; one file per model, ``lauenn-<materials>-<hash16>.pt``
(:mod:`laueflow.io.indexer_files`). The driver resolves (and if needed trains) the model once per
run; workers only load the file.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..io.indexer_files import load_indexer, save_indexer
from ..physics.geometry import Calibration
from ..stages.indexing.stage import model_to_scan_materials
from ..stages.indexing.training import (Indexer, IndexerConfig, model_hash, resolve_materials,
                                        train_indexer)

__all__ = ["IndexerNotTrainedError", "default_cache_dir", "model_path", "get_indexer",
           "check_index_model", "resolve_index_model"]


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


def _inputs(params: dict, context: dict):
    materials, calibration = context.get("materials"), context.get("calibration")
    if not materials:
        raise ValueError("the 'index' stage needs the scan's materials: ingest with --material NAME "
                         "(or give the stage a 'model' path)")
    if calibration is None:
        raise ValueError("the 'index' stage needs the scan's calibration: ingest with --calibration FILE.det")
    given = params.get("indexer_config") or {}
    config = IndexerConfig.from_dict(given)
    caps = params.get("max_grains_per_material")
    if caps is not None and given.get("max_grains") is None:  # train for the mix that is searched
        config = replace(config, max_grains=tuple(max(1, int(c)) for c in caps))
    mats = resolve_materials(materials, config.extinction_rule)
    _check_caps(caps, mats)
    return mats, calibration, config


def _check_caps(caps, scan_materials) -> None:
    """``max_grains_per_material``: one cap per scan material, in the scan's order (the index stage
    reorders them for a pinned model whose material order differs)."""
    if caps is None:
        return
    names = [m.name for m in scan_materials]
    if len(caps) != len(names):
        raise ValueError(f"max_grains_per_material has {len(caps)} value(s) {list(caps)} for the scan's "
                         f"{len(names)} material(s) {names}: give one integer ≥ 0 per material, in that order")


def _check_band(params: dict, model: Indexer, path) -> None:
    """A pinned model must have been trained for the workflow's energy band (written into
    ``indexer_config`` by the workflow reader)."""
    band = (params.get("indexer_config") or {}).get("energy_band_kev")
    if band is not None and tuple(float(e) for e in band) != tuple(float(e) for e in model.config.energy_band_kev):
        raise ValueError(f"the pinned indexer model {path} was trained for the energy band "
                         f"{list(model.config.energy_band_kev)} keV, the workflow's energy_band_kev is "
                         f"{list(band)}; set the workflow's energy_band_kev to the model's band or set model: null")


def check_index_model(params: dict, context: dict) -> None:
    """Validate phase: the given model file exists, or the cached one does / may be trained."""
    if params.get("model"):
        path = Path(params["model"]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"indexer model {path} does not exist; train one with "
                                    "`laueflow train indexer --material NAME --out FILE.pt` or set model: null")
        pinned = load_indexer(path)
        _check_band(params, pinned, path)
        if context.get("materials"):  # a pinned model must know exactly the scan's materials
            scan = resolve_materials(context["materials"])
            model_to_scan_materials(pinned.materials, scan)
            _check_caps(params.get("max_grains_per_material"), scan)
        return
    materials, calibration, config = _inputs(params, context)
    path = model_path(materials, calibration, config, params.get("cache_dir"))
    if not path.exists() and not params.get("train_if_missing", True):
        raise IndexerNotTrainedError(
            f"no trained indexer for materials {[m.name for m in materials]} with this calibration "
            f"(expected {path}) and train_if_missing is false; run `laueflow train indexer "
            + " ".join(f"--material {m.name}" for m in materials) + " --calibration FILE.det`")


def resolve_index_model(params: dict, context: dict) -> Path:
    """Prepare phase: the model file — the given one, the cached one, or trained once now."""
    if params.get("model"):
        return Path(params["model"]).expanduser()
    materials, calibration, config = _inputs(params, context)
    indexer = get_indexer(materials, calibration, config, cache_dir=params.get("cache_dir"),
                          train=bool(params.get("train_if_missing", True)), log=context.get("log") or print)
    return Path(indexer.path)
