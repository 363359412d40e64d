"""A whole synthetic scan: plan it (microstructure, spots, background), render it, write it.

:func:`plan_scan` builds everything but the images (:class:`ScanPlan`); :meth:`ScanPlan.render`
makes the uint16 image of one point; :func:`simulate_scan` does both and writes the output
directory::

    out_dir/
        images/<prefix>_0000.tif … one uint16 TIFF per point, index = iy · nx + ix
        calib.det                  LaueTools calibration file of the detector
        mask.tif                   bad-pixel mask (uint8, 1 = dead pixel), for ``ingest --mask``
        truth.zarr                 ground truth (docs/truth-format.md)
        simulation.json            the files above (``overwrite=True`` deletes only files listed there)

Randomness: one ``numpy.random.SeedSequence(seed)`` with separate streams for the
microstructure, the spots, the background and each image's noise, so the same seed gives
identical images and truth, whatever the order images are rendered in.
"""
from __future__ import annotations

import json
import re
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import xarray as xr
from tqdm.auto import tqdm

from .. import __version__
from ..io.detfile import write_det
from ..physics.geometry import DEFAULT_CALIBRATION, Calibration
from ..physics.materials import get_material
from ..physics.simulate import DEFAULT_ENERGY_BAND_KEV
from .microstructure import DOMAIN_KINDS, Microstructure, build_microstructure
from .render import background_model, compose_image, noise_sigma, render_components
from .spots import QUALITY, SpotComponents, SpotTable, build_spots

__all__ = ["TRUTH_FORMAT_VERSION", "ScanParameters", "ScanPlan", "plan_scan", "simulate_scan", "truth_dataset", "write_truth"]

TRUTH_FORMAT_VERSION = 1
_STREAM_MICRO, _STREAM_SPOTS, _STREAM_BACKGROUND, _STREAM_NOISE = range(4)


@dataclass
class ScanParameters:
    """Generator parameters (all written to the truth's ``generator_parameters`` attribute)."""

    material: str = "Cu"
    shape: tuple = (5, 5)
    grains: int = 12
    step_um: float = 1.0
    seed: int = 0
    energy_band_kev: tuple = DEFAULT_ENERGY_BAND_KEV
    beam_size_um: float | None = None  # footprint diameter, default 1.5 × step
    orientation_gradient_deg_per_um: float = 0.02
    strain_magnitude: float = 1e-3
    twin_fraction: float = 0.0
    fine_twin_grains: int = 0
    fine_twin_period_um: float = 4.0
    twin_law: str = "sigma3"  # microstructure.TWIN_LAWS: "sigma3" (cubic Σ3) or "dauphine" (60° about c)
    subgrain_fraction: float = 0.0
    subgrain_misorientation_deg: float = 1.0
    second_phase: str | None = None
    second_phase_fraction: float = 0.3
    substrate: str | None = None
    substrate_weight: float = 1.0
    deep_grains: int = 0
    deep_weight: float = 0.08
    bad_spot_fraction: float = 0.1
    broad_spot_fraction: float = 0.03
    amplitude_median: float = 1500.0
    amplitude_decades: float = 0.75
    min_amplitude: float = 5.0
    read_noise: float = 2.5
    gain: float = 0.08
    saturation: int = 65535
    dead_pixels: int = 2
    prefix: str = "scan"

    def to_attrs(self) -> dict:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclass
class ScanPlan:
    """Everything of a scan except the pixels; :meth:`render` makes one image."""

    params: ScanParameters
    calibration: Calibration
    materials: list
    micro: Microstructure
    spots: SpotTable
    components: SpotComponents
    dark: np.ndarray
    halo: np.ndarray
    background_sigma: np.ndarray
    halo_scale: np.ndarray  # (ny, nx)
    dead_pixels: np.ndarray  # flat indices
    background_info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.micro.shape

    @property
    def n_images(self) -> int:
        return int(np.prod(self.shape))

    def render(self, index: int) -> np.ndarray:
        """uint16 image (rows, cols) of raster point ``index = iy · nx + ix``."""
        c = self.components
        lo, hi = c.image_start[index], c.image_start[index + 1]
        _, flat, value = render_components(
            c.col[lo:hi], c.row[lo:hi], c.amplitude[lo:hi], c.sigma_major[lo:hi], c.sigma_minor[lo:hi],
            c.angle[lo:hi], self.calibration.frame_shape,
        )
        rng = np.random.default_rng(np.random.SeedSequence([self.params.seed, _STREAM_NOISE, int(index)]))
        return compose_image(
            self.dark, self.halo, self.background_sigma, flat, value, rng,
            halo_scale=float(self.halo_scale.reshape(-1)[index]), gain=self.params.gain,
            saturation=self.params.saturation, dead_pixels=self.dead_pixels,
        )

    def image_name(self, index: int) -> str:
        return f"{self.params.prefix}_{index:04d}.tif"


