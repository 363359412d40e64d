"""Delegate indexing: the indexing labeler of a segmentation (issue #13), two reduce stages.

``select_delegates`` turns the clusters of ``segmentation`` into the points to index: each
cluster's delegate (its point closest to the centroid) and ``check_points_per_cluster`` check
points; a late map phase (``peaks``/``angles``/``index`` with ``points: selected_points``) then
indexes only those ("delegates first"), or the whole scan was indexed before ("after full
indexing"). ``delegate_map`` gives every point the orientation of its cluster's delegate's best
grain — the brightest of its indexed grains (mean height of the peaks matched to it), then the
highest matching rate: at a point that sees two twin variants both are indexed, often both at
100 %, and the one that fills the beam is the bright one — after checking the cluster's
homogeneity on its check points.

Check points are a uniform random sample of the cluster (fixed by ``seed``: the points with the
smallest ``hash_uniform(y·nx + x, seed)``, the same whatever the chunking or the workers), not
the delegate. A cluster whose points are a fraction ``f`` of another orientation is caught by
``n`` check points with probability ``1 − (1 − f)ⁿ``: raise ``check_points_per_cluster`` for a
stricter check. A check point agrees with its delegate when *any* of its indexed grains of the
delegate's material is within ``max_misorientation_deg`` of the delegate's best grain (a point at
a boundary shows both grains and its best may be the neighbour's).

Status codes of ``delegate_map_status`` (:data:`DELEGATE_MAP_CODES`): 0 ok; 1 no_cluster (the point
was not segmented); 2 delegate_not_indexed (the cluster's delegate has no grain, or the cluster
none); 3 cluster_inhomogeneous (a check point differs by more than ``max_misorientation_deg``);
4 nearest_indexed_point (with ``inhomogeneous="nearest_indexed"``: the point of an inhomogeneous
cluster took the best grain of the cluster's indexed point — delegate or check point — nearest
to it in the segmentation's principal components). Points with code 1–3 get NaN orientation and
material −1.
"""
from __future__ import annotations

import numpy as np

from ..kernels.clustering import hash_uniform, nearest_reference
from ..physics.materials import get_materials
from ..physics.symmetry import reduce_misorientation
from .base import StageSpec, Variable
from .grain_choice import best_grains, grain_peak_intensity

__all__ = ["SELECT_STAGE", "MAP_STAGE", "select_delegates", "delegate_map", "DELEGATE_MAP_CODES",
           "pick_check_points", "check_misorientations", "cluster_tables",
           "lookup_by_cluster"]

DELEGATE_MAP_CODES = {0: "ok", 1: "no_cluster", 2: "delegate_not_indexed", 3: "cluster_inhomogeneous",
                      4: "nearest_indexed_point"}
INHOMOGENEOUS = ("report", "nearest_indexed")
ROLE_NONE, ROLE_DELEGATE, ROLE_CHECK = 0, 1, 2


# --------------------------------------------------------------------------- select_delegates
def _flat_index(block_info, nx: int) -> np.ndarray:
    (y0, y1), (x0, x1) = block_info[0]["array-location"][:2]
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return (yy * nx + xx).astype(np.int64)


def pick_check_points(labels: np.ndarray, flat: np.ndarray, *, slots: int, n_check: int, seed: int,
                      exclude: np.ndarray) -> np.ndarray:
    """Per cluster the ``n_check`` points with the smallest hash key among ``labels`` (cluster
    per point, −1: none) at flat indices ``flat`` (same shape), not in ``exclude``:
    ``(slots, n_check, 2)`` float64 of ``[key, flat index]`` (key ``inf``: none)."""
    labels, flat = np.ravel(labels), np.ravel(flat)
    keep = (labels >= 0) & (labels < slots) & ~np.isin(flat, exclude)
    labels, flat = labels[keep], flat[keep]
    key = hash_uniform(flat, seed)
    order = np.lexsort((flat, key, labels))  # by cluster, then key (ties: index)
    labels, flat, key = labels[order], flat[order], key[order]
    starts = np.searchsorted(labels, labels, side="left")
    rank = np.arange(len(labels)) - starts
    take = rank < n_check
    out = np.full((slots, n_check, 2), np.inf)
    out[labels[take], rank[take], 0] = key[take]
    out[labels[take], rank[take], 1] = flat[take]
    return out


