"""Orientation maps in inverse-pole-figure colours and pole figures (orix colour keys, symmetry
and stereographic projection; frames: :mod:`laueflow.pipeline.crystal_maps`)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from matplotlib.colors import to_rgb

from ..pipeline.crystal_maps import store_materials, to_orientations
from ..pipeline.results import ResultsError
from ._base import (NOT_INDEXED, check_dataset, extent, figure, grain_label, map_axes, mark_points,
                    not_indexed_legend, select_grain, style)

__all__ = ["DIRECTIONS", "ipf_colors", "ipf_map", "pole_figure"]

#: a space group of each Laue group (its point group is the Laue group itself)
_LAUE_SPACE_GROUP = {"-1": 2, "2/m": 10, "mmm": 47, "4/m": 83, "4/mmm": 123, "-3": 147, "-3m": 164, "6/m": 175,
                     "6/mmm": 191, "m-3": 200, "m-3m": 221}

DIRECTIONS = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


def _direction(direction):
    from orix.vector import Vector3d

    if isinstance(direction, str):
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {list(DIRECTIONS)} or a 3-vector, got {direction!r}")
        direction = DIRECTIONS[direction]
    d = np.asarray(direction, dtype=float)
    return Vector3d(d / np.linalg.norm(d))


def _key(material, direction):
    from orix.plot import IPFColorKeyTSL

    from ..pipeline.crystal_maps import orix_symmetry

    return IPFColorKeyTSL(orix_symmetry(material), direction=_direction(direction))


#: where orientations come from: the indexed grains, or the cluster delegates (indexing labeler)
SOURCES = {"grains": ("orientation_matrix", "grain_material"),
           "delegates": ("delegate_orientation", "delegate_material")}


def _orientations(ds, grain, source):
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
    ub_name, material_name = SOURCES[source]
    sel = select_grain(ds, grain) if source == "grains" else ds
    if ub_name not in sel:
        stage = "an `index` stage" if source == "grains" else "a `delegate_map` stage (docs/workflow.md)"
        raise ResultsError(f"ipf_colors: the Dataset has no {ub_name} (needs {stage})")
    return np.asarray(sel[ub_name].values, dtype=float), np.asarray(sel[material_name].values).astype(int)


def ipf_colors(ds, direction="z", *, frame: str = "sample", grain=None, source: str = "grains") -> np.ndarray:
    """IPF colours (y, x, 3) in [0, 1] of the crystal direction along ``direction`` (x, y, z or a
    vector, in ``frame``) for one grain per point (best, or slot ``grain``); NaN: no grain.
    ``source="delegates"``: the orientation of each point's cluster delegate (the indexing
    labeler, ``delegate_map`` stage). Each material is coloured with its own Laue group's TSL key (orix)."""
    check_dataset(ds)
    ub, which = _orientations(ds, grain, source)
    rgb = np.full(which.shape + (3,), np.nan)
    for index, material in enumerate(store_materials(ds)):
        here = (which == index) & np.isfinite(ub).all(axis=(-1, -2))
        if here.any():
            rgb[here] = _key(material, direction).orientation2color(to_orientations(ub[here], material, frame))
    return rgb


@lru_cache(maxsize=16)
def _key_grid(laue_group: str, lattice: tuple, step: float = 0.004):
    """The TSL colour key of a Laue group on a grid of the stereographic projection of its
    fundamental sector: (RGBA image, extent). Colours: orix's ``direction2color``; only the grid
    is coarser than orix's own ``plot`` (≈0.1 s instead of several seconds)."""
    from orix.plot import DirectionColorKeyTSL
    from orix.projections import StereographicProjection
    from orix.quaternion.symmetry import get_point_group
    from orix.sampling import sample_S2
    from orix.vector import Vector3d
    from scipy.interpolate import griddata

    symmetry = get_point_group(_LAUE_SPACE_GROUP[laue_group])
    sector = symmetry.fundamental_sector
    v = sample_S2(1.0)
    v = Vector3d(np.vstack((v[v <= sector].data, sector.edges.data)))
    rgb = DirectionColorKeyTSL(symmetry).direction2color(v)
    x, y = StereographicProjection().vector2xy(v)
    gy, gx = np.mgrid[y.min():y.max():step, x.min():x.max():step]
    image = np.stack([griddata((y, x), rgb[:, i], (gy, gx), method="linear") for i in range(3)], axis=-1)
    alpha = np.isfinite(image).all(-1).astype(float)
    image = np.concatenate([np.nan_to_num(image, nan=1.0).clip(0, 1), alpha[..., None]], axis=-1)
    vertices = []
    if sector.vertices.size:
        vx, vy = StereographicProjection().vector2xy(sector.vertices)
        from ..physics.materials import Material
        from ..pipeline.crystal_maps import orix_phase

        # rows a, b, c in orix's crystal frame (orix's Phase aligns x ∥ a, z ∥ c*)
        base = orix_phase(Material("key", lattice, _LAUE_SPACE_GROUP[laue_group])).structure.lattice.base
        for xyz, px, py in zip(sector.vertices.unit.data, vx, vy):
            vertices.append((_uvw_label(np.linalg.solve(base.T, xyz), hexagonal=abs(lattice[5] - 120) < 1e-6),
                             float(px), float(py)))
    return image, (x.min(), x.max(), y.min(), y.max()), vertices


