"""Index LaueTools peak-list files (``.dat`` / ``.cor``) on Dask: the fan-out over files and the
file I/O of ``laueflow index`` (no science here: :func:`~laueflow.stages.indexing.stage.index_peaks`
and :func:`~laueflow.stages.strain.refine_strain` do it).

The driver finds the files (:func:`find_peaklists`), picks the one calibration of the run
(:func:`choose_calibration`), checks what the output folder would lose (:func:`existing_outputs`),
resolves the indexer model once (``laueflow.pipeline.indexers.get_indexer``) and hands the model
*path* to the tasks; each worker loads it once (:func:`~laueflow.pipeline.models.cached_model`).
A task indexes a few files (:func:`index_files`), writes one ``.fit`` file per grain and returns
small per-file records (:class:`FileResult`); a file that cannot be read or indexed gives a record
with ``error`` set and the others go on. :func:`write_summary` writes the table.
"""
from __future__ import annotations

import csv
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..io.indexer_files import load_indexer
from ..io.lauetools_files import PEAKLIST_SUFFIXES, read_cor, header_calibration, read_peaklist, write_fit
from ..physics.geometry import Calibration, angles_to_pixel, pixel_to_angles
from ..physics.orientations import matrix_to_euler
from ..physics.strain import polar_rotation
from ..physics.ub_variants import choose_ub_variant
from .models import cached_model

__all__ = ["IndexJob", "FileResult", "find_peaklists", "output_stems", "fit_name", "choose_calibration",
           "calibration_differences", "existing_outputs", "index_files", "run_index", "write_summary",
           "SUMMARY_COLUMNS"]

#: calibration values closer than this are the same (mm, px, deg): formatting, not a difference
CALIBRATION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class IndexJob:
    """What every file of a run is indexed with (pickled to the workers once per task).

    ``calibration``: the run's calibration (the model was trained for it); ``from_det``: it came
    from ``--calibration`` (it then wins over .cor headers, whose angles are recomputed from their
    pixel columns), else every .cor must carry it in its header. ``model_path``: the indexer file.
    """

    out_dir: str
    model_path: str
    calibration: Calibration
    from_det: bool
    max_grains: int = 5
    n_predict: int | None = None
    ub_variant: str = "laueflow"
    reference_ub: np.ndarray | None = None
    index_params: dict = field(default_factory=dict)
    strain_params: dict = field(default_factory=dict)
    device: str = "cpu"


@dataclass
class FileResult:
    """One input file: its peaks, how they were used, one row per grain (``grains``: dicts of
    summary columns), the files written, notes, and ``error`` (None when it was indexed)."""

    file: str
    stem: str
    n_peaks: int | None = None
    intensities: str = ""
    n_predict: int | None = None
    n_seed_spots: int | None = None
    grains: list = field(default_factory=list)
    written: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    error: str | None = None
    strain_refined: bool = False


# --------------------------------------------------------------------------- driver side
def find_peaklists(inputs: Iterable) -> tuple[list[Path], list[str]]:
    """Files to index: each input a ``.dat``/``.cor`` file or a folder (its ``.dat``/``.cor``
    files, not recursive, sorted; a ``.dat`` with a ``.cor`` of the same name next to it is left
    out: LaueTools made that ``.cor`` from it). Returns (files, notes); ``ValueError`` for a
    missing path, another kind of file, or a folder without peak lists."""
    files: list[Path] = []
    notes: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PEAKLIST_SUFFIXES)
            cors = {p.with_suffix("").name for p in found if p.suffix.lower() == ".cor"}
            skipped = [p for p in found if p.suffix.lower() == ".dat" and p.with_suffix("").name in cors]
            if not found:
                raise ValueError(f"{path}: no .dat or .cor files in this folder")
            if skipped:
                notes.append(f"{path}: {len(skipped)} .dat file(s) left out: a .cor of the same name is next to "
                             f"each (the same peaks with their angles), e.g. {skipped[0].name}")
            files += [p for p in found if p not in skipped]
        elif path.is_file():
            if path.suffix.lower() not in PEAKLIST_SUFFIXES:
                raise ValueError(f"{path}: not a peak list (give .dat or .cor files, or folders holding them)")
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique, notes


def output_stems(files: Sequence[Path]) -> list[str]:
    """The name stem of each file's outputs (``<stem>_g<k>.fit``); ``ValueError`` when two files
    would write the same names."""
    stems = [p.with_suffix("").name for p in files]
    seen: dict[str, Path] = {}
    clashes = []
    for stem, path in zip(stems, files):
        if stem in seen:
            clashes.append(f"{seen[stem]} and {path}")
        seen.setdefault(stem, path)
    if clashes:
        raise ValueError("these files would write the same output names (<name>_g<k>.fit): "
                         + "; ".join(clashes[:5]) + ("…" if len(clashes) > 5 else "")
                         + ". Index them into different --out folders")
    return stems


