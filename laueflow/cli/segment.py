"""``laueflow segment``: re-cluster a results store from its stored ``features`` (no re-run of the
scan) into a new named segmentation, keeping the earlier ones."""
from __future__ import annotations

import argparse

from ..io.store_lock import StoreLockedError
from ..kernels.clustering import SILHOUETTE_TOLERANCE
from ..pipeline.cluster import ClusterConfigError, connect, load_cluster_config
from .main import UserError

EXAMPLE = """\
examples:
  laueflow segment demo/results.zarr --k 6                  # KMeans, K = 6, 32 PCs
  laueflow segment demo/results.zarr                        # K = the one the scores suggest
  laueflow segment demo/results.zarr --k 6 --method bgm --pcs 16 --name twins-bgm
  laueflow segment big/results.zarr --k 12 --scheduler tcp://10.0.0.5:8786

Reads the 'features' the run stored (a workflow with the 'features' stage), computes PCA, the
clusters, the silhouette and Calinski-Harabasz scores for K in --k-range, the labelers' colours and
a delegate point per cluster, and writes them into the group segmentations/<name> of the same
store (open it with xarray.open_zarr(store, group="segmentations/<name>")). Earlier segmentations
stay; the store's attributes 'segmentations' and 'segmentation_latest' list them. The feature
matrix is clustered on one worker when it fits (--path auto), else distributed over the workers.
Method and parameters: docs/segmentation.md. Layout: docs/results-schema.md.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment", help="cluster a results store again from its stored features (new named segmentation)",
        description="Index-free segmentation of a results store from the autoencoder features it holds: "
                    "PCA, KMeans or a Bayesian Gaussian mixture, scores over K, labelers, delegates.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="results store (laueflow run, with the 'features' stage)")
    parser.add_argument("--k", type=int, help="number of clusters (default: the K the silhouette scores suggest)")
    parser.add_argument("--pcs", type=int, default=32, help="principal components kept (default 32)")
    parser.add_argument("--method", choices=("kmeans", "bgm"), default="kmeans",
                        help="kmeans (default) or bgm (Bayesian Gaussian mixture, fitted on the sample)")
    parser.add_argument("--assign", choices=("auto", "unmix", "nearest"), default="auto",
                        help="labels: unmix (each point's dominant domain by non-negative unmixing over the "
                             "nearest centroids; for features linear in the image), nearest (nearest centroid), "
                             "auto (default: unmix for kmeans, nearest for bgm)")
    parser.add_argument("--feature-scaling", choices=("auto", "standardize", "none"), default="auto",
                        help="standardize: each feature divided by its spread over the scan + the 70th percentile "
                             "of the spreads, so the brightest (saturated) spots do not decide the PCA; none: as "
                             "stored; auto (default: standardize for the features stage's features, none for a "
                             "plug-in's)")
    parser.add_argument("--k-range", type=int, nargs=2, metavar=("KMIN", "KMAX"), default=(2, 20),
                        help="K range of the scores (default 2 20)")
    parser.add_argument("--silhouette-tolerance", type=float, default=SILHOUETTE_TOLERANCE, metavar="S",
                        help=f"without --k: the smallest K whose silhouette is within S of the highest (default "
                             f"{SILHOUETTE_TOLERANCE:g}; 0: the K of the highest silhouette)")
    parser.add_argument("--name", help="name of the new segmentation (default: k<K>-pcs<PCS>-<method>)")
    parser.add_argument("--path", choices=("auto", "in_memory", "distributed"), default="auto",
                        help="where to fit: auto (default: one worker when the matrix fits), in_memory, distributed")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0): same seed, same result")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cluster", metavar="YAML", help="cluster config (default: a local cluster)")
    where.add_argument("--scheduler", metavar="ADDRESS", help="address of a running Dask scheduler")
    parser.set_defaults(func=run_segment)
    return parser


def run_segment(args) -> int:
    from ..io.store_lock import StoreLock
    from ..pipeline.segment import (SegmentError, check_name, check_segment_inputs,  # deferred: imports xarray
                                    require_results_store, segment_store)

    k_min, k_max = args.k_range
    if k_max < k_min:
        raise UserError(f"--k-range {k_min} {k_max}: KMAX is below KMIN; give the range in increasing order, "
                        f"e.g. --k-range {k_max} {k_min}")
    params = {"pcs": args.pcs, "method": args.method, "k_min": k_min, "k_max": k_max,
              "path": args.path, "seed": args.seed, "k": args.k, "assign": args.assign,
              "feature_scaling": args.feature_scaling, "silhouette_tolerance": args.silhouette_tolerance}
    if args.k is not None and args.k > params["k_max"]:
        params["k_max"] = args.k  # cluster slots for an explicit K (the scores then run up to K)
    try:
        config = load_cluster_config(args.cluster) if args.cluster else None
        if args.name is not None:
            check_name(args.name)
        require_results_store(args.results)  # before the lock, which would create a missing path's folders
        # the lock and every check before any worker starts: refused at once
        with StoreLock(args.results, "segment", log=print):
            check_segment_inputs(args.results, **params)
            with connect(config, address=args.scheduler) as client:
                summary = segment_store(args.results, client, name=args.name, **params)
    except (SegmentError, ClusterConfigError, StoreLockedError) as err:
        raise UserError(str(err)) from None
    info = summary.info
    print(f"laueflow segment: {info.get('k')} clusters (suggested K {info.get('suggested_k')}) on "
          f"{info.get('n_processed')} points in {summary.wall_s:.1f} s ({info.get('path')} path) → "
          f"{summary.results} group {summary.group}")
    return 0