def _uvw_label(uvw, hexagonal: bool = False) -> str:
    """Smallest integer direction of lattice coordinates ``uvw``: "[111]", or 4-index "[2-1-10]"."""
    uvw = np.asarray(uvw, dtype=float)
    if hexagonal:
        u, v, w = uvw
        uvw = np.array([(2 * u - v) / 3, (2 * v - u) / 3, -(u + v) / 3, w])
    for scale in range(1, 13):
        v = uvw / np.abs(uvw).max() * scale
        if np.allclose(v, np.round(v), atol=0.02):
            return "[" + "".join(str(int(round(c))) for c in v) + "]"
    return ""


def draw_ipf_key(ax, material, title: str) -> None:
    """The TSL IPF colour key of the material's Laue group into ``ax``."""
    from ..pipeline.crystal_maps import orix_symmetry

    image, (x0, x1, y0, y1), vertices = _key_grid(orix_symmetry(material).laue.name, material.lattice_parameters)
    ax.imshow(image, extent=(x0, x1, y0, y1), origin="lower", interpolation="bilinear")
    for label, px, py in vertices:
        ax.annotate(label, (px, py), fontsize=7, ha="center", va="top" if py <= (y0 + y1) / 2 else "bottom",
                    xytext=(0, -3 if py <= (y0 + y1) / 2 else 3), textcoords="offset points")
    ax.set_title(title, fontsize=8)
    ax.set_xlim(x0 - 0.08 * (x1 - x0), x1 + 0.08 * (x1 - x0))
    ax.set_ylim(y0 - 0.12 * (y1 - y0 + 1e-9), y1 + 0.12 * (y1 - y0 + 1e-9))
    ax.set_aspect("equal")
    ax.axis("off")


def ipf_map(ds, direction="z", *, frame: str = "sample", grain=None, source: str = "grains", ax=None,
            key: bool = True):
    """Orientation map in IPF colours along sample (or lab) ``direction``, with each material's
    colour key (orix TSL key of its Laue group) beside it; grey: not indexed. ``source``: see
    :func:`ipf_colors`. Returns the Figure."""
    rgb = ipf_colors(ds, direction, frame=frame, grain=grain, source=source)
    missing = np.isnan(rgb).any(-1)
    shown = np.where(missing[..., None], np.array(to_rgb(NOT_INDEXED)), rgb)
    which = _orientations(ds, grain, source)[1]
    materials = [m for i, m in enumerate(store_materials(ds)) if (which == i).any()] if key else []
    label = direction.upper() if isinstance(direction, str) else str(tuple(direction))
    with style():
        if ax is None:
            fig, (ax,) = figure(1, ds, width_in=6.0)
            ax.remove()
            grid = fig.add_gridspec(max(1, len(materials)), 2, width_ratios=[3, 1.1])
            ax = fig.add_subplot(grid[:, 0])
            keys = [fig.add_subplot(grid[i, 1]) for i in range(len(materials))]
        else:
            fig = ax.figure
            size = 1.0 / max(1, len(materials))
            keys = [ax.inset_axes([1.04, 1.0 - (i + 1) * size, 0.5, size]) for i in range(len(materials))]
        ax.imshow(shown, extent=extent(ds), origin="upper", interpolation="nearest")
        what = grain_label(grain) if source == "grains" else "indexing labeler (cluster delegates)"
        map_axes(ax, ds, f"IPF-{label}, {frame} frame\n{what}")
        guessed = (np.asarray(ds["delegate_map_status"].values) == 4 if source == "delegates"
                   and "delegate_map_status" in ds else np.zeros(missing.shape, bool))
        extra = [mark_points(ax, ds, guessed, "inhomogeneous cluster: from its nearest indexed point")] \
            if guessed.any() else []
        not_indexed_legend(ax, bool(missing.any()), extra=extra)
        for key_ax, m in zip(keys, materials):
            draw_ipf_key(key_ax, m, f"{m.name}: IPF-{label} key")
    return fig


def pole_figure(ds, hkl=(1, 0, 0), *, material: str | None = None, frame: str = "sample", grain=None):
    """Pole figure (upper hemisphere, stereographic, orix) of the ``{hkl}`` plane normals of one
    material's grains (best grain per point, or slot ``grain``; every point with one), in ``frame``."""
    from orix.vector import Miller

    from ..pipeline.crystal_maps import orix_phase

    check_dataset(ds)
    sel = select_grain(ds, grain)
    materials = store_materials(ds)
    names = [m.name for m in materials]
    which = np.asarray(sel["grain_material"].values).astype(int)
    if material is None:
        counts = [(which == i).sum() for i in range(len(materials))]
        index = int(np.argmax(counts))
    elif material in names:
        index = names.index(material)
    else:
        raise ResultsError(f"pole_figure: material {material!r} is not in this store; its materials: {names}")
    mat = materials[index]
    ub = np.asarray(sel["orientation_matrix"].values, dtype=float)
    here = (which == index) & np.isfinite(ub).all(axis=(-1, -2))
    fig, (ax,) = figure(1, None, width_in=4.2, projection="stereographic")
    with style():
        ax.set_title(f"{mat.name} {{{' '.join(str(v) for v in hkl)}}} pole figure, {frame} frame "
                     f"({int(here.sum())} points)")
        if here.any():
            orientations = to_orientations(ub[here], mat, frame)
            poles = Miller(hkl=hkl, phase=orix_phase(mat)).symmetrise(unique=True)
            sample_vectors = (~orientations).outer(poles)
            ax.scatter(sample_vectors.flatten(), s=8, c="k")
        ax.set_labels("X", "Y", None)
    return fig
