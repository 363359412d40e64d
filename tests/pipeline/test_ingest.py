"""laueflow ingest: formats, bad inputs, overwrite refusal, idempotent re-run, xarray."""
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from ingest_helpers import quiet_ingest, write_tiffs
from laueflow.io.images import STATUS_CODES, file_index
from laueflow.pipeline.ingest import IngestError, ingest, plan_scan, scan_positions

SHAPE = (64, 80)


def _frame(k, dtype=np.uint16):
    rng = np.random.default_rng(k)
    img = 1000 + rng.integers(0, 20, SHAPE)
    img[10 + k % 30, 20] = 30000 + k  # a spot that tells frames apart
    return img.astype(dtype)


def _tiffs(folder: Path, n, prefix="img"):
    return write_tiffs(folder, n, _frame, prefix)


_ingest = quiet_ingest


def test_tiff_ingest_layout_and_xarray(tmp_path):
    import xarray as xr

    from dataclasses import replace

    from laueflow.physics.geometry import DEFAULT_CALIBRATION

    calibration = replace(DEFAULT_CALIBRATION, frame_shape=SHAPE)  # the detector's size is the images'
    src = _tiffs(tmp_path / "images", 6)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    summary = _ingest([src], tmp_path / "scan.zarr", shape=(2, 3), order="snake",
                      calibration=calibration, materials=["Si"], step_um=(0.5, 1.0))
    assert summary["counts"]["ok"] == 6 and summary["compression_ratio"] > 1
    g = zarr.open_group(str(tmp_path / "scan.zarr"), mode="r")
    images = g["images"]
    assert images.shape == (2, 3, *SHAPE) and images.dtype == np.uint16
    assert images.chunks == (1, 1, *SHAPE)
    assert tuple(images.metadata.dimension_names) == ("y", "x", "row", "col")
    # snake: index 3 is at (1, 2)
    np.testing.assert_array_equal(images[1, 2], _frame(3))
    np.testing.assert_array_equal(images[1, 0], _frame(5))
    assert g["valid"][...].all() and (g["status"][...] == 0).all()
    assert str(g["source_file"][1, 2]).endswith("img_0003.tif")
    assert g.attrs["calibration"]["distance_mm"] == DEFAULT_CALIBRATION.distance_mm
    assert g.attrs["materials"] == ["Si"] and g.attrs["step_um"] == [0.5, 1.0]
    assert g.attrs["frame_shape"] == list(SHAPE) and "laueflow_version" in g.attrs
    ds = xr.open_zarr(str(tmp_path / "scan.zarr"))
    assert ds["images"].dims == ("y", "x", "row", "col")
    assert ds["status"].dims == ("y", "x") and float(ds["x"][2]) == 2.0
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # inputs untouched


def test_edf_and_hdf5_bliss(tmp_path):
    import fabio
    import h5py

    edf = tmp_path / "edf"
    edf.mkdir()
    for k in range(4):
        fabio.edfimage.EdfImage(data=_frame(k)).write(str(edf / f"scan_{k + 10:04d}.edf"))
    _ingest([edf], tmp_path / "edf.zarr", shape=(2, 2))
    g = zarr.open_group(str(tmp_path / "edf.zarr"), mode="r")
    assert (g["status"][...] == 0).all()
    np.testing.assert_array_equal(g["images"][1, 1], _frame(3))

    h5 = tmp_path / "bliss.h5"
    with h5py.File(h5, "w") as f:
        f["entry_0000/measurement/data"] = np.stack([_frame(k) for k in range(4)])
    _ingest([h5], tmp_path / "h5.zarr", shape=(2, 2))
    g = zarr.open_group(str(tmp_path / "h5.zarr"), mode="r")
    np.testing.assert_array_equal(g["images"][1, 0], _frame(2))
    assert str(g["source_file"][1, 0]).endswith("bliss.h5::2")
    h5b = tmp_path / "bliss2.h5"
    with h5py.File(h5b, "w") as f:
        f["1.1/measurement/sCMOS"] = np.stack([_frame(k) for k in range(2)])
        f["1.1/instrument/other"] = np.zeros((2, 3))
    _ingest([h5b], tmp_path / "h5b.zarr", shape=(1, 2))
    g = zarr.open_group(str(tmp_path / "h5b.zarr"), mode="r")
    np.testing.assert_array_equal(g["images"][0, 1], _frame(1))