def _rng(seed, stream):
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def plan_scan(params: ScanParameters | None = None, *, calibration: Calibration | None = None, **kwargs) -> ScanPlan:
    """Build the microstructure, truth spots and background of a scan (no images yet)."""
    params = ScanParameters(**kwargs) if params is None else params
    cal = DEFAULT_CALIBRATION if calibration is None else calibration
    if int(params.seed) < 0:
        raise ValueError(f"seed must be >= 0, got {params.seed}")
    materials = [get_material(params.material)]
    if params.second_phase:
        materials.append(get_material(params.second_phase))
    if params.substrate:
        materials.append(get_material(params.substrate))
    micro = build_microstructure(
        tuple(params.shape), params.step_um, params.grains, _rng(params.seed, _STREAM_MICRO),
        [m.lattice_parameters for m in materials],
        beam_size_um=params.beam_size_um,
        orientation_gradient_deg_per_um=params.orientation_gradient_deg_per_um,
        strain_magnitude=params.strain_magnitude,
        twin_fraction=params.twin_fraction,
        fine_twin_grains=params.fine_twin_grains,
        fine_twin_period_um=params.fine_twin_period_um,
        twin_law=params.twin_law,
        subgrain_fraction=params.subgrain_fraction,
        subgrain_misorientation_deg=params.subgrain_misorientation_deg,
        second_phase_fraction=params.second_phase_fraction if params.second_phase else 0.0,
        deep_grains=params.deep_grains,
        deep_weight=params.deep_weight,
        substrate=bool(params.substrate),
        substrate_weight=params.substrate_weight,
    )

    # background of this scan (detector offsets, halo), drawn once
    rng = _rng(params.seed, _STREAM_BACKGROUND)
    n_rows, n_cols = cal.frame_shape
    info = dict(
        dark_offset=float(rng.uniform(1000.0, 1006.0)),
        halo_amplitude=float(rng.uniform(35.0, 150.0)),
        halo_centre=[float(rng.uniform(0.426, 0.453) * n_rows), float(rng.uniform(0.474, 0.484) * n_cols)],
        halo_radius=float(rng.uniform(0.37, 0.42) * max(n_rows, n_cols)),
        halo_power=1.8,
        quadrant_offsets=[float(v) for v in rng.normal(0.0, 1.5, 4)],
    )
    dark, halo = background_model(cal.frame_shape, **info)
    halo_scale = rng.uniform(0.9, 1.1, tuple(params.shape))
    dead = rng.choice(n_rows * n_cols, size=int(params.dead_pixels), replace=False)
    info["dead_pixels_row_col"] = [[int(i // n_cols), int(i % n_cols)] for i in dead]
    info["read_noise"] = params.read_noise
    info["gain"] = params.gain

    table, comps = build_spots(
        micro, materials, cal, _rng(params.seed, _STREAM_SPOTS),
        seed=int(params.seed), energy_band_kev=tuple(params.energy_band_kev),
        background=(dark, halo), halo_scale=halo_scale, read_noise=params.read_noise, gain=params.gain,
        saturation=params.saturation, amplitude_median=params.amplitude_median,
        amplitude_decades=params.amplitude_decades, bad_spot_fraction=params.bad_spot_fraction,
        broad_spot_fraction=params.broad_spot_fraction, min_amplitude=params.min_amplitude,
    )
    return ScanPlan(
        params=params, calibration=cal, materials=materials, micro=micro, spots=table, components=comps,
        dark=dark, halo=halo, background_sigma=noise_sigma(halo, params.read_noise, params.gain),
        halo_scale=halo_scale, dead_pixels=dead, background_info=info,
    )


# ------------------------------------------------------------------------------------------ truth
def truth_dataset(plan: ScanPlan):
    """The ground truth as an :class:`xarray.Dataset` (names in ``docs/truth-format.md``)."""
    m, s, p = plan.micro, plan.spots, plan.params
    ny, nx = m.shape
    yxs = ("y", "x", "grain_slot")
    mat = ("y", "x", "grain_slot", "i3", "j3")
    d = m.domains
    data = {
        "grain_id": (yxs, m.grain_id.astype(np.int32)),
        "grain_weight": (yxs, m.grain_weight),
        "grain_material": (yxs, m.grain_material.astype(np.int16)),
        "orientation_matrix": (mat, m.orientation_matrix),
        "rotation_matrix": (mat, m.rotation),
        "deviatoric_strain": (mat, m.deviatoric_strain),
        "grain_map": (("y", "x"), m.grain_map.astype(np.int32)),
        "n_spots": (("y", "x"), np.bincount(s.y.astype(np.int64) * nx + s.x, minlength=ny * nx).reshape(ny, nx).astype(np.int32)),
        "halo_scale": (("y", "x"), plan.halo_scale),
        "grain_kind": (("grain",), d.kind.astype(np.int8)),
        "grain_parent": (("grain",), d.parent.astype(np.int32)),
        "grain_phase": (("grain",), d.material.astype(np.int16)),
        "grain_base_orientation": (("grain", "i3", "j3"), d.rotation),
    }
    for name in ("y", "x", "grain", "material", "h", "k", "l", "energy_kev", "two_theta", "chi", "col", "row",
                 "amplitude", "noise_sigma", "background", "sigma_major", "sigma_minor", "angle_deg", "quality"):
        data[f"spot_{name}"] = (("spot",), getattr(s, name))
    data["spot_slot"] = (("spot",), s.slot)
    ds = xr.Dataset(
        data,
        coords={
            "y": np.arange(ny), "x": np.arange(nx), "grain_slot": np.arange(m.grain_id.shape[2]),
            "grain": np.arange(len(d)), "spot": np.arange(len(s)), "i3": np.arange(3), "j3": np.arange(3),
            "y_um": (("y",), np.arange(ny) * p.step_um), "x_um": (("x",), np.arange(nx) * p.step_um),
        },
    )
    ds.attrs.update(
        truth_format_version=TRUTH_FORMAT_VERSION,
        calibration=plan.calibration.to_dict(),
        materials=[mt.name for mt in plan.materials],
        material_definitions=[mt.to_dict() for mt in plan.materials],
        material_lattice_parameters=[list(mt.lattice_parameters) for mt in plan.materials],
        step_um=float(p.step_um),
        seed=int(p.seed),
        generator_parameters=p.to_attrs(),
        background=plan.background_info,
        grain_kinds=list(DOMAIN_KINDS),
        spot_qualities=dict(QUALITY),
        image_dir="images",
        image_name_format=p.prefix + "_{index:04d}.tif",
        raster_order="index = y * nx + x",
    )
    return ds


def write_truth(truth, path) -> Path:
    """Write the truth Dataset as zarr v3 with consolidated metadata (``xarray.open_zarr`` opens
    it without warnings)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        truth.to_zarr(path, mode="w", zarr_format=3, consolidated=True)
    return Path(path)


# ----------------------------------------------------------------------------------------- output
#: written by :func:`simulate_scan` next to its output: the files it wrote (``--overwrite`` deletes
#: only those)
MANIFEST = "simulation.json"
_WRITTEN_BY = "laueflow simulate"
_OWN_NAMES = ("calib.det", "mask.tif", "truth.zarr")


def output_files(prefix: str, n_images: int) -> list[str]:
    """Paths (relative to the output folder, ``/``-separated) that a simulation writes."""
    return [*_OWN_NAMES, *(f"images/{prefix}_{i:04d}.tif" for i in range(n_images))]


def _read_manifest(out_dir: Path) -> set[str]:
    """Files recorded in ``out_dir/simulation.json`` (empty set if none); FileExistsError if that
    file is not a manifest of laueflow simulate or lists a path simulate never writes."""
    path = out_dir / MANIFEST
    if not path.exists():
        return set()
    try:
        data = json.loads(path.read_text())
        files = data["files"] if data.get("written_by") == _WRITTEN_BY else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        files = None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise FileExistsError(f"{path} was not written by `laueflow simulate` (no 'written_by': "
                              f"{_WRITTEN_BY!r} and 'files' list), so --overwrite will not delete anything "
                              f"in {out_dir}; choose another --out or move the folder's files away")
    odd = [f for f in files if f not in _OWN_NAMES and not re.fullmatch(r"images/[^/\\]+\.tif", f)]
    if odd:
        raise FileExistsError(f"{path} lists {odd[:3]}, which `laueflow simulate` never writes; "
                              f"not deleting anything in {out_dir}: choose another --out")
    return set(files)


def _unrecorded(out_dir: Path, recorded: set[str]) -> list[str]:
    """calib.det, mask.tif, truth.zarr and files in images/ that the manifest does not record."""
    found = [name for name in _OWN_NAMES if (out_dir / name).exists()]
    if (out_dir / "images").is_dir():
        found += sorted(f"images/{p.name}" for p in (out_dir / "images").iterdir())
    return [name for name in found if name not in recorded]


def _check_out_dir(out_dir: Path, overwrite: bool) -> set[str]:
    """What ``--overwrite`` must delete before writing into ``out_dir`` (deletes nothing);
    FileExistsError for a file, a non-empty folder without ``overwrite``, or a folder holding
    scan files that simulate did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"--out {out_dir} is a file, not a folder; choose a folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return set()
    if not overwrite:
        raise FileExistsError(f"output directory {out_dir} is not empty (use --overwrite to replace its scan)")
    recorded = _read_manifest(out_dir)
    foreign = _unrecorded(out_dir, recorded)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(
            f"--overwrite refused: {out_dir} holds {shown}, which `laueflow simulate` did not write "
            f"(not listed in {out_dir / MANIFEST}); laueflow deletes only its own files. Move them "
            "away or choose another --out")
    return recorded


def _clear_and_record(out_dir: Path, recorded: set[str], files: list[str]) -> None:
    """Delete the files of the previous simulation, then record ``files`` (before writing them,
    so that an interrupted simulation can still be overwritten)."""
    for name in sorted(recorded):
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    manifest = {"written_by": _WRITTEN_BY, "laueflow_version": __version__, "files": files}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def simulate_scan(
    out_dir,
    *,
    calibration: Calibration | None = None,
    overwrite: bool = False,
    progress: bool = True,
    compression=None,
    **params,
) -> dict:
    """Simulate a scan and write images, ``calib.det``, ``mask.tif``, ``truth.zarr`` and the
    manifest ``simulation.json`` into ``out_dir``.

    ``overwrite``: replace the simulation in a non-empty ``out_dir``, deleting only the files its
    manifest lists; a ``calib.det``, ``mask.tif``, ``truth.zarr`` or image the manifest does not
    list (a user's own) is refused with ``FileExistsError``, before anything is deleted.

    Keyword arguments are the fields of :class:`ScanParameters` (``material="Cu"``,
    ``shape=(ny, nx)``, ``grains``, ``step_um``, ``seed``, ``twin_fraction``, ``substrate`` …).
    ``compression``: passed to ``tifffile.imwrite`` (default None: uncompressed, like the
    beamline; ``"zlib"`` is ≈3× smaller but ≈40× slower to write). Returns a summary dict.
    """
    out_dir = Path(out_dir)
    p = ScanParameters(**params)
    p.shape = tuple(int(v) for v in p.shape)
    recorded = _check_out_dir(out_dir, overwrite)  # before the (long) plan; deletes nothing
    t0 = time.perf_counter()
    plan = plan_scan(p, calibration=calibration)  # validates every parameter
    t_plan = time.perf_counter() - t0
    _clear_and_record(out_dir, recorded, output_files(p.prefix, plan.n_images))
    cal = plan.calibration
    ub0 = plan.micro.orientation_matrix[0, 0, 0]
    write_det(out_dir / "calib.det", cal, material=plan.materials[0].name, ub=ub0, source="laueflow simulate")
    mask = np.zeros(cal.frame_shape, np.uint8)
    mask.reshape(-1)[np.asarray(plan.dead_pixels, dtype=np.int64)] = 1
    tifffile.imwrite(out_dir / "mask.tif", mask)
    t_render = 0.0
    images = out_dir / "images"
    count_sums = np.zeros(plan.n_images, np.int64)
    for index in tqdm(range(plan.n_images), desc="simulate", unit="img", disable=not progress):
        t = time.perf_counter()
        image = plan.render(index)
        t_render += time.perf_counter() - t
        tifffile.imwrite(images / plan.image_name(index), image, compression=compression)
        count_sums[index] = image.sum(dtype=np.int64)
    truth = truth_dataset(plan)
    truth["image_count_sum"] = (("y", "x"), count_sums.reshape(p.shape), {
        "units": "counts", "description": "sum of the counts of the image written at the point: links the truth "
                                          "to the scan ingested from these images (`laueflow evaluate` checks it)"})
    write_truth(truth, out_dir / "truth.zarr")
    q = plan.spots.quality
    return {
        "out_dir": str(out_dir),
        "images": plan.n_images,
        "shape": list(p.shape),
        "grains": int(len(plan.micro.domains)),
        "spots": int(len(plan.spots)),
        "spots_per_image": float(len(plan.spots) / plan.n_images),
        "spot_quality_counts": {name: int((q == code).sum()) for name, code in QUALITY.items()},
        "materials": [m.name for m in plan.materials],
        "plan_s": round(t_plan, 3),
        "render_s": round(t_render, 3),
        "images_per_s": round(plan.n_images / max(t_render, 1e-9), 2),
        "total_s": round(time.perf_counter() - t0, 3),
    }
