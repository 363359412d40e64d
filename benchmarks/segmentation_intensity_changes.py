"""How the segmentation copes with changes of the incident intensity between points.

    python benchmarks/choose_autoencoder_scaling.py --prepare --workdir /tmp/aescale   # scans, once (~8 min)
    python benchmarks/segmentation_intensity_changes.py --workdir /tmp/aescale          # ~8 min, 2 processes

Real scans are not lit evenly: the ring current decays between top-ups, and the diffracting
volume changes with the sample's thickness or at its edge. The simulated bar scans are lit
evenly. Here the eight bar scans of ``choose_autoencoder_scaling.py`` are rendered again from
their generator parameters (``truth.zarr``), with every point's spot amplitudes multiplied by a
factor before the detector noise is drawn. The dark current, the diffuse halo and the read and
shot noise stay physical, so a dimly lit point is also a noisier one. The factors are a ramp
across the scan (min → max along x) or seeded random factors per point. The frames →
`pixels` features (linear, 16 × 16 area averages, the scan's mask) → the segmentation kernel as
the stage runs it (standardized, PCA 32, KMeans at the K the silhouette suggests over 2–20,
unmixing labels). The script prints the ARI against the true domain map (the
twin-variant map for fine twins) and the suggested K. Features are cached in the workdir
(``illumination-*.npz``).

A second table divides every point's features by its monitor, as the ``features`` stage does
when the scan store has one (``laueflow ingest --monitor``, ``normalize: auto``): the factor
itself times ``1 + 0.005·N(0, 1)`` (a monitor read with 0.5 % noise, seeded; ``--monitor-noise``),
over the scan's median. With linear features that is the same as dividing the counts above the
background, what the stage does.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from choose_autoencoder_scaling import SCANS, ari  # noqa: E402
from choose_pixel_features import images_and_truth_maps  # noqa: E402

FIELDS = ("none", "ramp 0.67–1.33", "ramp 0.5–1.5", "ramp 0.25–1.75", "random 0.5–1.5")


def factors(name: str, shape: tuple[int, int]) -> np.ndarray:
    """``(ny·nx,)`` factor of each point for the field ``name`` (seeded)."""
    ny, nx = shape
    kind, band = name.split(" ") if " " in name else (name, "1–1")
    lo, hi = (float(v) for v in band.split("–"))
    if kind == "ramp":
        return (lo + (hi - lo) * np.broadcast_to(np.linspace(0.0, 1.0, nx), shape)).reshape(-1)
    if kind == "random":
        return np.random.default_rng(0).uniform(lo, hi, ny * nx)
    if kind == "off-sample":  # segmentation_off_sample.py: no sample from x = 0.8 nx on, and a 3 × 3 hole
        return np.where(off_sample(shape).reshape(-1), 0.0, 1.0)
    return np.ones(ny * nx)


def off_sample(shape: tuple[int, int]) -> np.ndarray:
    """``(ny, nx)`` bool: the points of the ``off-sample`` field that see no sample."""
    ny, nx = shape
    off = np.zeros(shape, bool)
    off[:, int(0.8 * nx):] = True
    off[ny * 2 // 5:ny * 2 // 5 + 3, nx // 4:nx // 4 + 3] = True
    return off


def monitored(features: np.ndarray, field: str, shape: tuple[int, int], noise: float) -> np.ndarray:
    """``features`` divided by a monitor of ``field`` read with relative ``noise`` (over its median)."""
    monitor = factors(field, shape) * (1 + noise * np.random.default_rng(1).standard_normal(shape[0] * shape[1]))
    return features * (np.median(monitor) / monitor)[:, None].astype(np.float32)


def scan_shape(folder: Path) -> tuple[int, int]:
    import zarr

    return tuple(zarr.open_group(str(folder / "truth.zarr"), mode="r")["grain_map"].shape[:2])


def truth_of(folder: Path, name: str) -> np.ndarray:
    return images_and_truth_maps(folder)["variant" if name == "fine_twins" else "domain"]


def bar_plan_and_mask(folder: Path):
    """``(plan, mask)``: the simulation plan of the bar scan in ``folder`` (from its truth's
    generator parameters and calibration) and its scan store's detector mask."""
    import zarr

    from laueflow.io.detfile import read_det
    from laueflow.pipeline.scan_store import detector_mask
    from laueflow.synth.scan import ScanParameters, plan_scan

    attrs = dict(zarr.open_group(str(folder / "truth.zarr"), mode="r").attrs["generator_parameters"])
    params = ScanParameters(**{k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items()})
    plan = plan_scan(params, calibration=read_det(folder / "calib.det"))
    return plan, detector_mask(zarr.open_group(str(folder / "scan.zarr"), mode="r"))


def rendered_features(folder: Path, field: str) -> np.ndarray:
    """``(n, 256)`` linear pixel features of the scan in ``folder`` rendered under ``field``."""
    cache = folder.parent / f"illumination-{folder.name}-{field.replace(' ', '_')}.npz"
    if cache.exists():
        return np.load(cache)["features"]
    from laueflow.kernels.downsample import preprocess_frames
    from laueflow.stages.features import pixel_features

    plan, mask = bar_plan_and_mask(folder)
    c = plan.components
    scale = factors(field, plan.shape)
    c.amplitude = c.amplitude * np.repeat(scale, np.diff(c.image_start))
    frames = np.empty((plan.n_images, 128, 128), np.float32)
    for i in range(plan.n_images):
        frames[i] = preprocess_frames(plan.render(i)[None], mask, scaling="linear")[0]
    features = pixel_features(frames, 256)
    np.savez(cache, features=features)
    return features


def _render(job):
    folder, field = job
    rendered_features(Path(folder), field)
    return job


def render_bar_scans(workdir, fields, processes: int = 2) -> list[Path]:
    """The bar scans' folders under ``workdir`` (checked), each rendered (once, cached) under every
    field of ``fields``, ``processes`` at a time."""
    folders = [Path(workdir) / f"{name}-seed{seed}" for name, seed in SCANS]
    for folder in folders:
        if not (folder / "scan.zarr").exists():
            raise SystemExit(f"{folder}/scan.zarr is missing: run choose_autoencoder_scaling.py --prepare "
                             f"--workdir {workdir} first")
    with ProcessPoolExecutor(max_workers=processes) as pool:
        for done in pool.map(_render, [(str(f), field) for f in folders for field in fields]):
            print(f"rendered {Path(done[0]).name} {done[1]}", file=sys.stderr, flush=True)
    return folders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/laueflow-choose-autoencoder-scaling",
                    help="the scans of `choose_autoencoder_scaling.py --prepare`")
    ap.add_argument("--processes", type=int, default=2, help="rendering processes (default 2)")
    ap.add_argument("--monitor-noise", type=float, default=0.005, help="relative noise of the monitor (default 0.005)")
    args = ap.parse_args()
    folders = render_bar_scans(args.workdir, FIELDS, args.processes)
    for title, divide in (("features as rendered", False),
                          (f"features divided by the monitor ({args.monitor_noise:.1%} noise)", True)):
        print(f"\n{title}\n\n| scan (true domains) | " + " | ".join(FIELDS) + " |")
        print("|---|" + "---|" * len(FIELDS))
        for (name, seed), folder in zip(SCANS, folders):
            true = truth_of(folder, name)
            shape = scan_shape(folder)
            cells = []
            for field in FIELDS:
                x = rendered_features(folder, field)
                x = monitored(x, field, shape, args.monitor_noise) if divide else x
                cells.append(ari(x, true, "standardize", "unmix"))
            print(f"| {name} {seed} ({len(np.unique(true))}) | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
