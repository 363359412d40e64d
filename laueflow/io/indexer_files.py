"""LaueNN indexer files: one torch ``dict`` per model (``lauenn-<materials>-<hash16>.pt``).

Contents: format version, materials (name, lattice, space group, extinction rule), calibration,
:class:`~laueflow.stages.indexing.training.IndexerConfig`, class table, network shape and weights,
validation accuracy (overall and per grain count in ``history``), training time.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..physics.geometry import Calibration
from ..physics.materials import Material, get_material
from ..stages.indexing.classes import ClassTable
from ..stages.indexing.training import MODEL_FORMAT, Indexer, IndexerConfig

__all__ = ["save_indexer", "load_indexer"]

#: settings of format-1 files (written before these options existed)
_FORMAT1_DEFAULTS = {"smooth_bins": 0.0, "fresh_data": False, "precision": "float32"}


def save_indexer(indexer: Indexer, path) -> Path:
    """Write ``indexer`` to ``path`` atomically (concurrent readers never see half a file)."""
    import torch  # deferred: torch is heavy

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT,
        "materials": [{"name": m.name, "lattice_parameters": list(m.lattice_parameters),
                       "space_group": m.spacegroup.xhm(), "extinction_rule": m.extinction_rule,
                       "lauetools_extinction": m.lauetools_extinction} for m in indexer.materials],
        "calibration": indexer.calibration.to_dict(),
        "config": indexer.config.to_dict(),
        "classes": indexer.classes.to_dict(),
        "model_config": indexer.model.config(),
        "state_dict": indexer.model.state_dict(),
        "validation_accuracy": indexer.validation_accuracy,
        "train_seconds": indexer.train_seconds,
        "history": indexer.history,
        "log_prior_rank": None if indexer.log_prior_rank is None else np.asarray(indexer.log_prior_rank).tolist(),
        "log_prior_any": None if indexer.log_prior_any is None else np.asarray(indexer.log_prior_any).tolist(),
    }
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    indexer.path = path
    return path


def _material(entry: dict) -> Material:
    """The library material when it matches the stored lattice, else one rebuilt from the file."""
    try:
        mat = get_material(entry["name"], extinction_rule=entry["extinction_rule"])
        if tuple(round(x, 6) for x in mat.lattice_parameters) == tuple(round(x, 6) for x in entry["lattice_parameters"]):
            return mat
    except (KeyError, ValueError):
        pass
    return Material(entry["name"], tuple(entry["lattice_parameters"]), entry["space_group"],
                    lauetools_extinction=entry["lauetools_extinction"], extinction_rule=entry["extinction_rule"])


def load_indexer(path) -> Indexer:
    """Read a model written by :func:`save_indexer` (format 1 or 2)."""
    import torch  # deferred: torch is heavy

    from ..models.lauenn import LaueNN  # deferred: imports torch

    payload = torch.load(Path(path), map_location="cpu", weights_only=False)
    config = dict(payload["config"])
    if payload.get("format", 1) < 2:
        config = {**_FORMAT1_DEFAULTS, **config}
    config.setdefault("training_centres", "brightest")  # models stored before the option were trained so
    mc = payload["model_config"]
    model = LaueNN(mc["n_bins"], mc["n_classes"], tuple(mc["hidden"]), mc["dropout"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return Indexer([_material(m) for m in payload["materials"]], Calibration.from_dict(payload["calibration"]),
                   IndexerConfig.from_dict(config), ClassTable.from_dict(payload["classes"]), model,
                   payload["validation_accuracy"], payload["train_seconds"], payload.get("history", []), Path(path),
                   _array(payload.get("log_prior_rank")), _array(payload.get("log_prior_any")))


def _array(values):
    """float32 array of a stored list, or None (models stored without it)."""
    return None if values is None else np.asarray(values, dtype=np.float32)