def _candidates_block(labels, *, slots, n_check, seed, nx, exclude, block_info=None):
    picked = pick_check_points(labels, _flat_index(block_info, nx), slots=slots, n_check=n_check, seed=seed,
                               exclude=exclude)
    return picked[None, None]


def merge_check_points(blocks: np.ndarray, n_check: int) -> np.ndarray:
    """``(…, slots, n_check, 2)`` candidates of every block → ``(slots, n_check)`` int64 flat
    indices of the ``n_check`` smallest keys per cluster (−1: none)."""
    slots = blocks.shape[-3]
    cand = np.moveaxis(blocks.reshape(-1, slots, n_check, 2), 1, 0).reshape(slots, -1, 2)
    order = np.argsort(cand[..., 0], axis=1, kind="stable")[:, :n_check]
    best = np.take_along_axis(cand, order[..., None], axis=1)
    return np.where(np.isfinite(best[..., 0]), best[..., 1], -1).astype(np.int64)


def _role_block(labels, *, nx, delegates, checks, block_info=None):
    flat = _flat_index(block_info, nx)
    role = np.zeros(labels.shape, np.int8)
    role[np.isin(flat, checks)] = ROLE_CHECK
    role[np.isin(flat, delegates)] = ROLE_DELEGATE
    return role


def select_delegates(cluster_label, delegate_y, delegate_x, *, client, writer, check_points_per_cluster: int = 2,
                     seed: int = 0) -> dict:
    """The points to index: every cluster's delegate and ``check_points_per_cluster`` check
    points of the cluster (module docstring). ``cluster_label (y, x)`` lazy; ``delegate_y/x
    (cluster)``. Writes ``selected_points (y, x)`` bool and ``point_role (y, x)`` int8."""
    ny, nx = cluster_label.shape
    dy, dx = (np.asarray(client.compute(a).result(), np.int64) for a in (delegate_y, delegate_x))
    has = (dy >= 0) & (dx >= 0)
    delegates = np.where(has, dy * nx + dx, -1)
    slots = len(dy)
    checks = np.full((slots, 0), -1, np.int64)
    if check_points_per_cluster:
        blocks = cluster_label.map_blocks(
            _candidates_block, slots=slots, n_check=check_points_per_cluster, seed=seed, nx=nx,
            exclude=delegates[has], dtype=np.float64, meta=np.zeros((0,) * 5), new_axis=[2, 3, 4],
            chunks=((1,) * cluster_label.numblocks[0], (1,) * cluster_label.numblocks[1], (slots,),
                    (check_points_per_cluster,), (2,)))
        checks = merge_check_points(np.asarray(client.compute(blocks).result()), check_points_per_cluster)
    role = cluster_label.map_blocks(_role_block, nx=nx, delegates=delegates[has], checks=checks[checks >= 0],
                                    dtype=np.int8, meta=np.zeros((0, 0), np.int8))
    writer.write("point_role", role)
    writer.write("selected_points", role > 0)
    n_checks = int((checks >= 0).sum())
    return {"delegates": int(has.sum()), "check_points": n_checks, "selected": int(has.sum()) + n_checks,
            "check_points_per_cluster": int(check_points_per_cluster), "seed": int(seed),
            "log": [f"select_delegates: {int(has.sum())} delegates and {n_checks} check points selected "
                    f"(of {ny * nx} points)"]}


def check_select_params(params) -> None:
    for name in ("check_points_per_cluster", "seed"):
        v = params[name]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be an integer ≥ 0, got {v!r}")


