"""``laueflow export``: one scan point of a results store → LaueTools ``.dat``, ``.cor``, ``.fit`` files."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..physics.geometry import Calibration
from ..physics.materials import get_materials
from .main import UserError

EXAMPLE = """\
examples:
  laueflow export demo/results.zarr --point 3,4 --out demo/lauetools/
  laueflow export demo/results.zarr --point 0,0 --prefix sample_A --out cross-check/
  laueflow export demo/results.zarr --point 3,4 --ub-variant lauetools --out demo/lauetools/
  laueflow export demo/results.zarr --point 3,4 --ub-variant reference:lt/img_0034_g0.fit

Writes <prefix>_y<Y>_x<X>.dat and .cor (peak lists; LaueTools pixels X = col + 1) and, for every
refined grain, <prefix>_y<Y>_x<X>_g<k>.fit (indexed spots, UB, strain in 1e-3 units), so the point
can be cross-checked in LaueTools.

--ub-variant: a grain's UB is defined only up to a rotation S of its Laue group (UB and UB·S index
the same spots with other hkl). Crystal-frame strain, hkl and Euler angles depend on that choice;
sample-frame strain does not. The .fit file's UB, hkl, orientation and strain all follow the
variant chosen:
  laueflow    the UB of the results store, unchanged (default)
  identity    UB closest to the identity matrix (crystal axes closest to the lab axes)
  lauetools   LaueTools' rule (c axis most vertical, then a* most along the beam); LaueTools applies
              it to cubic grains, so for cubic grains this is the UB LaueTools writes
  sample      UB closest to the sample frame (crystal axes closest to the 40°-tilted sample axes)
  reference:FILE  UB closest to the UB in FILE (.fit file, .npy or text 3×3): the surest way to
              compare with one LaueTools .fit file, for any crystal system
See docs/strain.md ("UB variants").
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="export a scan point as LaueTools .dat/.cor/.fit files",
        description="Export the peaks and refined grains of one scan point of a results store as "
                    "LaueTools-style files.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="results store (laueflow run)")
    parser.add_argument("--point", required=True, help="scan point Y,X (0-based indices)")
    parser.add_argument("--out", default=".", help="output folder (default: current folder)")
    parser.add_argument("--prefix", default="laueflow", help="file name prefix (default: laueflow)")
    parser.add_argument("--ub-variant", default="laueflow", metavar="VARIANT",
                        help="symmetry-equivalent UB to write: laueflow (default), identity, lauetools, "
                             "sample or reference:FILE (see below)")
    parser.set_defaults(func=run_export)
    return parser


def run_export(args) -> int:
    import xarray as xr  # deferred: xarray is heavy

    from ..io.lauetools_files import parse_ub_variant, write_cor, write_dat, write_fit  # deferred: imports scipy (~0.5 s)

    try:
        y, x = (int(v) for v in args.point.split(","))
    except ValueError:
        raise UserError(f"--point must be Y,X (two integers), got {args.point!r}") from None
    try:
        ub_variant, reference_ub = parse_ub_variant(args.ub_variant)
    except ValueError as err:
        raise UserError(str(err)) from None
    path = Path(args.results)
    if not path.exists():
        raise UserError(f"results store not found: {path}")
    results = xr.open_zarr(path)
    ny, nx = results.sizes["y"], results.sizes["x"]
    if not (0 <= y < ny and 0 <= x < nx):
        raise UserError(f"--point {y},{x} is outside the {ny}×{nx} scan")
    if not results.attrs.get("calibration"):
        raise UserError("the results store has no calibration attribute (ingest with --calibration)")
    calibration = Calibration.from_dict(results.attrs["calibration"])
    point = results.isel(y=y, x=x).load()
    if "peak_col" not in point:
        raise UserError("the results store has no peaks (run a workflow with the 'peaks' stage)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.prefix}_y{y}_x{x}"
    use_refined = "spot_col" in point
    col = np.where(np.isfinite(point["spot_col"]), point["spot_col"], point["peak_col"]) if use_refined else point["peak_col"].values
    row = np.where(np.isfinite(point["spot_row"]), point["spot_row"], point["peak_row"]) if use_refined else point["peak_row"].values
    intensity = point["peak_intensity"].values
    source = f"{path} point ({y}, {x})"
    written = [write_dat(out / f"{stem}.dat", col, row, intensity, point["peak_background"].values, source=source),
               write_cor(out / f"{stem}.cor", col, row, intensity, calibration, source=source)]
    if "strain_status" in point:
        # the store's own definitions (any material, in the scan's order), else library names
        materials = get_materials(results.attrs.get("material_definitions") or results.attrs.get("materials") or [])
        for g in np.flatnonzero(point["strain_status"].values == 0):
            peaks = np.flatnonzero(point["peak_grain_refined"].values == g)
            material = materials[int(point["grain_material"].values[g])]
            written.append(write_fit(out / f"{stem}_g{g}.fit", ub=point["refined_orientation"].values[g],
                                     material=material, calibration=calibration,
                                     hkl=point["peak_hkl_refined"].values[peaks], obs_col=col[peaks], obs_row=row[peaks],
                                     intensity=intensity[peaks], spot_index=peaks, grain_index=int(g), source=source,
                                     ub_variant=ub_variant, reference_ub=reference_ub))
    for f in written:
        print(f)
    return 0
