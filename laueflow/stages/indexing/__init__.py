"""LaueNN-style indexing: features, classes, training data, training, orientations, matching.

:data:`STAGE` declares the built-in pipeline stage ``index`` (the registry reads it on first use).
``max_grains_per_material`` (one integer ≥ 0 per scan material, scan order) caps the grains per
material and image, and is the default ``indexer_config.max_grains`` of a trained model; the
energy band comes from the workflow (``laueflow.pipeline.workflow``: one band for index and strain).
Its ``model`` parameter names an indexer file (null: the pipeline finds the cached model for the
scan's materials and calibration, or trains it once on the driver —
:mod:`laueflow.pipeline.indexers`; files: :mod:`laueflow.io.indexer_files`); the stage receives
the loaded :class:`~.training.Indexer`. Heavy dependencies (torch) load only when the stage runs.
See ``docs/indexing.md``.

Modules
-------
- :mod:`.classes` — hkl-family classes (Laue-group symmetry, harmonics merged, fingerprint merge)
- :mod:`.training_data` — vectorised multi-grain simulated patterns with corruption
- :mod:`.training` — :class:`IndexerConfig`, :func:`train_indexer`, :class:`Indexer`
- :mod:`.matching` — batched candidate scoring, refinement, U from two spots
- :mod:`.orientation` — :func:`find_grains` (one image)
- :mod:`.stage` — :func:`index_peaks` (arrays in/out), :func:`index_stage` (pipeline entry)
- :mod:`.evaluate` — :func:`evaluate_indexing` (vs truth)
"""
from __future__ import annotations

import numpy as np

from ..base import StageSpec, Variable

__all__ = ["STAGE", "index_status", "check_params"]

NAN = float("nan")


def index_status(outputs: dict) -> np.ndarray:
    """Status code 3 (``not_indexed``) where no grain was found."""
    return np.where(np.asarray(outputs["grain_count"]) == 0, 3, 0).astype(np.int8)


def check_params(params) -> None:
    """Impossible indexing parameters → ``ValueError``."""
    if not isinstance(params["max_grains"], int) or params["max_grains"] < 1:
        raise ValueError(f"max_grains must be an integer ≥ 1, got {params['max_grains']!r}")
    for name in ("angle_tolerance_deg", "match_tolerance_deg", "max_residual_deg"):
        if not params[name] > 0:
            raise ValueError(f"{name} must be > 0 degrees, got {params[name]!r}")
    for name in ("mr_accept", "mr_min"):
        if not 0 <= params[name] <= 100:
            raise ValueError(f"{name} is a matching rate in %, 0–100; got {params[name]!r}")
    if params["mr_min"] > params["mr_accept"]:
        raise ValueError(f"mr_min ({params['mr_min']}) must not exceed mr_accept ({params['mr_accept']})")
    if not 0 <= params["confidence_threshold"] <= 1:
        raise ValueError(f"confidence_threshold must be in [0, 1], got {params['confidence_threshold']!r}")
    if not isinstance(params.get("pseudo_symmetry", True), bool):
        raise ValueError(f"pseudo_symmetry must be true or false, got {params['pseudo_symmetry']!r}")
    if not 0 <= params["max_overlap"] <= 1:
        raise ValueError(f"max_overlap must be a fraction in [0, 1], got {params['max_overlap']!r}")
    if not isinstance(params["min_matched"], int) or params["min_matched"] < 2:
        raise ValueError(f"min_matched must be an integer ≥ 2, got {params['min_matched']!r}")
    caps = params.get("max_grains_per_material")
    if caps is not None:  # its length is checked against the scan's materials when the run is validated
        if (not isinstance(caps, (list, tuple)) or not caps
                or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in caps)):
            raise ValueError("max_grains_per_material must be a list with one integer ≥ 0 per scan material "
                             f"(in the scan's order), e.g. [3, 1]; got {caps!r}")
        if not any(caps):
            raise ValueError(f"max_grains_per_material allows no grain at all ({list(caps)}); "
                             "give at least one material a cap ≥ 1")


STAGE = StageSpec(
    name="index",
    func="laueflow.stages.indexing.stage:index_stage",
    inputs={"peak_two_theta": "peak_two_theta", "peak_chi": "peak_chi", "peak_intensity": "peak_intensity",
            "calibration": "calibration", "materials": "materials"},
    outputs=(
        Variable("hkl", ("peak", "i3"), "int32", 0, "1", "Miller indices of the peak (0 0 0: not indexed)"),
        Variable("peak_material", ("peak",), "int16", -1, "1", "material index of the peak's grain (-1: none)"),
        Variable("peak_grain", ("peak",), "int16", -1, "1", "grain index of the peak (-1: none)"),
        Variable("grain_count", (), "int16", 0, "1", "number of grains indexed"),
        Variable("grain_material", ("grain",), "int16", -1, "1", "material index of the grain"),
        Variable("orientation_matrix", ("grain", "i3", "j3"), "float64", NAN, "1",
                 "UB (LaueTools: q_lab = UB·B0·hkl)"),
        Variable("euler_angles", ("grain", "i3"), "float64", NAN, "deg", "Bunge Euler angles of UB"),
        Variable("matching_rate", ("grain",), "float32", NAN, "%", "matched / simulated spots"),
        Variable("matched_spots", ("grain",), "int32", 0, "1", "measured spots matched"),
        Variable("mean_residual_deg", ("grain",), "float32", NAN, "deg", "mean angular residual of matches"),
        Variable("variant_ambiguous", ("grain",), "int8", 0, "1",
                 "1: a pseudo-symmetric variant predicting the same spot positions (e.g. quartz's Dauphiné "
                 "twin) fits as well; intensities absent or not decisive, the orientation may be that variant"),
        Variable("n_seed_spots", (), "int32", 0, "1",
                 "spots that could start a grain (got a class prediction: n_predict or more)"),
    ),
    params={"model": None, "cache_dir": None, "train_if_missing": True, "max_grains": 5,
            "max_grains_per_material": None,  # [n per scan material]: grain caps per image (null: max_grains)
            "confidence_threshold": 0.5, "angle_tolerance_deg": 0.6, "match_tolerance_deg": 0.5,
            "mr_accept": 50.0, "mr_min": 25.0, "min_matched": 8, "max_residual_deg": 0.35,
            "max_overlap": 1.0, "pseudo_symmetry": True, "use_previous": False, "indexer_config": None, "device": "auto"},
    dim_sizes={"grain": "max_grains", "i3": 3, "j3": 3},
    models={"model": "lauenn-indexer"},
    check=check_params,
    status=index_status,
    status_codes={3: "not_indexed"},
    description="LaueNN hkl-family prediction + orientation matrices from spot pairs, matching-rate validation",
)