# --------------------------------------------------------------------------- delegate_map
def check_misorientations(reference, reference_material, orientation, material, materials) -> np.ndarray:
    """``(p,)`` deg: for each point, the smallest symmetry-reduced misorientation between
    ``reference (p, 3, 3)`` (material ``reference_material (p,)``) and its indexed grains of that
    material (``orientation (p, g, 3, 3)``, ``material (p, g)``); NaN where it has none."""
    reference, orientation = np.asarray(reference, float), np.asarray(orientation, float)
    material = np.asarray(material)
    out = np.full(len(reference), np.nan)
    eye = np.eye(3)
    for m in np.unique(reference_material[reference_material >= 0]):
        rows = np.flatnonzero(reference_material == m)
        same = (material[rows] == m) & np.isfinite(orientation[rows]).all(axis=(-2, -1))
        grains = np.where(same[..., None, None], orientation[rows], eye)
        angle = reduce_misorientation(grains, reference[rows][:, None], materials[int(m)])
        angle = np.where(same, angle, np.inf).min(axis=1)
        out[rows] = np.where(np.isfinite(angle), angle, np.nan)
    return out


def cluster_tables(delegate_orientation, delegate_material, check_cluster, check_angle, slots: int,
                   max_misorientation_deg: float) -> dict:
    """Per cluster slot: ``check_max (slots,)`` the largest check-point misorientation (NaN: none
    indexed), ``checked`` the number indexed, ``homogeneous`` (delegate indexed and no check
    point beyond ``max_misorientation_deg``) and ``status`` (codes of :data:`DELEGATE_MAP_CODES`)."""
    indexed = np.asarray(delegate_material) >= 0
    check_max = np.full(slots, np.nan)
    checked = np.zeros(slots, np.int32)
    ok = np.isfinite(check_angle)
    for k in np.unique(check_cluster[ok]):
        angles = check_angle[ok & (check_cluster == k)]
        check_max[k], checked[k] = angles.max(), len(angles)
    beyond = np.nan_to_num(check_max, nan=0.0) > max_misorientation_deg
    homogeneous = indexed & ~beyond
    status = np.where(~indexed, 2, np.where(beyond, 3, 0)).astype(np.int8)
    return {"check_max": check_max, "checked": checked, "homogeneous": homogeneous, "status": status}


def lookup_by_cluster(labels, *, table, fill):
    """``table[label]`` for every point of a block of cluster ``labels`` (−1: ``fill``)."""
    padded = np.concatenate([table, np.full((1, *table.shape[1:]), fill, table.dtype)])
    return padded[np.where(labels >= 0, labels, len(table))]


def _gather(arrays: list, ys: np.ndarray, xs: np.ndarray, client) -> list:
    """The values of lazy ``(y, x, …)`` arrays at the points ``(ys, xs)`` (numpy)."""
    if not len(ys):
        return [np.zeros((0, *a.shape[2:]), a.dtype) for a in arrays]
    return [np.asarray(r) for r in client.gather(client.compute([a.vindex[ys, xs] for a in arrays]))]


def _best_grain_at(ys, xs, orientation_matrix, grain_material, extra: dict, client) -> tuple:
    """At the points ``(ys, xs)``: the orientation ``(p, 3, 3)`` (NaN: none) and material ``(p,)``
    (−1) of the best grain (:func:`best_grains`; ``extra``: optional ``rate``, ``peak_grain``,
    ``height`` lazy arrays) and every grain's ``(p, g, 3, 3)`` / ``(p, g)``."""
    got = _gather([orientation_matrix, grain_material, *extra.values()], ys, xs, client)
    more = dict(zip(extra, got[2:]))
    height = (grain_peak_intensity(more["peak_grain"], more["height"], got[0].shape[1])
              if {"peak_grain", "height"} <= set(more) else None)
    best = best_grains(got[0], got[1], more.get("rate"), height)
    found = best >= 0
    ub = np.full((len(ys), 3, 3), np.nan)
    material = np.full(len(ys), -1, np.int64)
    ub[found] = got[0][found, best[found]]
    material[found] = got[1][found, best[found]]
    return ub, material, got[0], got[1]


def _point_rows(labels, pcs, *, fallback, ref_labels, ref_points, slots):
    """Row of each point in the combined table (cluster slots, then reference points): its
    cluster, or in a ``fallback`` cluster ``slots +`` its nearest reference (−1 label: −1)."""
    rows = np.asarray(labels, np.int64).copy()
    inside = (rows >= 0) & (rows < slots)
    near = np.zeros(rows.shape, bool)
    near[inside] = fallback[rows[inside]]
    if near.any():
        nearest = nearest_reference(rows[near], np.asarray(pcs)[near], ref_labels, ref_points)
        rows[near] = np.where(nearest >= 0, slots + nearest, rows[near])
    return rows


