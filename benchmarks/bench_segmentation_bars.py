"""Segmentation bars of issue #13 on simulated scans with known grain maps, from the CLI.

    python benchmarks/bench_segmentation_bars.py [--workdir DIR] [--features pixels|autoencoder]
           [--only grains,fine_twins,two_phase] [--shape 20x20] [--seed N] [--assign auto|nearest]
           [--pixel-scaling linear|log] [--inhomogeneous report|nearest_indexed]

For each scan: ``laueflow simulate`` → ``ingest`` → ``run`` (features → segmentation with the
K the silhouette suggests → select_delegates → peaks, angles, index on the selected points →
delegate_map, i.e. delegates first) → ``evaluate --json``. Reported: suggested K, the true
number of domains / twin variants / phases, the ARI against the domain, orientation
(twin-variant), parent-grain and phase maps, the fraction of points whose delegate orientation
is within 1° of their true grain and (two phases) the ARI of the delegates' indexed material
against the phase map (not index-free). ``--seed`` replaces every scan's own seed (another
microstructure of the same kind: the over-fitting check).

Scans (Cu unless said, full 2018 × 2016 frames, 1 µm step, 1.5 µm beam):
- ``grains``: 6 grains, 1.5° sub-grains in half of them, Σ3 lamellae in 30 % (bars: ARI ≥ 0.95
  at the suggested K, suggested K = number of domains; delegates-first ≥ 95 % within 1°; the
  index-free bar is the same run: features and segmentation never index);
- ``fine_twins``: 3 grains, the largest filled with Σ3 lamellae 2 µm wide (bar: ARI ≥ 0.9 on the
  twin-variant map);
- ``two_phase``: 8 grains, Cu + Si (half of the grains) (bar: ARI ≥ 0.95 on the phase map:
  the clusters follow grains; index-free, ``phase_groups`` groups them into phases from the
  delegates' and check points' peak lists, ``ari_phase_group_map``; the delegates' indexed
  material gives ``delegate_ari_phase_map``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SCANS = {
    "grains": ["--material", "Cu", "--grains", "6", "--subgrains", "0.5", "--subgrain-angle", "1.5",
               "--twins", "0.3", "--seed", "3"],
    "fine_twins": ["--material", "Cu", "--grains", "3", "--fine-twin-grains", "1", "--fine-twin-period", "4",
                   "--seed", "5"],
    "two_phase": ["--material", "Cu", "--second-phase", "Si", "--second-phase-fraction", "0.5", "--grains", "8",
                  "--seed", "7"],
}
DELEGATES = {"grains", "fine_twins", "two_phase"}
MATERIALS = {"grains": ["Cu"], "fine_twins": ["Cu"], "two_phase": ["Cu", "Si"]}


def laueflow(*args) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "laueflow.cli.main", *args], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def workflow(folder: Path, features: str, delegates: bool, assign: str = "auto", scaling: str = "linear",
             phases: bool = False, inhomogeneous: str = "nearest_indexed", check_points: int = 2) -> Path:
    stages = [f"  - features: {{method: {features}, pixel_scaling: {scaling}}}",
              f"  - segmentation: {{k_max: 20, assign: {assign}}}"]
    if delegates:
        stages += [f"  - select_delegates: {{check_points_per_cluster: {check_points}}}",
                   "  - peaks: {points: selected_points}", "  - angles: {points: selected_points}",
                   "  - index: {points: selected_points, max_grains: 3}",
                   f"  - delegate_map: {{inhomogeneous: {inhomogeneous}}}"]
    if phases:
        stages.append("  - phase_groups")
    path = folder / "segment.yaml"
    path.write_text(f"input: {folder / 'scan.zarr'}\noutput: {folder / 'results.zarr'}\nimages_per_task: 20\n"
                    "stages:\n" + "\n".join(stages) + "\n")
    return path


def scan_args(name: str, seed: int | None) -> list:
    args = list(SCANS[name])
    if seed is not None:
        args[args.index("--seed") + 1] = str(seed)
    return args


def one(name: str, work: Path, features: str, shape: str, seed: int | None = None, assign: str = "auto",
        scaling: str = "linear", reuse: bool = False, inhomogeneous: str = "nearest_indexed",
        check_points: int = 2) -> dict:
    folder = work / (name if seed is None else f"{name}-seed{seed}")
    args = scan_args(name, seed)
    times = {}
    if not (reuse and (folder / "scan.zarr").exists() and (folder / "truth.zarr").exists()):
        times = {"simulate": laueflow("simulate", *args, "--shape", shape, "--out", str(folder), "--quiet",
                                      "--overwrite")}
        times["ingest"] = laueflow("ingest", str(folder / "images"), "--shape", shape, "--calibration",
                                   str(folder / "calib.det"), "--mask", str(folder / "mask.tif"),
                                   *[a for m in MATERIALS[name] for a in ("--material", m)],
                                   "--out", str(folder / "scan.zarr"), "--overwrite", "--no-progress")
    times["run"] = laueflow("run", str(workflow(folder, features, name in DELEGATES, assign, scaling,
                                                     phases=len(MATERIALS[name]) > 1, inhomogeneous=inhomogeneous,
                                                     check_points=check_points)),
                            "--overwrite",
                            "--no-progress")
    laueflow("evaluate", str(folder / "results.zarr"), "--truth", str(folder / "truth.zarr"),
             "--json", str(folder / "evaluation.json"))
    metrics = json.loads((folder / "evaluation.json").read_text())["metrics"]
    seg = metrics["segmentation"]["summary"]
    row = {"scan": name, "seed": int(args[args.index("--seed") + 1]), **{k: seg[k] for k in seg if k.startswith(("ari_", "clusters", "true_domains",
                                                                     "orientation_labels", "parent_labels",
                                                                     "phase_labels"))},
           "times_s": {k: round(v, 1) for k, v in times.items()}}
    if "delegate_map" in metrics:
        dsum = metrics["delegate_map"]["summary"]
        row["delegate_fraction_within_1deg"] = dsum["fraction_within_1deg_of_truth"]
        row["delegate_unmapped_points"] = dsum["points_with_truth"] - dsum["points_mapped"]
        if dsum.get("points_nearest_indexed"):
            row["delegate_nearest_indexed_points"] = dsum["points_nearest_indexed"]
            row["delegate_nearest_indexed_within_1deg"] = dsum["nearest_indexed_fraction_within_1deg_of_truth"]
        if "ari_phase_map" in dsum:
            row["delegate_ari_phase_map"] = dsum["ari_phase_map"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/laueflow-bench-segmentation-bars")
    parser.add_argument("--features", default="pixels", choices=("pixels", "autoencoder"))
    parser.add_argument("--only", default=",".join(SCANS))
    parser.add_argument("--shape", default="20x20")
    parser.add_argument("--seed", type=int, default=None, help="replace every scan's seed (default: their own)")
    parser.add_argument("--assign", default="auto", choices=("auto", "unmix", "nearest"))
    parser.add_argument("--pixel-scaling", default="linear", choices=("linear", "log"))
    parser.add_argument("--inhomogeneous", default="nearest_indexed", choices=("report", "nearest_indexed"),
                        help="delegate_map's handling of the clusters its check points find inhomogeneous "
                             "(default: as workflows/delegates-first.yaml)")
    parser.add_argument("--check-points", type=int, default=2, help="select_delegates' check_points_per_cluster")
    parser.add_argument("--reuse", action="store_true", help="run on the scan.zarr + truth.zarr already in the "
                        "scan's folder (simulated and ingested before) instead of simulating again")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        print(json.dumps(one(name, work, args.features, args.shape, args.seed, args.assign, args.pixel_scaling,
                             args.reuse, args.inhomogeneous, args.check_points)), flush=True)


if __name__ == "__main__":
    main()
