"""``laueflow ingest``: detector image files → ``scan.zarr`` (Zarr v3), in parallel on Dask."""
from __future__ import annotations

import argparse
import re
import sys

from ..io.detfile import read_det
from ..io.store_lock import StoreLock, StoreLockedError
from ..physics.materials import get_material
from ..pipeline.cluster import ClusterConfig, connect
from ..pipeline.ingest import IngestError, ingest
from .main import UserError
from .materials_args import add_materials_file_argument, use_materials_files

EXAMPLE = """\
examples:
  laueflow ingest demo/images/ --calibration demo/calib.det --shape 20x20 --out demo/scan.zarr
  laueflow ingest scan_0000.h5 --h5-dataset entry_0000/measurement/data --shape 41x61 \\
      --order snake --step-um 0.5 --material Si --material GaN --out scan.zarr
  laueflow ingest --index-list points.txt --out scan.zarr      # lines 'iy ix path[::frame]'
  laueflow ingest images/ --mask bad_pixels.tif --calibration calib.det --out scan.zarr
  laueflow ingest scan_0000.h5 --shape 41x61 --monitor scan_0000.h5::1.1/measurement/mon --out scan.zarr
  laueflow ingest images/ --shape 20x20 --monitor i0.txt --out scan.zarr   # one value per line, acquisition order
  laueflow ingest images/ --materials-file my_materials.yaml --material ZnCuOCl --calibration calib.det --out scan.zarr

Scan index = the last number of each file name (<prefix>_<index:04d>.tif), counted from the
smallest one (or --first-index), mapped to (y, x) row by row (raster) or with every second
row reversed (snake). The images must have the detector's size (from --calibration, or
--frame-shape, else a sample of the files, which must agree).

Re-running the same command on an existing store resumes it: only points not read yet, failed,
or whose file changed (size or modification time) are read again; other options than the
store's are refused with the list of differences. --overwrite replaces a scan store (never
any other folder). One process writes a store at a time. Inputs are never modified.
Exit status: 0 every point ok, 1 some points missing or rejected (listed; the store is usable
and `laueflow run` skips them), 2 bad input (nothing written).
"""


def _shape(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m or min(int(m[1]), int(m[2])) < 1:
        raise argparse.ArgumentTypeError(f"expected NYxNX such as 20x30, got {text!r}")
    return int(m[1]), int(m[2])


def _step(text: str) -> tuple[float, float]:
    parts = [float(v) for v in re.split(r"[xX,]", text)]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected STEP or STEPYxSTEPX in µm, got {text!r}")
    return parts[0], parts[1]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "ingest", help="image files -> scan.zarr (Zarr v3), in parallel on Dask",
        description="Read detector images (TIFF, MarCCD/EDF and other fabio formats, HDF5 "
                    "stacks) into a compressed scan store with per-point status.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="image files, folders or HDF5 stacks")
    p.add_argument("--out", "-o", required=True, help="output store (scan.zarr)")
    p.add_argument("--shape", type=_shape, help="scan shape NYxNX (default: 1 x n images)")
    p.add_argument("--order", choices=("raster", "snake"), default="raster")
    p.add_argument("--index-list", help="explicit mapping file: lines 'iy ix path[::frame]'")
    p.add_argument("--first-index", type=int, help="file index of point (0, 0) (default: smallest)")
    p.add_argument("--h5-dataset", help="dataset of an HDF5 stack (default: BLISS layout / "
                                        "largest 3-D dataset)")
    p.add_argument("--calibration", help="LaueTools .det calibration file")
    p.add_argument("--material", action="append", default=[], help="material name (repeatable)")
    add_materials_file_argument(p)
    p.add_argument("--mask", help="bad-pixel mask of the detector (TIFF/EDF/… or .npy, same size as "
                                  "the images, non-zero = bad): the peak search ignores those pixels")
    p.add_argument("--monitor", metavar="SOURCE",
                   help="incident-intensity monitor (I0) per point: values.npy, a text/CSV file (one value "
                        "per point in acquisition order, or ny rows of nx values) or FILE.h5::DATASET; "
                        "the features stage divides by it (docs/ingest.md). Given on a resume, it "
                        "replaces the stored one")
    p.add_argument("--frame-shape", type=_shape, metavar="ROWSxCOLS",
                   help="size of the detector images (default: the calibration's)")
    p.add_argument("--step-um", type=_step, default=(1.0, 1.0), help="scan step, µm (Y or YxX)")
    p.add_argument("--layout", choices=("chunked", "sharded"), default="chunked",
                   help="one image per chunk (default) or chunks grouped in shards of a row")
    p.add_argument("--shard-x", type=int, default=16, help="images per shard (sharded layout)")
    p.add_argument("--compression", choices=("zstd", "blosc", "none"), default="blosc",
                   help="blosc = zstd + bitshuffle (default: best ratio and speed measured)")
    p.add_argument("--level", type=int, default=3, help="compression level (default 3)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786)")
    p.add_argument("--workers", type=int, help="local cluster workers (default: usable CPUs)")
    p.add_argument("--serial", action="store_true", help="no Dask cluster: read in this process")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    if not args.inputs and not args.index_list:
        raise UserError("give image files/folders or --index-list")
    use_materials_files(args.materials_file)
    for name in args.material:
        try:
            get_material(name)
        except ValueError as err:
            raise UserError(f"--material: {err}") from None
    calibration = None
    if args.calibration:
        calibration = read_det(args.calibration)
    kwargs = dict(shape=args.shape, order=args.order, index_list=args.index_list,
                  first_index=args.first_index, h5_dataset=args.h5_dataset,
                  calibration=calibration, materials=args.material, step_um=args.step_um,
                  layout=args.layout, shard_x=args.shard_x, compression=args.compression,
                  level=args.level, overwrite=args.overwrite, mask=args.mask, monitor=args.monitor,
                  frame_shape=args.frame_shape, progress=not args.no_progress)
    try:
        if args.serial:
            summary = ingest(args.inputs, args.out, client=None, **kwargs)
        else:
            StoreLock(args.out, "ingest").acquire().release()  # busy: refused before any worker starts
            opts = {"dashboard_address": ":0"}
            if args.workers:
                opts["n_workers"] = args.workers
            with connect(ClusterConfig("local", opts), address=args.scheduler) as client:
                print(f"Dask dashboard: {client.dashboard_link}")
                summary = ingest(args.inputs, args.out, client=client, **kwargs)
    except (IngestError, StoreLockedError) as err:
        raise UserError(str(err)) from None
    n_bad = summary["n_points"] - summary["counts"]["ok"]
    if n_bad:
        print(f"laueflow ingest: {n_bad} of {summary['n_points']} points are not ok (listed above). The store "
              "is usable: `laueflow run` processes the valid points and marks the others. Fix or add those "
              "files and re-run this command: only they are read again.", file=sys.stderr)
        return 1
    return 0