def delegate_map(cluster_label, delegate_y, delegate_x, orientation_matrix, grain_material, matching_rate=None,
                 point_role=None, peak_grain=None, peak_intensity=None, principal_components=None, *, client,
                 writer, materials, max_misorientation_deg: float = 1.0, inhomogeneous: str = "report") -> dict:
    """Every point: the orientation and material of its cluster's delegate's best grain, NaN
    where the cluster is not homogeneous or its delegate not indexed (module docstring); with
    ``inhomogeneous="nearest_indexed"`` a point of a cluster found inhomogeneous takes the best
    grain of the indexed point of its cluster (delegate or check point) nearest in the
    segmentation's ``principal_components`` (status 4). Inputs lazy from the results store;
    ``materials``: the scan's (by the prepare hook)."""
    if inhomogeneous == "nearest_indexed" and principal_components is None:
        raise ValueError("delegate_map: inhomogeneous='nearest_indexed' needs the segmentation's "
                         "principal_components in the results; run the segmentation stage in the workflow")
    materials = get_materials(materials)
    dy, dx = (np.asarray(client.compute(a).result(), np.int64) for a in (delegate_y, delegate_x))
    slots = len(dy)
    has = np.flatnonzero((dy >= 0) & (dx >= 0))
    extra = {k: a for k, a in (("rate", matching_rate), ("peak_grain", peak_grain), ("height", peak_intensity))
             if a is not None}
    ref, ref_material = np.full((slots, 3, 3), np.nan), np.full(slots, -1, np.int64)
    ref[has], ref_material[has], _, _ = _best_grain_at(dy[has], dx[has], orientation_matrix, grain_material,
                                                       extra, client)
    check = _indexed_check_points(point_role, cluster_label, slots, (ref, ref_material),
                                  (orientation_matrix, grain_material, extra), materials, client)
    tables = cluster_tables(ref, ref_material, check["cluster"], check["angle"], slots, max_misorientation_deg)
    ok = tables["homogeneous"]
    out = {"orientation": np.where(ok[:, None, None], ref, np.nan),
           "material": np.where(ok, ref_material, -1).astype(np.int16), "status": tables["status"]}
    rows = cluster_label
    fallback = (tables["status"] == 3) if inhomogeneous == "nearest_indexed" else np.zeros(slots, bool)
    if fallback.any():
        refs = _references(fallback, has, dy, dx, ref, ref_material, check)
        (ref_pcs,) = _gather([principal_components], refs["y"], refs["x"], client)
        rows = _map_rows(cluster_label, principal_components, fallback=fallback, ref_labels=refs["cluster"],
                         ref_points=np.asarray(ref_pcs, np.float64), slots=slots)
        out = {"orientation": np.concatenate([out["orientation"], refs["ub"]]),
               "material": np.concatenate([out["material"], refs["material"].astype(np.int16)]),
               "status": np.concatenate([out["status"], np.full(len(refs["cluster"]), 4, np.int8)])}

    def lookup(table, fill, dtype, new_axis=None):
        extra = table.shape[1:]
        chunks = (*cluster_label.chunks, *((s,) for s in extra))
        return rows.map_blocks(lookup_by_cluster, table=table, fill=fill, dtype=dtype, new_axis=new_axis,
                               chunks=chunks, meta=np.zeros((0,) * len(chunks), dtype))

    writer.write("delegate_orientation", lookup(out["orientation"], np.nan, np.float64, [2, 3]))
    writer.write("delegate_material", lookup(out["material"], -1, np.int16))
    writer.write("delegate_map_status", lookup(out["status"], 1, np.int8))
    writer.write("cluster_check_misorientation_deg", tables["check_max"])
    writer.write("cluster_homogeneous", ok)
    writer.write("cluster_checked_points", tables["checked"])
    sizes = np.asarray(client.compute((cluster_label[..., None] == np.arange(slots)).sum(axis=(0, 1))).result())
    return _record(tables, sizes, has, max_misorientation_deg, fallback)


