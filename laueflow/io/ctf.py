"""Channel Text File (``.ctf``, Oxford/HKL) orientation maps: what MTEX and orix read.

One row per scan point, row-major (x fastest): ``Phase X Y Bands Error Euler1 Euler2 Euler3 MAD
BC BS`` with Bunge Euler angles in degrees, positions in µm, phase 0 = not indexed. laueflow
fills Bands with the matched spots, MAD with the mean angular residual (deg), BC with the
matching rate (%, rounded) and BS with the peak count.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_ctf", "LAUE_GROUP_IDS"]

#: the Laue-group ids of the .ctf phase lines (the format's own table)
LAUE_GROUP_IDS = {"-1": 1, "2/m": 2, "mmm": 3, "4/m": 4, "4/mmm": 5, "-3": 6, "-3m": 7, "6/m": 8, "6/mmm": 9,
                  "m-3": 10, "m-3m": 11}


def write_ctf(path, *, euler_deg, phase, x_um, y_um, step_um, phases, bands=None, mad_deg=None, bc=None, bs=None,
              source: str = "") -> Path:
    """Write a ``.ctf`` file.

    ``euler_deg`` (ny, nx, 3) Bunge angles in degrees (ignored where ``phase`` is 0); ``phase``
    (ny, nx) int, 1-based (0: not indexed); ``x_um`` (nx,), ``y_um`` (ny,) positions;
    ``step_um`` (y, x); ``phases``: one dict per phase id 1, 2 … with ``name``,
    ``lattice_parameters`` (a, b, c in Å, α, β, γ in deg), ``laue_group`` (a key of
    :data:`LAUE_GROUP_IDS`) and ``space_group`` (number). Optional (ny, nx) columns: ``bands``,
    ``mad_deg``, ``bc``, ``bs`` (zeros when absent)."""
    path = Path(path)
    phase = np.asarray(phase, dtype=int)
    ny, nx = phase.shape
    euler = np.where(phase[..., None] > 0, np.asarray(euler_deg, dtype=float), 0.0)
    if not np.isfinite(euler).all():
        raise ValueError("write_ctf: an indexed point (phase > 0) has no Euler angles (NaN)")
    yy, xx = np.meshgrid(np.asarray(y_um, float), np.asarray(x_um, float), indexing="ij")
    zeros = np.zeros((ny, nx))

    def column(v):
        return zeros if v is None else np.nan_to_num(np.asarray(v, dtype=float), nan=0.0)

    header = ["Channel Text File", f"Prj\t{source or 'laueflow'}", "Author\tlaueflow",
              "JobMode\tGrid", f"XCells\t{nx}", f"YCells\t{ny}", f"XStep\t{float(step_um[1]):.6g}",
              f"YStep\t{float(step_um[0]):.6g}", "AcqE1\t0", "AcqE2\t0", "AcqE3\t0",
              "Euler angles refer to Sample Coordinate system (CS0)!\tMag\t0\tCoverage\t100\tDevice\t0\tKV\t0"
              "\tTiltAngle\t0\tTiltAxis\t0",
              f"Phases\t{len(phases)}"]
    for p in phases:
        a, b, c, al, be, ga = p["lattice_parameters"]
        header.append(f"{a:.4f};{b:.4f};{c:.4f}\t{al:.3f};{be:.3f};{ga:.3f}\t{p['name']}\t"
                      f"{LAUE_GROUP_IDS[p['laue_group']]}\t{int(p['space_group'])}")
    header.append("Phase\tX\tY\tBands\tError\tEuler1\tEuler2\tEuler3\tMAD\tBC\tBS")
    error = np.where(phase > 0, 0, 3)  # 3: no solution
    rows = np.column_stack([phase.ravel(), xx.ravel(), yy.ravel(), column(bands).ravel(), error.ravel(),
                            euler.reshape(-1, 3), column(mad_deg).ravel(), column(bc).ravel(), column(bs).ravel()])
    with open(path, "w", newline="\n") as fh:
        fh.write("\n".join(header) + "\n")
        np.savetxt(fh, rows, fmt=["%d", "%.4f", "%.4f", "%d", "%d", "%.5f", "%.5f", "%.5f", "%.4f", "%d", "%d"],
                   delimiter="\t")
    return path
