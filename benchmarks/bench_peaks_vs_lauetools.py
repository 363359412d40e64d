"""laueflow's peak search and LaueTools 3.2.19 ``readmccd.PeakSearch``, side by side in one run.

    python benchmarks/bench_peaks_vs_lauetools.py [--workdir DIR] [--frames 3] [--seed 0]

Not part of the test suite; a few minutes on 2 cores (most of it LaueTools' Gaussian fits; the
first run also builds the LaueTools venv).

1. **LaueTools venv** (once, reused): ``WORKDIR/lauetools-venv`` by ``python3 -m venv``, then
   ``pip install lauetools==3.2.19 --no-deps`` and ``"numpy<2"`` plus what ``LaueTools.readmccd``
   imports (scipy, matplotlib, scikit-image, h5py, networkx, pillow, fabio, pyyaml, tqdm). Its
   other requirements (wxPython, ObjectListView2: the GUI) are not needed to import readmccd.
   LaueTools is never a laueflow dependency and none of its code is in laueflow.
2. **Frames**: ``--frames`` realistic full frames (2018×2016 uint16) per scene from laueflow's
   scan simulator (``laueflow.synth.scan.plan_scan``: dark offset ≈ 1000, off-centre halo, read +
   shot noise σ ≈ 3, spot amplitudes over 3–4 decades, σ ≈ 0.8–2 px, ≈ 10 % streaked, split or
   comet-like spots, two dead pixels), written as TIFF files: scene ``sparse`` (the simulator's
   default 12-grain Cu scan; 50–220 spots ≥ 60 counts per frame, like the GaN/Si images) and
   scene ``dense`` (40 grains, a 4-µm beam, 10 % broad spots: 230–350 spots ≥ 60 counts with a
   median of ≈ 220 counts and many fainter ones, like the ZnCuOCl image). Their statistics are
   printed next to the real BM32 ones (``shared/docs/real-image-statistics.md``).
3. **LaueTools** in its venv (a subprocess, one thread): ``PeakSearch`` with the settings BM32
   users run (LaueNN's LaueTools mode): ``local_maxima_search_method`` 0, ``IntensityThreshold``
   60, ``PixelNearRadius`` 10, ``boxsize`` 8, ``Data_for_localMaxima="auto_background"``,
   ``formulaexpression="A-B"``, Gaussian fit (``xtol`` 0.001, ``FitPixelDev`` 15,
   ``PeakSizeRange`` (0.65, 200)); and the same with method 1 (shift arrays, the ``.psp`` default,
   where ``PixelNearRadius`` is used). Seconds per image = CPU time of the ``PeakSearch`` call
   (reads the file, background, maxima, fits), after one untimed warm-up call; wall time too.
4. **laueflow** (one thread, ``laueflow.stages.peaks.find_peaks`` on each file read with
   tifffile, read included in the time): ``method: lauetools`` with the same numbers
   (``threshold_counts`` 60, ``min_distance_px`` 10, ``box_size_px`` 8); the default
   (``threshold_sigma`` 6); and the old translation of the numbers (default method,
   ``threshold_sigma: null``, ``threshold_counts`` 60, ``min_distance_px`` 10, ``box_size_px`` 8).
5. **Figures**: recall = fraction of LaueTools' peaks with a laueflow peak (its hottest pixel or
   its centroid) within 1.5 px; extra = laueflow peaks with no LaueTools peak within 1.5 px (of
   which: in LaueTools' excluded sCMOS junction bands x or y ∈ [997, 1019], and true simulated
   spots); LaueTools peaks within 20 px of a dead pixel and more than 3 px from every simulated
   spot are artefacts of its minimum-filter background (0 next to a dead pixel: a candidate within
   5 px of it, whose fit may move up to ``FitPixelDev`` 15 px) and are counted apart.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from laueflow.stages.peaks import find_peaks  # noqa: E402
from laueflow.synth import scan as synth_scan  # noqa: E402

LAUETOOLS_VERSION = "3.2.19"
LAUETOOLS_DEPS = ["numpy<2", "scipy", "matplotlib", "scikit-image", "h5py", "networkx", "pillow",
                  "fabio", "pyyaml", "tqdm"]
MATCH_PX = 1.5
DEAD_PX = 20.0  # a dead pixel's candidate lies within 5 px of it (10-px window), its fit may move 15 (FitPixelDev)
BANDS = (997, 1019)  # LaueTools' sCMOS junction bands (npixels=10 around 1007-1009), 0-based

#: the script run by LaueTools' interpreter: calls its public API only
RUNNER = r'''
import json, sys, time
import numpy as np
from LaueTools import readmccd

cfg = json.load(open(sys.argv[1]))
out = {}
for method in cfg["methods"]:
    kwargs = dict(cfg["peaksearch"], local_maxima_search_method=method)
    readmccd.PeakSearch(cfg["files"][0], **kwargs)  # warm-up, untimed
    for path in cfg["files"]:
        t0, c0 = time.perf_counter(), time.process_time()
        res = readmccd.PeakSearch(path, **kwargs)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        tab = np.zeros((0, 10)) if res is None or res[0] is None else np.atleast_2d(res[0])
        out.setdefault(str(method), []).append({"seconds": dt, "cpu": dc, "X": tab[:, 0].tolist(),
                                                "Y": tab[:, 1].tolist(), "I": tab[:, 2].tolist()})
json.dump(out, open(sys.argv[2], "w"))
'''


def ensure_lauetools_venv(workdir: Path, python: str) -> Path:
    venv = workdir / "lauetools-venv"
    exe = venv / "bin" / "python"
    marker = venv / "lauetools-ok"
    if marker.exists():
        return exe
    print(f"building the LaueTools venv in {venv} (once) …", flush=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(exe), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [f"lauetools=={LAUETOOLS_VERSION}", "--no-deps"], check=True)
    subprocess.run(pip + LAUETOOLS_DEPS, check=True)
    subprocess.run([str(exe), "-c", "from LaueTools import readmccd"], check=True,
                   env={**os.environ, "MPLBACKEND": "Agg"}, stdout=subprocess.DEVNULL)
    marker.write_text(LAUETOOLS_VERSION)
    return exe


#: scenes: ``plan_scan`` parameters (besides shape and seed)
SCENES = {
    "sparse": {},
    "dense": dict(grains=40, beam_size_um=4.0, amplitude_median=1000.0, broad_spot_fraction=0.1),
}


def make_frames(workdir: Path, scene: str, n: int, seed: int):
    plan = synth_scan.plan_scan(shape=(1, n), seed=seed, **SCENES[scene])
    frames_dir = workdir / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    files, stats = [], []
    spots = plan.spots
    truth = []
    for i in range(n):
        image = plan.render(i)
        path = frames_dir / f"{scene}_{seed}_{i:04d}.tif"
        tifffile.imwrite(path, image)
        files.append(str(path))
        sel = spots.x == i
        truth.append((np.c_[spots.col[sel], spots.row[sel]], spots.amplitude[sel], spots.quality[sel]))
        pct = np.percentile(image, [0.1, 1, 50, 99, 99.9])
        d = np.diff(image[::4].astype(np.float32), axis=1)
        noise = 1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2)
        stats.append((pct, int(image.max()), noise, int(sel.sum()), int((spots.amplitude[sel] >= 60).sum())))
    dead = np.c_[plan.dead_pixels % plan.calibration.n_cols, plan.dead_pixels // plan.calibration.n_cols]
    return files, truth, stats, dead


def run_lauetools(exe: Path, workdir: Path, files, threshold, near, box, methods):
    cfg = {"files": files, "methods": methods, "peaksearch": dict(
        CCDLabel="sCMOS", IntensityThreshold=threshold, PixelNearRadius=near, boxsize=box,
        Data_for_localMaxima="auto_background", formulaexpression="A-B", fit_peaks_gaussian=1,
        xtol=0.001, FitPixelDev=15, PeakSizeRange=[0.65, 200], NumberMaxofFits=3000,
        position_definition=1, return_histo=0, verbose=0, write_execution_time=0)}
    (workdir / "lt_config.json").write_text(json.dumps(cfg))
    (workdir / "lt_runner.py").write_text(RUNNER)
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    subprocess.run([str(exe), str(workdir / "lt_runner.py"), str(workdir / "lt_config.json"),
                    str(workdir / "lt_result.json")], check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((workdir / "lt_result.json").read_text())


def run_laueflow(files, params):
    find_peaks(tifffile.imread(files[0])[None], **params)  # warm-up
    out = []
    for path in files:
        t0, c0 = time.perf_counter(), time.process_time()
        res = find_peaks(tifffile.imread(path)[None], **params)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        k = int(res["peak_count"][0])
        out.append({"seconds": dt, "cpu": dc, "int": np.c_[res["peak_col_int"][0, :k], res["peak_row_int"][0, :k]],
                    "cen": np.c_[res["peak_col"][0, :k], res["peak_row"][0, :k]],
                    "intensity": res["peak_intensity"][0, :k]})
    return out


def compare(lt_frames, lf_frames, truth, dead):
    """Totals over the frames: LaueTools peaks (all / away from dead pixels), matched, extra …"""
    tot = dict(lt=0, lt_art=0, matched=0, matched_real=0, lf=0, extra=0, extra_band=0, extra_true=0)
    missed = []
    for lt, lf, (tpos, tamp, _) in zip(lt_frames, lf_frames, truth):
        ltp = np.c_[np.asarray(lt["X"]) - 1, np.asarray(lt["Y"]) - 1]  # LaueTools X, Y are 1-based
        art = np.zeros(len(ltp), bool)
        if len(ltp):  # near a dead pixel and on no simulated spot
            art = (cKDTree(dead).query(ltp)[0] < DEAD_PX) & (cKDTree(tpos).query(ltp)[0] > 3.0)
        both = np.r_[lf["int"], lf["cen"]]
        d = cKDTree(both).query(ltp)[0] if len(both) and len(ltp) else np.full(len(ltp), np.inf)
        hit = d <= MATCH_PX
        tot["lt"] += len(ltp)
        tot["lt_art"] += int(art.sum())
        tot["matched"] += int(hit.sum())
        tot["matched_real"] += int((hit & ~art).sum())
        for p, inten in zip(ltp[~hit & ~art], np.asarray(lt["I"])[~hit & ~art]):
            missed.append((float(p[0]), float(p[1]), float(inten)))
        n_lf = len(lf["int"])
        tot["lf"] += n_lf
        if n_lf:
            d_int = cKDTree(ltp).query(lf["int"])[0] if len(ltp) else np.full(n_lf, np.inf)
            d_cen = cKDTree(ltp).query(lf["cen"])[0] if len(ltp) else np.full(n_lf, np.inf)
            extra = np.minimum(d_int, d_cen) > MATCH_PX
            band = ((lf["int"] >= BANDS[0]) & (lf["int"] <= BANDS[1])).any(axis=1)
            true = cKDTree(tpos).query(lf["int"])[0] <= MATCH_PX
            tot["extra"] += int(extra.sum())
            tot["extra_band"] += int((extra & band).sum())
            tot["extra_true"] += int((extra & true).sum())
    return tot, missed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "laueflow-bench-lauetools")
    parser.add_argument("--frames", type=int, default=3, help="frames per scene (sparse, dense)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--python", default="python3", help="interpreter for the LaueTools venv (< 3.13)")
    parser.add_argument("--threshold", type=float, default=60.0, help="IntensityThreshold = threshold_counts")
    parser.add_argument("--near", type=int, default=10, help="PixelNearRadius = min_distance_px")
    parser.add_argument("--box", type=int, default=8, help="boxsize = box_size_px")
    parser.add_argument("--lauetools-methods", default="0,1", help="local_maxima_search_method values")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    exe = ensure_lauetools_venv(workdir, args.python)
    print("real BM32 images (real-image-statistics.md): percentiles 0.1/1/50/99/99.9 % ≈ 997-1015 / "
          "998-1021 / 1012-1069 / 1040-1155 / 1166-1301, noise σ 3.0-4.4, 89 / 198 / 334 LaueTools peaks")
    scenes = {}
    for k, scene in enumerate(SCENES):
        files, truth, stats, dead = make_frames(workdir, scene, args.frames, args.seed + k)
        scenes[scene] = (files, truth, dead)
        print(f"scene {scene}: {len(files)} frames 2018x2016 uint16, laueflow.synth.scan.plan_scan(shape=(1, "
              f"{args.frames}), seed={args.seed + k}, **{SCENES[scene]})")
        for i, (pct, mx, noise, n_spots, n60) in enumerate(stats):
            print(f"  frame {i}: percentiles {' / '.join(f'{v:.0f}' for v in pct)}, max {mx}, noise σ "
                  f"{noise:.1f}, {n_spots} spots ({n60} with amplitude ≥ 60 counts)")
    all_files = [f for files, _, _ in scenes.values() for f in files]

    methods = [int(m) for m in args.lauetools_methods.split(",") if m.strip()]
    t0 = time.perf_counter()
    lt = run_lauetools(exe, workdir, all_files, args.threshold, args.near, args.box, methods)
    print(f"LaueTools runs: {time.perf_counter() - t0:.0f} s wall (incl. import and warm-up)")

    configs = {
        "method: lauetools, same numbers": dict(method="lauetools", threshold_counts=args.threshold,
                                                min_distance_px=args.near, box_size_px=args.box),
        "default (threshold_sigma 6, min_distance_px 3, box_size_px 5)": {},
        f"default method, old table: threshold_sigma null, threshold_counts {args.threshold:g}, "
        f"min_distance_px {args.near}, box_size_px {args.box}": dict(
            threshold_sigma=None, threshold_counts=args.threshold, min_distance_px=args.near,
            box_size_px=args.box),
    }
    lf = {name: run_laueflow(all_files, params) for name, params in configs.items()}

    print()
    print(f"LaueTools {LAUETOOLS_VERSION}: IntensityThreshold {args.threshold:g}, PixelNearRadius {args.near}, "
          f"boxsize {args.box}, auto_background A-B, Gaussian fit; laueflow: threshold_counts / "
          f"min_distance_px / box_size_px the same numbers where given")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; "
          f"python {platform.python_version()}; one thread each; s/image = median CPU time of the call "
          f"(wall time in brackets: other work on a shared machine inflates it)")
    print("| scene | LaueTools method | laueflow | LaueTools peaks (artefacts at dead pixels) | recall of its "
          "real peaks | laueflow peaks | extra (in junction bands / true spots) | s/image LaueTools "
          "| s/image laueflow | speed ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    all_missed = []
    for m in methods:
        start = 0
        for scene, (files, truth, dead) in scenes.items():
            sl = slice(start, start + len(files))
            start += len(files)
            lt_frames = lt[str(m)][sl]
            t_lt = float(np.median([f["cpu"] for f in lt_frames]))
            w_lt = float(np.median([f["seconds"] for f in lt_frames]))
            for name, frames in lf.items():
                tot, missed = compare(lt_frames, frames[sl], truth, dead)
                if name.startswith("method: lauetools"):
                    all_missed += [(scene, m) + x for x in missed]
                t_lf = float(np.median([f["cpu"] for f in frames[sl]]))
                w_lf = float(np.median([f["seconds"] for f in frames[sl]]))
                real = tot["lt"] - tot["lt_art"]
                print(f"| {scene} | {m} | {name} | {tot['lt']} ({tot['lt_art']}) | "
                      f"{tot['matched_real'] / max(real, 1):.4f} ({tot['matched_real']} of {real}) | "
                      f"{tot['lf']} | {tot['extra']} ({tot['extra_band']} / {tot['extra_true']}) | "
                      f"{t_lt:.2f} ({w_lt:.2f}) | {t_lf:.3f} ({w_lf:.3f}) | {t_lt / t_lf:.0f}× |")
    print()
    if all_missed:
        print("LaueTools peaks missed by method: lauetools (scene, LaueTools method, X, Y 1-based, I): "
              + "; ".join(f"{sc} {m} ({x + 1:.1f}, {y + 1:.1f}, {i:.0f})" for sc, m, x, y, i in all_missed[:30]))


if __name__ == "__main__":
    sys.exit(main())
