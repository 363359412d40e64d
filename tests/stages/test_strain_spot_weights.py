"""Which spots the strain stage fits (issue #12, deliverable 6): spots flagged bad by the
descriptors enter at their peak-search centroid with ``bad_spot_weight`` (default
``BAD_SPOT_WEIGHT``); 0 is the rule before (good spots only). On simulated real-like frames the
default keeps more spots and does not raise the strain error (measured at scale in
``benchmarks/bench_good_flag.py``)."""
from __future__ import annotations

import numpy as np
import pytest

from laueflow.io.model_files import load_spotcnn
from laueflow.physics.strain import strain_crystal_to_sample
from laueflow.stages.angles import peak_angles
from laueflow.stages.descriptors import describe_spots
from laueflow.stages.peaks import find_peaks
from laueflow.stages.strain import BAD_SPOT_WEIGHT, STAGE
from laueflow.stages.strain.stage import spot_weights, strain_stage
from laueflow.synth.scan import plan_scan

#: real-like frames as in benchmarks/bench_good_flag.py (faint spots, 20 % streaked/split/irregular)
REAL_LIKE = dict(material="Cu", grains=6, amplitude_median=600.0, amplitude_decades=0.75, bad_spot_fraction=0.2,
                 broad_spot_fraction=0.05, strain_magnitude=1e-3)


@pytest.fixture(scope="module")
def frames():
    """A 2 × 3 real-like Cu scan through peaks, angles and the shipped spot CNN."""
    plan = plan_scan(shape=(2, 3), seed=12345, **REAL_LIKE)
    images = np.stack([plan.render(i) for i in range(plan.n_images)])
    peaks = find_peaks(images)
    desc = describe_spots(images, peaks["peak_col_int"], peaks["peak_row_int"], peak_col=peaks["peak_col"],
                          peak_row=peaks["peak_row"], model=load_spotcnn())
    return plan, peaks, peak_angles(peaks["peak_col"], peaks["peak_row"], plan.calibration), desc


def _strain(frames, bad_spot_weight):
    """Refine every (point, grain) from its true orientation; (status, n_pairs, |Δε| (G, 6) sample frame)."""
    plan, peaks, ang, desc = frames
    m, n = plan.micro, plan.n_images
    gid = m.grain_id.reshape(n, -1)
    ub = np.where((gid >= 0)[..., None, None], m.orientation_matrix.reshape(n, -1, 3, 3), np.nan)
    gmat = np.where(gid >= 0, m.grain_material.reshape(n, -1), -1)
    out = strain_stage(ang["peak_two_theta"], ang["peak_chi"], peaks["peak_col"], peaks["peak_row"], ub, gmat,
                       plan.calibration, plan.materials, desc["spot_col"], desc["spot_row"], desc["spot_good"],
                       bad_spot_weight=bad_spot_weight, energy_band_kev=plan.params.energy_band_kev)
    img, slot = np.nonzero(gid >= 0)
    eps = m.deviatoric_strain.reshape(n, -1, 3, 3)
    lat = plan.materials[0].lattice_parameters
    err = np.stack([(out["strain_sample"][a, b] - strain_crystal_to_sample(eps[a, b], ub[a, b], lat))[np.triu_indices(3)]
                    for a, b in zip(img, slot)])
    return out["strain_status"][img, slot], out["strain_n_pairs"][img, slot], np.abs(err)


def test_default_keeps_bad_spots_at_their_centroid_and_strain_is_not_worse(frames):
    assert STAGE.params["bad_spot_weight"] == BAD_SPOT_WEIGHT > 0
    status_old, pairs_old, err_old = _strain(frames, 0.0)
    status_new, pairs_new, err_new = _strain(frames, BAD_SPOT_WEIGHT)
    ok_old, ok_new = status_old == 0, status_new == 0
    assert ok_old.sum() >= 10
    assert (ok_new | ~ok_old).all()                    # every grain refined before still is
    both = ok_old & ok_new
    assert pairs_new[both].mean() > 1.3 * pairs_old[both].mean()   # more spots per grain
    rms = lambda e: float(np.sqrt(np.mean(e[both] ** 2)))  # noqa: E731
    assert rms(err_new) <= 1.05 * rms(err_old), (rms(err_new), rms(err_old))
    assert float(np.sqrt(np.mean(err_new[ok_new] ** 2))) < 1e-4  # also on the grains only the new rule refines


def test_spot_weights_and_their_range():
    good = np.array([[True, False, True]])
    np.testing.assert_array_equal(spot_weights(good, 0.25), [[1.0, 0.25, 1.0]])
    np.testing.assert_array_equal(spot_weights(good, 0.0), [[1.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="bad_spot_weight must be"):
        spot_weights(good, 1.5)
    params = dict(STAGE.params, bad_spot_weight=-0.1)
    with pytest.raises(ValueError, match="bad_spot_weight must be a number in"):
        STAGE.check(params)

