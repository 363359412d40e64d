"""Whole synthetic scans: spots on the brightest pixels, determinism, truth store, CLI."""
import numpy as np
import pytest

from laueflow.cli.main import main
from laueflow.synth.scan import plan_scan, simulate_scan

SMALL = dict(material="Cu", shape=(2, 3), grains=3, step_um=1.0)


@pytest.fixture(scope="module")
def plan():
    return plan_scan(seed=5, twin_fraction=0.5, deep_grains=1, **SMALL)


def test_spots_on_brightest_pixels(plan):
    s = plan.spots
    index = 4
    image = plan.render(index).astype(float)
    here = np.flatnonzero(s.y * 3 + s.x == index)
    col, row = s.col[here], s.row[here]
    dist = np.hypot(col[:, None] - col[None], row[:, None] - row[None])
    np.fill_diagonal(dist, np.inf)
    # isolated: no other truth spot with > 2 % of its amplitude within 10 px
    neighbours = (dist < 10) & (s.amplitude[here][None, :] > 0.02 * s.amplitude[here][:, None])
    ok = (s.quality[here] == 0) & (s.amplitude[here] > 30 * s.noise_sigma[here]) & ~neighbours.any(axis=1)
    assert ok.sum() >= 10
    for c, r in zip(col[ok], row[ok]):
        ic, ir = int(np.rint(c)), int(np.rint(r))
        r0, c0 = max(ir - 2, 0), max(ic - 2, 0)
        win = image[r0 : ir + 3, c0 : ic + 3]
        br, bc = np.unravel_index(np.argmax(win), win.shape)
        assert abs(br + r0 - ir) <= 1 and abs(bc + c0 - ic) <= 1, (c, r)
    # truth amplitude = height above the local background
    top = np.argmax(np.where(ok, s.amplitude[here], 0))
    ic, ir = int(np.rint(col[top])), int(np.rint(row[top]))
    peak = image[ir - 1 : ir + 2, ic - 1 : ic + 2].max() - s.background[here][top]
    assert 0.6 < peak / s.amplitude[here][top] < 1.1


def test_realistic_pixels_and_spots(plan):
    image = plan.render(0)
    assert image.dtype == np.uint16 and image.shape == (2018, 2016)
    p1, p50 = np.percentile(image, [1, 50])
    assert 990 <= p1 <= 1030 and 1000 <= p50 <= 1160
    assert (image == 0).sum() >= 1  # dead pixels
    s = plan.spots
    assert np.percentile(s.sigma_major[s.quality == 0], 50) < 1.6
    assert s.amplitude.max() > 10_000 and np.percentile(s.amplitude, 5) < 100
    assert set(np.unique(s.quality)) >= {0, 1, 2, 3}


def test_determinism_by_seed(plan):
    again = plan_scan(seed=5, twin_fraction=0.5, deep_grains=1, **SMALL)
    other = plan_scan(seed=6, twin_fraction=0.5, deep_grains=1, **SMALL)
    assert np.array_equal(again.render(2), plan.render(2))
    assert np.array_equal(again.spots.col, plan.spots.col)
    assert np.array_equal(again.micro.orientation_matrix, plan.micro.orientation_matrix, equal_nan=True)
    assert not np.array_equal(other.render(2), plan.render(2))
    assert len(other.spots) != len(plan.spots) or not np.array_equal(other.spots.col, plan.spots.col)


DOCUMENTED = [
    "grain_id", "grain_weight", "orientation_matrix", "deviatoric_strain", "grain_material", "grain_map",
    "spot_y", "spot_x", "spot_grain", "spot_h", "spot_k", "spot_l", "spot_energy_kev", "spot_two_theta",
    "spot_chi", "spot_col", "spot_row", "spot_amplitude", "spot_noise_sigma", "spot_sigma_major",
    "spot_sigma_minor", "spot_quality", "spot_material",
]


def test_simulate_scan_writes_truth_and_images(tmp_path):
    import tifffile
    import xarray as xr

    out = tmp_path / "scan"
    summary = simulate_scan(out, seed=2, substrate="Si", progress=False, prefix="cu", **SMALL)
    assert summary["images"] == 6
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == [f"cu_{i:04d}.tif" for i in range(6)]
    assert (out / "calib.det").is_file()
    ds = xr.open_zarr(out / "truth.zarr")
    assert ds.attrs["truth_format_version"] == 1
    for name in DOCUMENTED:
        assert name in ds, name
    assert set(ds.grain_id.dims) == {"y", "x", "grain_slot"}
    assert ds.orientation_matrix.dims == ("y", "x", "grain_slot", "i3", "j3")
    assert ds.attrs["materials"] == ["Cu", "Si"]
    assert ds.attrs["calibration"]["frame_shape"] == [2018, 2016]
    assert ds.attrs["seed"] == 2 and ds.attrs["step_um"] == 1.0
    assert (ds.grain_material.values[..., -1] == 1).all()  # Si substrate everywhere
    assert ds.spot_quality.dtype == np.int8
    image = tifffile.imread(out / "images" / "cu_0004.tif")
    assert image.dtype == np.uint16 and image.shape == (2018, 2016)
    from laueflow.io.detfile import read_det

    assert read_det(out / "calib.det").frame_shape == (2018, 2016)
    # the bad-pixel mask marks exactly the dead pixels (zero in every image)
    mask = tifffile.imread(out / "mask.tif")
    assert mask.shape == (2018, 2016) and mask.dtype == np.uint8
    rows, cols = np.nonzero(mask)
    assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(map(tuple, ds.attrs["background"]["dead_pixels_row_col"]))
    assert (image[mask == 1] == 0).all()


def test_cli_help_and_overwrite(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["simulate", "--help"])
    assert err.value.code == 0
    assert "laueflow simulate --material Cu --grains 12 --shape 20x20 --out demo/" in capsys.readouterr().out
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    args = ["simulate", "--grains", "2", "--shape", "1x2", "--out", str(out), "--quiet"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert not (out / "truth.zarr").exists()
    assert main(args + ["--overwrite"]) == 0
    assert (out / "truth.zarr").is_dir() and (out / "keep.txt").is_file()
    with pytest.raises(SystemExit) as err:  # argparse rejects a malformed shape
        main(["simulate", "--shape", "2by2", "--out", str(tmp_path / "x")])
    assert err.value.code == 2


def test_cli_bad_input(tmp_path, capsys):
    assert main(["simulate", "--material", "Unobtainium", "--shape", "1x1", "--out", str(tmp_path / "a")]) == 2
    assert "unknown material" in capsys.readouterr().err
    assert main(["simulate", "--grains", "0", "--out", str(tmp_path / "b")]) == 2