def _indexed_check_points(point_role, cluster_label, slots, reference, indexed, materials, client) -> dict:
    """The check points (``point_role`` 2) of the clusters: ``cluster``, ``y``, ``x``, best grain
    ``ub``/``material`` and ``angle`` (deg, :func:`check_misorientations` from their cluster's
    ``reference = (ub, material)``; NaN: not indexed). ``indexed = (orientation_matrix,
    grain_material, extra)`` lazy; empty without ``point_role``."""
    if point_role is None:
        return {"cluster": np.zeros(0, np.int64), "angle": np.zeros(0), "y": np.zeros(0, np.int64),
                "x": np.zeros(0, np.int64), "ub": np.zeros((0, 3, 3)), "material": np.zeros(0, np.int64)}
    ref, ref_material = reference
    ys, xs = (np.asarray(r, np.int64)
              for r in client.gather(client.compute(list(np.nonzero(point_role == ROLE_CHECK)))))
    (labels,) = _gather([cluster_label], ys, xs, client)
    labels = np.asarray(labels, np.int64)
    inside = (labels >= 0) & (labels < slots)
    check = {"cluster": labels[inside], "y": ys[inside], "x": xs[inside]}
    check["ub"], check["material"], orient, mats = _best_grain_at(check["y"], check["x"], *indexed, client)
    check["angle"] = check_misorientations(ref[check["cluster"]], ref_material[check["cluster"]], orient, mats,
                                           materials)
    return check


def _references(fallback, has, dy, dx, ref, ref_material, check) -> dict:
    """The indexed points (delegates, then check points with a grain) of the ``fallback``
    clusters: ``cluster``, ``y``, ``x``, best grain ``ub`` and ``material``."""
    mine = has[fallback[has] & (ref_material[has] >= 0)]
    use = fallback[check["cluster"]] & (check["material"] >= 0)
    return {"cluster": np.concatenate([mine, check["cluster"][use]]).astype(np.int64),
            "y": np.concatenate([dy[mine], check["y"][use]]), "x": np.concatenate([dx[mine], check["x"][use]]),
            "ub": np.concatenate([ref[mine], check["ub"][use]]),
            "material": np.concatenate([ref_material[mine], check["material"][use]])}


def _rows_block(labels, pcs, **kwargs):
    return _point_rows(labels[..., 0], pcs, **kwargs)


def _map_rows(cluster_label, principal_components, **kwargs):
    """Lazy ``(y, x)`` int64 rows of :func:`_point_rows`, block by block of the labels."""
    pcs = principal_components.rechunk((*cluster_label.chunks, (principal_components.shape[-1],)))
    return cluster_label[..., None].map_blocks(_rows_block, pcs, drop_axis=2, dtype=np.int64,
                                               meta=np.zeros((0, 0), np.int64), **kwargs)


def _record(tables: dict, sizes: np.ndarray, has: np.ndarray, threshold: float, fallback: np.ndarray) -> dict:
    used = np.zeros(len(sizes), bool)
    used[has] = True
    used &= sizes > 0
    bad = [int(k) for k in np.flatnonzero(used & (tables["status"] == 3))]
    unindexed = [int(k) for k in np.flatnonzero(used & (tables["status"] == 2))]
    lines = [f"delegate_map: {int((used & tables['homogeneous']).sum())} of {int(used.sum())} clusters mapped "
             f"({int(sizes[used & tables['homogeneous']].sum())} points)"]
    for k in bad:
        fate = ("take the best grain of the cluster's indexed point nearest in the principal components "
                "(delegate_map_status 4)" if fallback[k] else "get no orientation (delegate_map_status 3)")
        lines.append(f"delegate_map: cluster {k} is not homogeneous: a check point is "
                     f"{tables['check_max'][k]:.2f}° from the delegate (> {threshold}°); its {int(sizes[k])} points "
                     + fate)
    for k in unindexed:
        lines.append(f"delegate_map: cluster {k}'s delegate was not indexed; its {int(sizes[k])} points get no "
                     "orientation (delegate_map_status 2)")
    return {"clusters": int(used.sum()), "homogeneous": [int(k) for k in np.flatnonzero(used & tables["homogeneous"])],
            "inhomogeneous": bad, "delegate_not_indexed": unindexed,
            "points_unmapped": int(sizes[[k for k in bad if not fallback[k]] + unindexed].sum()),
            "points_nearest_indexed": int(sizes[[k for k in bad if fallback[k]]].sum()),
            "check_misorientation_deg": [None if not np.isfinite(v) else round(float(v), 4)
                                         for v in tables["check_max"][used]],
            "log": lines}


