"""``laueflow simulate``: a realistic synthetic Laue scan with its ground truth."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..io.detfile import read_det
from ..physics.materials import get_material
from ..physics.simulate import DEFAULT_ENERGY_BAND_KEV
from .main import UserError
from .materials_args import add_materials_file_argument, use_materials_files

EXAMPLE = """\
examples:
  laueflow simulate --material Cu --grains 12 --shape 20x20 --out demo/
  laueflow simulate --material GaN --substrate Si --grains 30 --shape 10x10 --step 0.5 --out gan/
  laueflow simulate --material Cu --twins 0.5 --subgrains 0.3 --deep-grains 4 --bad-spots 0.2 \\
      --strain 2e-3 --seed 7 --calibration my.det --prefix cu --out cu/

Writes OUT/images/<prefix>_NNNN.tif (uint16, one per scan point, NNNN = iy*nx + ix),
OUT/calib.det, OUT/mask.tif (dead pixels), OUT/truth.zarr (ground truth; see docs/truth-format.md)
and OUT/simulation.json (the list of these files: --overwrite deletes only files listed there and
refuses a folder holding a calib.det, mask.tif, truth.zarr or image that simulate did not write).
The same --seed gives identical images and truth.
"""


def _shape(text: str) -> tuple[int, int]:
    try:
        ny, nx = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 20x20 (ny x nx), got {text!r}") from None
    if ny < 1 or nx < 1:
        raise argparse.ArgumentTypeError(f"shape must be positive, got {text!r}")
    return ny, nx


def _band(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.replace(",", ":").replace("-", ":").split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"energy band must look like 5:23 (keV), got {text!r}") from None
    return lo, hi


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "simulate",
        help="write a realistic synthetic scan (TIFF images, calib.det, mask.tif, truth.zarr)",
        description="Simulate a raster scan over a Voronoi grain map: per-grain orientations with "
                    "intragranular gradients and smooth deviatoric strain, beam-footprint overlap at "
                    "boundaries, optional twins / sub-grains / second phase / substrate / deeper grains; "
                    "images at real detector size with realistic spots, background and noise.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--material", default="Cu", help="main phase (default Cu)")
    add_materials_file_argument(parser)
    parser.add_argument("--grains", type=int, default=12, help="number of Voronoi grains (default 12)")
    parser.add_argument("--shape", type=_shape, default=(20, 20), metavar="NYxNX", help="scan points (default 20x20)")
    parser.add_argument("--step", type=float, default=1.0, metavar="UM", help="scan step in µm (default 1)")
    parser.add_argument("--beam-size", type=float, default=None, metavar="UM",
                        help="beam footprint diameter in µm (default 1.5 × step)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--energy-band", type=_band, default=DEFAULT_ENERGY_BAND_KEV, metavar="EMIN:EMAX",
                        help="white-beam band in keV (default 5:23)")
    parser.add_argument("--calibration", metavar="FILE.det", help="detector calibration (default BM32 sCMOS)")
    parser.add_argument("--prefix", default="scan", help="image file prefix (default scan)")
    parser.add_argument("--strain", type=float, default=1e-3,
                        help="deviatoric strain magnitude (max von Mises, default 1e-3)")
    parser.add_argument("--gradient", type=float, default=0.02, metavar="DEG_PER_UM",
                        help="intragranular orientation gradient (default 0.02 °/µm)")
    parser.add_argument("--twins", type=_fraction, default=0.0, metavar="FRACTION",
                        help="fraction of grains with a twin lamella (default 0)")
    parser.add_argument("--fine-twin-grains", type=int, default=0, metavar="N",
                        help="the N largest grains filled with alternating twin lamellae (default 0)")
    parser.add_argument("--twin-law", choices=("sigma3", "dauphine"), default="sigma3",
                        help="twins of --twins / --fine-twin-grains: sigma3 = 60° about [111] (cubic Σ3, "
                             "default), dauphine = 60° about [001] (quartz's Dauphiné twin; hexagonal axes)")
    parser.add_argument("--fine-twin-period", type=float, default=4.0, metavar="UM",
                        help="period of those lamellae in µm (default 4; each lamella half as wide)")
    parser.add_argument("--subgrains", type=_fraction, default=0.0, metavar="FRACTION",
                        help="fraction of grains split into low-angle sub-grains (default 0)")
    parser.add_argument("--subgrain-angle", type=float, default=1.0, metavar="DEG",
                        help="sub-grain misorientation (default 1°)")
    parser.add_argument("--second-phase", metavar="MATERIAL", help="material of a second phase of grains")
    parser.add_argument("--second-phase-fraction", type=_fraction, default=0.3,
                        help="fraction of grains of the second phase (default 0.3)")
    parser.add_argument("--substrate", metavar="MATERIAL",
                        help="single-crystal substrate seen at every point, e.g. Si")
    parser.add_argument("--substrate-weight", type=float, default=1.0, help="substrate brightness (default 1)")
    parser.add_argument("--deep-grains", type=int, default=0, help="number of faint deeper grains (default 0)")
    parser.add_argument("--bad-spots", type=_fraction, default=0.1, metavar="FRACTION",
                        help="fraction of streaked / split / irregular spots (default 0.1)")
    parser.add_argument("--compress", action="store_true", help="zlib-compress the TIFFs (smaller, slower)")
    parser.add_argument("--overwrite", action="store_true", help="replace the scan that simulate wrote in a non-empty --out (only its own files)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def _check_twin_law(law: str, materials) -> None:
    """The twin law must be a real twin of every material that can have twins: Σ3 (60° about [111])
    of cubic crystals, Dauphiné (60° about [001]) of trigonal crystals on hexagonal axes."""
    def law_of(m):
        if m.crystal_system == "cubic":
            return "sigma3"
        if m.crystal_system == "trigonal" and np.isclose(m.lattice_parameters[5], 120.0):
            return "dauphine"
        return None

    for m in materials:
        if law_of(m) != law:
            hint = f"use --twin-law {law_of(m)}" if law_of(m) else "laueflow simulates no twin law of this crystal"
            raise UserError(f"--twin-law {law} is not a twin of {m.name} ({m.crystal_system}): sigma3 is the cubic "
                            f"Σ3 twin, dauphine the trigonal one (60° about c, hexagonal axes); {hint}")


def run(args) -> int:
    if args.grains < 1:
        raise UserError(f"--grains must be >= 1, got {args.grains}")
    if args.step <= 0:
        raise UserError(f"--step must be > 0, got {args.step}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if not 0 < args.energy_band[0] < args.energy_band[1]:
        raise UserError(f"--energy-band must be 0 < EMIN < EMAX, got {args.energy_band}")
    if args.fine_twin_grains < 0 or not args.fine_twin_period > 0:
        raise UserError(f"--fine-twin-grains must be >= 0 and --fine-twin-period > 0 µm, got "
                        f"{args.fine_twin_grains} and {args.fine_twin_period}")
    if args.deep_grains < 0:
        raise UserError(f"--deep-grains must be >= 0, got {args.deep_grains}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose a folder")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"output directory {out} exists and is not empty; use --overwrite to replace its scan")

    from ..synth.scan import simulate_scan  # deferred: imports scipy and xarray (~1.5 s)

    use_materials_files(args.materials_file)
    for name in filter(None, (args.material, args.second_phase, args.substrate)):
        get_material(name)  # ValueError listing the known materials
    if args.twins > 0 or args.fine_twin_grains > 0:
        _check_twin_law(args.twin_law, [get_material(n) for n in filter(None, (args.material, args.second_phase))])
    calibration = None
    if args.calibration:
        if not Path(args.calibration).is_file():
            raise UserError(f"calibration file {args.calibration} not found")
        calibration = read_det(args.calibration)

    summary = simulate_scan(
        out,
        calibration=calibration,
        overwrite=args.overwrite,
        progress=not args.quiet,
        compression="zlib" if args.compress else None,
        material=args.material,
        shape=args.shape,
        grains=args.grains,
        step_um=args.step,
        seed=args.seed,
        energy_band_kev=args.energy_band,
        beam_size_um=args.beam_size,
        orientation_gradient_deg_per_um=args.gradient,
        strain_magnitude=args.strain,
        twin_fraction=args.twins,
        fine_twin_grains=args.fine_twin_grains,
        fine_twin_period_um=args.fine_twin_period,
        twin_law=args.twin_law,
        subgrain_fraction=args.subgrains,
        subgrain_misorientation_deg=args.subgrain_angle,
        second_phase=args.second_phase,
        second_phase_fraction=args.second_phase_fraction if args.second_phase else 0.0,
        substrate=args.substrate,
        substrate_weight=args.substrate_weight,
        deep_grains=args.deep_grains,
        bad_spot_fraction=args.bad_spots,
        prefix=args.prefix,
    )
    print(
        f"wrote {summary['images']} images ({summary['spots_per_image']:.0f} spots/image, "
        f"{summary['grains']} grains, {', '.join(summary['materials'])}) to {out}/images, "
        f"calib.det, mask.tif and truth.zarr in {summary['total_s']:.1f} s "
        f"(render {summary['images_per_s']:.1f} images/s)"
    )
    print(json.dumps(summary["spot_quality_counts"]))
    return 0