def fit_name(stem: str, grain: int) -> str:
    return f"{stem}_g{grain}.fit"


def calibration_differences(a: Calibration, b: Calibration, tol: float = CALIBRATION_TOLERANCE) -> list[str]:
    """What differs between two calibrations (beyond ``tol`` mm/px/deg), as ``name a vs b``."""
    out = [f"{name} {x!r} vs {y!r}" for name, x, y in
           zip(("dd", "xcen", "ycen", "xbet", "xgam"), a.parameters, b.parameters) if abs(x - y) > tol]
    if abs(a.pixel_size_mm - b.pixel_size_mm) > 1e-7:
        out.append(f"pixelsize {a.pixel_size_mm!r} vs {b.pixel_size_mm!r}")
    if tuple(a.frame_shape) != tuple(b.frame_shape):
        out.append(f"framedim {tuple(a.frame_shape)} vs {tuple(b.frame_shape)}")
    return out


def choose_calibration(files: Sequence[Path]) -> Calibration:
    """The one calibration of .cor files indexed without ``--calibration``: the one their headers
    hold. ``ValueError`` when there is a .dat, when no header holds one, or when they differ (one
    model is trained per calibration). Unreadable files are skipped here (their task reports them)."""
    dats = [p for p in files if p.suffix.lower() == ".dat"]
    if dats:
        raise ValueError(f"--calibration FILE.det is needed for .dat files (peak pixels only), e.g. {dats[0]}")
    found: list[tuple[Calibration, Path]] = []
    for path in files:
        try:
            calibration = header_calibration(read_cor(path)[1], path)
        except (OSError, ValueError):
            continue
        if calibration is not None and not any(not calibration_differences(calibration, c) for c, _ in found):
            found.append((calibration, path))
    if not found:
        raise ValueError("no .cor file holds a calibration in its header (# dd : …, # xcen : …): give "
                         "--calibration FILE.det")
    if len(found) > 1:
        (a, pa), (b, pb) = found[:2]
        raise ValueError(f"the .cor files hold {len(found)} different calibrations ({pa.name} and {pb.name}: "
                         + ", ".join(calibration_differences(a, b)) + "); one indexer model is used per run: "
                         "give --calibration FILE.det (it wins over the headers), or index them separately")
    return found[0][0]


def existing_outputs(out_dir, stems: Sequence[str], max_grains: int, summary: str) -> list[Path]:
    """Files in ``out_dir`` this run could write: ``<stem>_g<k>.fit`` (k < max_grains) and the summary."""
    out = Path(out_dir)
    candidates = [out / summary] + [out / fit_name(s, k) for s in stems for k in range(max_grains)]
    return [p for p in candidates if p.exists()]


# --------------------------------------------------------------------------- worker side
def _load_model(path: str, device: str):
    indexer = load_indexer(path)
    indexer.model.to(device)
    return indexer


def _angles(peaks, job: IndexJob, result: FileResult):
    """(calibration, 2θ, χ, col, row) of one file; notes on what was used."""
    calibration = job.calibration
    header = peaks.calibration
    if peaks.kind == "dat":
        tth, chi = pixel_to_angles(peaks.col, peaks.row, calibration)
        return calibration, tth, chi, peaks.col, peaks.row
    if not job.from_det:
        if header is None:
            raise ValueError("no calibration in its header (# dd : …): give --calibration FILE.det")
        differs = calibration_differences(header, calibration)
        if differs:
            raise ValueError("its header calibration differs from the run's (" + ", ".join(differs)
                             + "): give --calibration FILE.det or index it separately")
        return calibration, peaks.two_theta, peaks.chi, peaks.col, peaks.row
    differs = calibration_differences(header, calibration) if header is not None else []
    if peaks.col is not None:
        if differs:
            result.notes.append("warning: header calibration differs from --calibration (" + ", ".join(differs)
                                + "); 2theta/chi recomputed from the pixel columns with --calibration")
        tth, chi = pixel_to_angles(peaks.col, peaks.row, calibration)
        return calibration, tth, chi, peaks.col, peaks.row
    if differs:
        result.notes.append("warning: header calibration differs from --calibration (" + ", ".join(differs)
                            + "); no pixel columns to recompute 2theta/chi: the file's angles are used")
    return calibration, peaks.two_theta, peaks.chi, None, None