def prepare_delegate_map(params: dict, context: dict) -> dict:
    """Driver-side: the scan's materials (their symmetry reduces the misorientations)."""
    if not context.get("materials"):
        raise ValueError("delegate_map needs the scan's materials (grain_material indexes them); "
                         "re-ingest the scan with --material NAME")
    return {**params, "materials": list(context["materials"])}


def check_map_params(params) -> None:
    v = params["max_misorientation_deg"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"max_misorientation_deg must be a number > 0 (degrees), got {v!r}")
    if params["inhomogeneous"] not in INHOMOGENEOUS:
        raise ValueError(f"inhomogeneous must be one of {', '.join(INHOMOGENEOUS)}, got {params['inhomogeneous']!r}")


# --------------------------------------------------------------------------- declarations
_SCAN = dict(per_point=False)

SELECT_STAGE = StageSpec(
    name="select_delegates",
    kind="reduce",
    func=select_delegates,
    inputs={"cluster_label": "cluster_label", "delegate_y": "delegate_y", "delegate_x": "delegate_x"},
    outputs=(
        Variable("selected_points", (), "bool", False, "1",
                 "point to index in a late map phase (`points: selected_points`): a delegate or a check point"),
        Variable("point_role", (), "int8", 0, "1", "0 not selected, 1 its cluster's delegate, 2 a check point"),
    ),
    params={"check_points_per_cluster": 2, "seed": 0},
    check=check_select_params,
    description="the points to index: each cluster's delegate and a few random check points of the cluster",
)

MAP_STAGE = StageSpec(
    name="delegate_map",
    kind="reduce",
    func=delegate_map,
    inputs={"cluster_label": "cluster_label", "delegate_y": "delegate_y", "delegate_x": "delegate_x",
            "orientation_matrix": "orientation_matrix", "grain_material": "grain_material"},
    optional_inputs={"matching_rate": "matching_rate", "point_role": "point_role", "peak_grain": "peak_grain",
                     "peak_intensity": "peak_intensity", "principal_components": "principal_components"},
    outputs=(
        Variable("delegate_orientation", ("i3", "j3"), "float64", float("nan"), "1",
                 "UB of the point's cluster's delegate's best grain (status 4: of the indexed point of its cluster "
                 "nearest in the principal components; NaN: delegate_map_status 1–3)"),
        Variable("delegate_material", (), "int16", -1, "1", "material index of that grain (-1: none)"),
        Variable("delegate_map_status", (), "int8", 1, "1",
                 "0 ok, 1 no_cluster, 2 delegate_not_indexed, 3 cluster_inhomogeneous, 4 nearest_indexed_point"),
        Variable("cluster_check_misorientation_deg", ("cluster",), "float64", float("nan"), "deg",
                 "largest misorientation of the cluster's indexed check points from its delegate's best grain "
                 "(symmetry-reduced; NaN: none)", **_SCAN),
        Variable("cluster_homogeneous", ("cluster",), "bool", False, "1",
                 "delegate indexed and every indexed check point within max_misorientation_deg", **_SCAN),
        Variable("cluster_checked_points", ("cluster",), "int32", 0, "1",
                 "check points of the cluster that were indexed", **_SCAN),
    ),
    params={"max_misorientation_deg": 1.0, "inhomogeneous": "report"},
    prepare=prepare_delegate_map,
    check=check_map_params,
    description="indexing labeler: each point gets its cluster's delegate's orientation (homogeneity checked)",
)
