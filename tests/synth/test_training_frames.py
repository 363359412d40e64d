"""Autoencoder training images: the fast block means equal those of fully rendered frames."""
import numpy as np

from laueflow.kernels.downsample import block_means, preprocess_frames
from laueflow.synth.scan import plan_scan
from laueflow.synth.training_frames import (HELD_OUT_MATERIAL, TRAINING_MATERIALS, _background_terms,
                                            fast_block_means, random_scan_parameters, scan_images)


def test_fast_block_means_match_rendered_frames():
    """Same noiseless content (spots incl. saturation, halo, offsets); independent noise of the
    same size: the difference has mean ≈ 0 and the σ of two independent block-mean noises."""
    plan = plan_scan(material="GaN", shape=(1, 3), grains=3, seed=3, substrate="Si")  # saturated Si spots
    mask = np.zeros(plan.calibration.frame_shape, bool)
    mask.reshape(-1)[plan.dead_pixels] = True
    frames = np.stack([plan.render(i) for i in range(3)])
    assert (frames == 65535).any()
    diff = block_means(frames, mask) - fast_block_means(plan, range(3))
    sigma = _background_terms(plan, 128)[2]
    expected = np.sqrt(2 * np.mean(sigma ** 2))  # measured 0.28 vs 0.27
    assert abs(diff.mean()) < 0.02
    assert 0.9 * expected < diff.std() < 1.2 * expected
    assert np.abs(diff).max() < 10 * expected
    fast = scan_images(plan)
    full = preprocess_frames(frames, mask)
    assert fast.shape == full.shape == (3, 128, 128)
    assert np.abs(fast - full).mean() < 0.015 and np.corrcoef(fast.ravel(), full.ravel())[0, 1] > 0.95


def test_random_scans_are_varied_and_leave_out_the_held_out_material():
    params = [random_scan_parameters(np.random.default_rng([s, 11]), s) for s in range(40)]
    assert HELD_OUT_MATERIAL not in TRAINING_MATERIALS
    assert all(p.material in TRAINING_MATERIALS and p.second_phase != HELD_OUT_MATERIAL for p in params)
    assert len({p.material for p in params}) >= 8 and len({p.grains for p in params}) >= 6
    assert any(p.twin_fraction > 0 for p in params) and any(p.substrate for p in params)


def test_scored_scans_have_known_grain_maps_with_several_domains():
    from laueflow.synth.training_frames import scored_scans

    scans = scored_scans(range(6000, 6010), count=2, shape=(6, 6))
    assert len(scans) == 2
    for name, (images, truth) in scans.items():
        material, seed = name.split()
        assert material in TRAINING_MATERIALS and 6000 <= int(seed) < 6010
        assert images.shape == (36, 128, 128) and truth.shape == (36,)
        assert len(np.unique(truth)) >= 3
        params = random_scan_parameters(np.random.default_rng([int(seed), 11]), int(seed), shape=(6, 6))
        np.testing.assert_array_equal(truth, plan_scan(params).micro.grain_map.reshape(-1))
    assert scored_scans(range(6000, 6010), count=2, shape=(6, 6), min_domains=10 ** 6) == {}