def test_bad_inputs_are_recorded_and_ingest_goes_on(tmp_path):
    src = _tiffs(tmp_path / "images", 9)
    (src / "img_0001.tif").write_bytes(b"this is not a tiff at all" * 10)        # unreadable
    good = (src / "img_0002.tif").read_bytes()
    (src / "img_0002.tif").write_bytes(good[: len(good) // 2])                 # truncated
    (src / "img_0003.tif").write_bytes(b"")                                    # zero-byte
    tifffile.imwrite(src / "img_0004.tif", np.ones((32, 80), np.uint16))       # wrong shape
    tifffile.imwrite(src / "img_0005.tif", _frame(5, np.float32))              # wrong dtype
    tifffile.imwrite(src / "img_0006.tif", np.zeros(SHAPE, np.uint16))         # all-zero
    (src / "img_0007.tif").unlink()                                            # missing
    summary = _ingest([src], tmp_path / "scan.zarr", shape=(3, 3), frame_shape=SHAPE, dtype=np.uint16)
    g = zarr.open_group(str(tmp_path / "scan.zarr"), mode="r")
    status = g["status"][...].ravel().tolist()
    assert status == [0, 2, 3, 3, 4, 5, 6, 1, 0]
    reasons = g["status_reason"][...].ravel()
    assert "zero-byte" in reasons[3] and reasons[0] == "" and reasons[7]
    assert g["valid"][...].ravel().tolist() == [s == 0 for s in status]
    assert summary["counts"] == {"ok": 2, "missing": 1, "unreadable": 1, "truncated": 2,
                                 "wrong shape": 1, "wrong dtype": 1, "all-zero": 1}
    assert g["status"].attrs["status_codes"]["6"] == STATUS_CODES[6]
    assert (g["images"][0, 1] == 0).all()


def test_overwrite_refusal_and_idempotent_rerun(tmp_path):
    src = _tiffs(tmp_path / "images", 4)
    out = tmp_path / "scan.zarr"
    (src / "img_0002.tif").unlink()
    s1 = _ingest([src], out, shape=(2, 2))
    assert s1["counts"]["ok"] == 3 and s1["counts"]["missing"] == 1
    s2 = _ingest([src], out, shape=(2, 2))  # nothing new: everything skipped
    assert s2["n_skipped"] == 3 and s2["n_written_now"] == 0 and s2["counts"]["ok"] == 3
    tifffile.imwrite(src / "img_0002.tif", _frame(2))  # the missing file arrives
    s3 = _ingest([src], out, shape=(2, 2))
    assert s3["n_written_now"] == 1 and s3["counts"]["ok"] == 4
    np.testing.assert_array_equal(zarr.open_array(str(out / "images"))[1, 0], _frame(2))
    with pytest.raises(IngestError, match=r"scan_shape: stored \[2, 2\], given \[1, 4\]"):
        _ingest([src], out, shape=(1, 4))
    other = _tiffs(tmp_path / "other", 4, prefix="b")
    with pytest.raises(IngestError, match="overwrite"):
        _ingest([other], out, shape=(2, 2))
    s4 = _ingest([other], out, shape=(2, 2), overwrite=True)
    assert s4["n_written_now"] == 4
    bogus = tmp_path / "bogus.zarr"
    bogus.mkdir()
    (bogus / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        _ingest([src], bogus, shape=(2, 2))
    assert (bogus / "keep.txt").exists()


def test_sharded_layout_and_index_list(tmp_path):
    src = _tiffs(tmp_path / "images", 6)
    _ingest([src], tmp_path / "sh.zarr", shape=(2, 3), layout="sharded", shard_x=3,
            compression="blosc")
    g = zarr.open_group(str(tmp_path / "sh.zarr"), mode="r")
    assert g["images"].shards == (1, 3, *SHAPE)
    np.testing.assert_array_equal(g["images"][1, 1], _frame(4))
    listing = tmp_path / "points.txt"
    listing.write_text("# iy ix path\n0 0 images/img_0005.tif\n1 1 images/img_0000.tif\n")
    _ingest([], tmp_path / "il.zarr", index_list=str(listing))
    g = zarr.open_group(str(tmp_path / "il.zarr"), mode="r")
    assert g["status"][...].tolist() == [[0, 1], [1, 0]]
    np.testing.assert_array_equal(g["images"][0, 0], _frame(5))


def test_scan_mapping_helpers(tmp_path):
    assert file_index("a/scan_b2_0012.tif") == 12 and file_index("x.edf") is None
    assert [scan_positions(k, (2, 3), "snake") for k in range(6)] == [
        (0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)]
    src = _tiffs(tmp_path / "images", 3)
    with pytest.raises(IngestError, match="outside"):
        plan_scan([src], shape=(1, 2))


def test_cli_with_local_cluster(tmp_path, capsys):
    from distributed import Client, LocalCluster

    from laueflow.cli.main import main

    src = _tiffs(tmp_path / "images", 4)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        rc = main(["ingest", str(src), "--out", str(tmp_path / "scan.zarr"), "--shape", "2x2",
                   "--scheduler", cluster.scheduler_address, "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "compression ratio" in out and "ok" in out
    g = zarr.open_group(str(tmp_path / "scan.zarr"), mode="r")
    np.testing.assert_array_equal(g["images"][1, 1], _frame(3))
    rc = main(["ingest", str(src), "--out", str(tmp_path / "scan2.zarr"), "--shape", "1x2",
               "--serial"])
    assert rc == 2  # index 2 outside a 1x2 scan: a user error
    with pytest.raises(SystemExit):
        main(["ingest", "--help"])
    assert "laueflow ingest" in capsys.readouterr().out


def test_mask_is_stored_checked_and_used_by_the_peak_search(tmp_path):
    from distributed import Client, LocalCluster

    from laueflow.physics.geometry import Calibration
    from laueflow.pipeline.run import run_workflow
    from laueflow.pipeline.workflow import parse_workflow

    src = tmp_path / "images"
    src.mkdir()
    for k in range(4):
        img = _frame(k)
        img[40:43, 60:63] = 20000  # a hot-pixel cluster, the same in every frame
        tifffile.imwrite(src / f"img_{k:04d}.tif", img)
    bad = np.zeros(SHAPE, np.uint8)
    bad[40:43, 60:63] = 1
    tifffile.imwrite(tmp_path / "mask.tif", bad)
    np.save(tmp_path / "wrong.npy", np.zeros((10, 10), bool))
    with pytest.raises(IngestError, match=r"mask has shape \(10, 10\) but the images are \(64, 80\)"):
        _ingest([src], tmp_path / "bad.zarr", shape=(2, 2), mask=tmp_path / "wrong.npy")
    with pytest.raises(IngestError, match="cannot read the mask"):
        _ingest([src], tmp_path / "bad.zarr", shape=(2, 2), mask=tmp_path / "missing.tif", overwrite=True)
    calibration = Calibration(70.0, 40.0, 32.0, 0.0, 0.0, 0.2, SHAPE)
    masked, plain = tmp_path / "masked.zarr", tmp_path / "plain.zarr"
    _ingest([src], masked, shape=(2, 2), calibration=calibration, mask=tmp_path / "mask.tif")
    _ingest([src], plain, shape=(2, 2), calibration=calibration)
    group = zarr.open_group(str(masked), mode="r")
    np.testing.assert_array_equal(group["mask"][...], bad.astype(bool))
    assert "mask" not in zarr.open_group(str(plain), mode="r")

    def peaks(scan):
        out = scan.with_name(scan.stem + "-results.zarr")
        wf = parse_workflow({"input": str(scan), "output": str(out), "images_per_task": 2,
                             "stages": [{"peaks": {"max_peaks": 8}}]})
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cl, \
                Client(cl) as client:
            run_workflow(wf, client, progress=False, log=lambda *a: None)
        res = zarr.open_group(str(out), mode="r")
        return np.asarray(res["peak_row_int"][...]), np.asarray(res["peak_col_int"][...])

    for scan, expect_hot in ((plain, True), (masked, False)):
        rows, cols = peaks(scan)
        hot = (np.abs(rows - 41) <= 1) & (np.abs(cols - 61) <= 1)
        assert hot.any(axis=-1).all() == expect_hot and hot.any(axis=-1).any() == expect_hot, scan
        # the real spot of every frame is found either way
        for k, (y, x) in enumerate(np.ndindex(2, 2)):
            assert ((rows[y, x] == 10 + k) & (cols[y, x] == 20)).any()
