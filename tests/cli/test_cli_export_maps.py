"""`laueflow export --format ctf | csv | netcdf`: the whole map, one grain per point. The .ctf
file is read back by orix with the same orientations (< 0.01°), phases and positions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from orix import io as orix_io

import laueflow
import results_factory as rf
from laueflow.cli.main import main
from laueflow.pipeline.crystal_maps import to_crystal_map


@pytest.mark.parametrize("frame", ["sample", "lab"])
def test_ctf_round_trips_through_orix(results_store, tmp_path, frame):
    path, _ = results_store
    assert main(["export", str(path), "--format", "ctf", "--frame", frame, "--out", str(tmp_path)]) == 0
    loaded = orix_io.load(tmp_path / "laueflow.ctf")
    expected = to_crystal_map(laueflow.best_grain(laueflow.open_results(path)), frame=frame)
    assert loaded.shape == (rf.NY, rf.NX)
    indexed = expected.phase_id >= 0
    np.testing.assert_array_equal(loaded.phase_id, np.where(indexed, expected.phase_id + 1, -1))
    assert [loaded.phases[i].name for i in (1, 2)] == ["Cu", "GaN"]
    assert loaded.phases[2].point_group.name == "6/mmm"
    sym = {1: expected.phases[0].point_group, 2: expected.phases[1].point_group}
    for phase_id, symmetry in sym.items():
        here = loaded.phase_id == phase_id
        a = loaded.rotations[here]
        b = expected.rotations[here]
        from orix.quaternion import Orientation

        angle = np.rad2deg(Orientation(a.data, symmetry).angle_with(Orientation(b.data, symmetry)))
        assert angle.max() < 0.01, angle
    np.testing.assert_allclose(loaded.x, expected.x, atol=1e-4)
    np.testing.assert_allclose(loaded.y, expected.y, atol=1e-4)
    np.testing.assert_allclose(loaded.prop["BC"][indexed], np.round(expected.prop["matching_rate"][indexed]))


def test_strain_csv_and_netcdf(results_store, tmp_path):
    path, written = results_store
    assert main(["export", str(path), "--format", "csv", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "laueflow_strain.csv")
    assert len(table) == rf.NY * rf.NX
    row = table[(table.y_um == 2.0) & (table.x_um == 1.5)].iloc[0]  # point (1, 3): best grain is slot 1
    assert row.grain_index == 1 and row.material == "Cu" and row.status_name == "ok"
    assert row.strain_xx == pytest.approx(2e-3) and row.matching_rate == pytest.approx(95.0)
    assert main(["export", str(path), "--format", "netcdf", "--out", str(tmp_path)]) == 0
    nc = xr.open_dataset(tmp_path / "laueflow_strain.nc")
    np.testing.assert_allclose(nc.strain_xx.values, table.strain_xx.values.reshape(rf.NY, rf.NX))
    assert nc.material_index.attrs["flag_meanings"] == "Cu GaN"
    assert nc.status.attrs["flag_meanings"].split()[1] == "invalid_input"


def test_point_and_format_rules(results_store, tmp_path, capsys):
    path, _ = results_store
    assert main(["export", str(path), "--format", "ctf", "--point", "1,1", "--out", str(tmp_path)]) == 2
    assert "--point is for --format lauetools" in capsys.readouterr().err
    assert main(["export", str(path), "--out", str(tmp_path)]) == 2
    assert "--point Y,X is needed" in capsys.readouterr().err