def _grain_row(g, material, ub, out, strain, refined: bool, fit_file: str, job: IndexJob) -> dict:
    variant = choose_ub_variant(ub, material, job.ub_variant, job.reference_ub)
    euler = matrix_to_euler(polar_rotation(variant.ub))
    row = {"grain": g, "material": material.name, "matching_rate": float(out["matching_rate"][0, g]),
           "n_matched": int(out["matched_spots"][0, g]), "mean_residual_deg": float(out["mean_residual_deg"][0, g]),
           "euler_phi1_deg": euler[0], "euler_Phi_deg": euler[1], "euler_phi2_deg": euler[2],
           "variant_ambiguous": int(out["variant_ambiguous"][0, g]), "fit_file": fit_file}
    if strain is None:
        row["strain_status"] = "not refined: no pixel columns"
    else:
        from ..stages.strain import STATUS  # deferred: the strain package imports scipy

        status = int(strain["strain_status"][0, g])
        row["strain_status"] = STATUS.get(status, str(status)) if status else "ok"
        row["strain_n_pairs"] = int(strain["strain_n_pairs"][0, g])
        row["strain_rms_px"] = float(strain["strain_rms_px"][0, g])
        if refined:
            row["von_mises_strain_1e-3"] = float(strain["von_mises_strain"][0, g]) * 1e3
    return row


def index_file(path, stem: str, job: IndexJob, indexer) -> FileResult:
    """Read, index, refine and write one peak list; never raises for a bad file (``error`` set)."""
    from ..stages.indexing.stage import index_peaks  # deferred: imports torch
    from ..stages.strain import refine_strain  # deferred: imports scipy

    result = FileResult(file=str(path), stem=stem)
    try:
        peaks = read_peaklist(path)
        calibration, tth, chi, col, row = _angles(peaks, job, result)
        tth, chi = np.asarray(tth, float), np.asarray(chi, float)
        valid = np.isfinite(tth) & np.isfinite(chi)
        result.n_peaks = int(valid.sum())
        if result.n_peaks < 2:
            result.notes.append(f"{result.n_peaks} peak(s): nothing to index")
            return result
        intensity = peaks.intensity
        if intensity is None:
            result.intensities = "none"
            result.notes.append("no intensity column: spots used in file order")
        else:
            known = np.asarray(intensity, float)[valid & np.isfinite(intensity)]
            if len(known) == 0 or np.ptp(known) == 0:
                result.intensities = "all equal"
                result.notes.append("all intensities equal: spots used in file order")
                intensity = None
            else:
                result.intensities = "given"
        n_predict = job.n_predict or max(int(indexer.config.n_centres), 25 * int(job.max_grains))
        result.n_predict = min(n_predict, result.n_peaks)
        tth[~valid] = np.nan
        chi[~valid] = np.nan
        out = index_peaks(tth[None], chi[None], None if intensity is None else np.asarray(intensity, float)[None],
                          indexer=indexer, calibration=calibration, max_grains=job.max_grains,
                          n_predict=n_predict, device=job.device, **job.index_params)
        materials = indexer.materials
        result.n_seed_spots = int(out["n_seed_spots"][0])
        n_grains = int(out["grain_count"][0])
        if out["variant_ambiguous"][0, :n_grains].any():
            result.notes.append(
                "grain(s) " + ", ".join(str(g) for g in np.flatnonzero(out["variant_ambiguous"][0, :n_grains]))
                + ": a pseudo-symmetric variant (e.g. quartz's Dauphiné twin) puts every spot at the same place "
                + ("and the intensities did not decide" if intensity is not None else "and there are no intensities")
                + ": the orientation may be that variant (docs/indexing.md, 'Variants with the same spots')")
        strain = None
        if col is None:
            result.notes.append("no pixel columns: indexed only (no strain refinement); .fit pixels computed "
                                "from 2theta/chi")
            col, row = angles_to_pixel(tth, chi, calibration)
        elif n_grains:
            strain = refine_strain(tth[None], chi[None], np.asarray(col, float)[None], np.asarray(row, float)[None],
                                   out["orientation_matrix"], out["grain_material"], materials, calibration,
                                   **job.strain_params)
        intensity_out = None if peaks.intensity is None else np.asarray(peaks.intensity, float)
        for g in range(n_grains):
            material = materials[int(out["grain_material"][0, g])]
            refined = strain is not None and int(strain["strain_status"][0, g]) == 0
            if refined:
                ub = strain["refined_orientation"][0, g]
                spots = np.flatnonzero(strain["peak_grain_refined"][0] == g)
                hkl = strain["peak_hkl_refined"][0, spots]
                result.strain_refined = True
            else:
                ub = out["orientation_matrix"][0, g]
                spots = np.flatnonzero(out["peak_grain"][0] == g)
                hkl = out["hkl"][0, spots]
            name = fit_name(stem, g)
            fit = write_fit(Path(job.out_dir) / name, ub=ub, material=material, calibration=calibration, hkl=hkl,
                            obs_col=np.asarray(col, float)[spots], obs_row=np.asarray(row, float)[spots],
                            intensity=None if intensity_out is None else intensity_out[spots], spot_index=spots,
                            grain_index=g, source=str(path), ub_variant=job.ub_variant,
                            reference_ub=job.reference_ub, strain=refined)
            result.written.append(str(fit))
            result.grains.append(_grain_row(g, material, ub, out, strain, refined, name, job))
    except Exception as err:  # noqa: BLE001 — one bad file must not stop the others; reported per file
        message = str(err) if isinstance(err, (OSError, ValueError)) else f"{type(err).__name__}: {err}"
        result.error = message.replace(str(path) + ": ", "").replace(str(path) + ", ", "")
    return result


