"""``laueflow export``: one scan point of a results store → LaueTools ``.dat``, ``.cor``, ``.fit`` files;
or the whole map → ``.ctf`` (orientations, MTEX / orix), CSV or NetCDF (strain maps)."""
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

Maps (--format ctf | csv | netcdf; no --point: every point, one grain per point — the best, or
--grain K):
  laueflow export demo/results.zarr --format ctf --out demo/maps/      # demo/maps/laueflow.ctf
  laueflow export demo/results.zarr --format csv --frame lab --out demo/maps/
  laueflow export demo/results.zarr --format netcdf --out demo/maps/   # laueflow_strain.nc
.ctf: Bunge Euler angles of the sample → crystal rotation (orix/MTEX convention, crystal x ∥ a,
z ∥ c*), positions in µm, Bands = matched spots, MAD = mean residual (deg), BC = matching rate (%),
BS = peak count; phase 0 = not indexed. CSV / NetCDF: one row (point) with positions, status,
the grain's material, matching rate, deviatoric strain components (and stress when computed) in
--frame, von Mises. See docs/maps.md.
"""

MAP_FORMATS = ("ctf", "csv", "netcdf")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="export a point as LaueTools .dat/.cor/.fit files, or maps as .ctf (orix/MTEX), CSV or NetCDF",
        description="Export the peaks and refined grains of one scan point of a results store as "
                    "LaueTools-style files.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="results store (laueflow run)")
    parser.add_argument("--format", default="lauetools", choices=("lauetools", *MAP_FORMATS),
                        help="lauetools (one --point: .dat/.cor/.fit, default) or a whole map: ctf, csv, netcdf")
    parser.add_argument("--point", help="scan point Y,X (0-based indices; --format lauetools)")
    parser.add_argument("--grain", type=int, default=None, metavar="K",
                        help="maps: grain slot K at every point (default: the best grain, the brightest, "
                             "then the highest matching rate)")
    parser.add_argument("--frame", default="sample", choices=("sample", "lab"),
                        help="maps: reference frame of orientations and strain (default: sample)")
    parser.add_argument("--out", default=".", help="output folder (default: current folder)")
    parser.add_argument("--prefix", default="laueflow", help="file name prefix (default: laueflow)")
    parser.add_argument("--ub-variant", default="laueflow", metavar="VARIANT",
                        help="symmetry-equivalent UB to write: laueflow (default), identity, lauetools, "
                             "sample or reference:FILE (see below)")
    parser.set_defaults(func=run_export)
    return parser


def run_export(args) -> int:
    if args.format in MAP_FORMATS:
        if args.point:
            raise UserError(f"--point is for --format lauetools; --format {args.format} exports every point")
        for f in export_map(Path(args.results), Path(args.out), args.format, prefix=args.prefix, grain=args.grain,
                            frame=args.frame):
            print(f)
        return 0
    if not args.point:
        raise UserError("--point Y,X is needed for --format lauetools (or choose --format ctf, csv or netcdf)")
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


def _one_grain(results: Path, grain):
    from ..pipeline.results import ResultsError, best_grain, grain as grain_slot, open_results

    try:
        ds = open_results(results)
        if "orientation_matrix" not in ds:
            raise UserError("the results store has no orientations (run a workflow with the 'index' stage)")
        return ds, (best_grain(ds) if grain is None else grain_slot(ds, grain))
    except ResultsError as err:
        raise UserError(str(err)) from None


def export_map(results: Path, out: Path, fmt: str, *, prefix="laueflow", grain=None, frame="sample") -> list[Path]:
    """Write the map of ``results`` (one grain per point) as ``fmt`` (ctf, csv, netcdf) into ``out``."""
    from ..io.ctf import write_ctf
    from ..pipeline.crystal_maps import ctf_phase, euler_angles, store_materials

    ds, one = _one_grain(results, grain)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "ctf":
        materials = store_materials(ds)
        which = np.asarray(one["grain_material"].values).astype(int)
        euler = euler_angles(one, frame)
        phase = np.where(np.isfinite(euler).all(-1) & (which >= 0), which + 1, 0)
        column = {name: (one[name].values if name in one else None)
                  for name in ("matched_spots", "mean_residual_deg", "matching_rate", "peak_count")}
        path = write_ctf(out / f"{prefix}.ctf", euler_deg=euler, phase=phase, x_um=ds["x_um"].values,
                         y_um=ds["y_um"].values, step_um=ds.attrs.get("step_um", (1.0, 1.0)),
                         phases=[ctf_phase(m) for m in materials], bands=column["matched_spots"],
                         mad_deg=column["mean_residual_deg"],
                         bc=None if column["matching_rate"] is None else np.round(column["matching_rate"]),
                         bs=column["peak_count"], source=str(results))
        return [path]
    table = strain_table(one, frame)
    if fmt == "csv":
        path = out / f"{prefix}_strain.csv"
        table.to_dataframe(dim_order=["y", "x"]).reset_index().to_csv(path, index=False, float_format="%.6g")
        return [path]
    path = out / f"{prefix}_strain.nc"
    codes = one["status"].attrs
    table["status"].attrs = {k: codes[k] for k in ("flag_values", "flag_meanings") if k in codes}
    table = table.drop_vars(["status_name", "material"], errors="ignore")  # names: the flag attributes
    table.to_netcdf(path, engine="scipy")  # NetCDF3 (64-bit offset): no extra library needed
    return [path]


def strain_table(one, frame: str):
    """A (y, x) Dataset of positions, status, material, matching rate and strain columns."""
    import xarray as xr

    from ..pipeline.results import TENSOR_COMPONENTS

    columns = {"y_um": one["y_um"], "x_um": one["x_um"]}
    data = {"status": one["status"].astype(np.int32)}
    if "status_name" in one:
        data["status_name"] = one["status_name"].astype(str)
    data["grain_index"] = one["grain_index"].astype(np.int32) if "grain_index" in one else None
    data["material"] = one["grain_material_name"].astype(str)
    data["material_index"] = one["grain_material"].astype(np.int32)
    data["material_index"].attrs = {"flag_values": list(range(one.sizes["material"])),
                                    "flag_meanings": " ".join(map(str, one["material"].values)), "fill_value": -1}
    for name in ("matching_rate", "matched_spots", "von_mises_strain", "strain_rms_px"):
        if name in one:
            data[name] = one[name].astype(np.float64 if one[name].dtype.kind == "f" else np.int32)
    for quantity in ("strain", "stress"):
        name = f"{quantity}_{frame}"
        if name not in one:
            continue
        for comp, (i, j) in TENSOR_COMPONENTS.items():
            data[f"{quantity}_{comp}"] = one[name].isel(i3=i, j3=j).drop_vars(["i3", "j3"], errors="ignore")
            data[f"{quantity}_{comp}"].attrs = {"units": "1" if quantity == "strain" else "GPa",
                                                "description": f"deviatoric {quantity} {comp}, {frame} frame"}
    table = xr.Dataset({k: v.reset_coords(drop=True) for k, v in data.items() if v is not None})
    table = table.assign_coords({k: v.reset_coords(drop=True) for k, v in columns.items()})
    drop = [c for c in table.coords if c not in ("y", "x", "y_um", "x_um")]
    table = table.drop_vars(drop)
    table.attrs = {"source": "laueflow export", "frame": frame, "materials": " ".join(map(str, one["material"].values)),
                   "grain": "best (brightest, then highest matching rate)" if "grain_index" in one else "one slot"}
    return table.transpose("y", "x").load()