def index_files(paths: Sequence[str], stems: Sequence[str], job: IndexJob) -> list[FileResult]:
    """One task: index a few files with the model loaded once per worker process."""
    try:
        indexer = cached_model(_load_model, job.model_path, device=job.device)
    except Exception as err:  # noqa: BLE001 — reported for each file of the task
        return [FileResult(file=str(p), stem=s, error=f"could not load the indexer model {job.model_path}: {err}")
                for p, s in zip(paths, stems)]
    return [index_file(p, s, job, indexer) for p, s in zip(paths, stems)]


def _chunks(n: int, n_workers: int, most: int = 16) -> list[slice]:
    size = max(1, min(most, math.ceil(n / max(1, 4 * n_workers))))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def run_index(files: Sequence[Path], stems: Sequence[str], job: IndexJob, client=None, *,
              progress: Callable[[int, int], None] | None = None) -> list[FileResult]:
    """Index every file: in this process when ``client`` is None, else as Dask tasks of a few files
    each (results in the order of ``files``). A task lost with its worker is reported per file."""
    paths = [os.fspath(p) for p in files]
    if client is None:
        results = []
        for i, (p, s) in enumerate(zip(paths, stems)):
            results += index_files([p], [s], job)
            if progress:
                progress(i + 1, len(paths))
        return results
    from distributed import as_completed  # deferred: distributed is heavy

    n_workers = max(1, len(client.nthreads()))
    chunks = _chunks(len(paths), n_workers)
    run_id = uuid.uuid4().hex[:8]
    futures = {client.submit(index_files, paths[c], stems[c], job, pure=False, key=f"laueflow-index-{run_id}-{i}"): c
               for i, c in enumerate(chunks)}
    by_slice: dict = {}
    done = 0
    for future in as_completed(futures):
        c = futures[future]
        try:
            by_slice[c.start] = future.result()
        except Exception as err:  # noqa: BLE001 — a task that failed as a whole (lost worker …)
            by_slice[c.start] = [FileResult(file=p, stem=s, error=f"task failed: {type(err).__name__}: {err}")
                                 for p, s in zip(paths[c], stems[c])]
        done += c.stop - c.start
        if progress:
            progress(done, len(paths))
    return [r for start in sorted(by_slice) for r in by_slice[start]]


# --------------------------------------------------------------------------- summary
SUMMARY_COLUMNS = ("file", "n_peaks", "intensities", "n_predict", "n_seed_spots", "grain", "material", "matching_rate",
                   "n_matched", "mean_residual_deg", "euler_phi1_deg", "euler_Phi_deg", "euler_phi2_deg",
                   "variant_ambiguous", "strain_status", "strain_n_pairs", "strain_rms_px", "von_mises_strain_1e-3", "fit_file",
                   "note", "error")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not np.isfinite(value) else f"{value:.6g}"
    if isinstance(value, (np.floating,)):
        return _cell(float(value))
    return str(value)


def summary_rows(results: Sequence[FileResult]) -> list[dict]:
    """One row per grain; a file without grains (or that failed) gets one row."""
    rows = []
    for r in results:
        base = {"file": r.file, "n_peaks": r.n_peaks, "intensities": r.intensities, "n_predict": r.n_predict,
                "n_seed_spots": r.n_seed_spots, "note": "; ".join(r.notes), "error": r.error}
        if r.error is None and not r.grains:
            base["note"] = "; ".join(["no grain found", *r.notes])
        for g in r.grains or [{}]:
            rows.append({**base, **g})
    return rows


def write_summary(path, results: Sequence[FileResult]) -> Path:
    """The summary table: comma-separated, or tab-separated when ``path`` ends with ``.tsv``."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(SUMMARY_COLUMNS)
        for row in summary_rows(results):
            writer.writerow([_cell(row.get(c)) for c in SUMMARY_COLUMNS])
    os.replace(tmp, path)
    return path
