"""Orientation maps in inverse-pole-figure colours and pole figures (orix colour keys, symmetry
and stereographic projection; frames: :mod:`laueflow.pipeline.crystal_maps`)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from matplotlib.colors import to_rgb

from ..pipeline.crystal_maps import store_materials, to_orientations
from ..pipeline.results import ResultsError
from ._base import (NOT_INDEXED, check_dataset, extent, figure, grain_label, map_axes, not_indexed_legend,
                    select_grain, style)

__all__ = ["DIRECTIONS", "ipf_colors", "ipf_map", "pole_figure"]

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


def ipf_colors(ds, direction="z", *, frame: str = "sample", grain=None) -> np.ndarray:
    """IPF colours (y, x, 3) in [0, 1] of the crystal direction along ``direction`` (x, y, z or a
    vector, in ``frame``) for one grain per point (best, or slot ``grain``); NaN: no grain.
    Each material is coloured with its own Laue group's TSL key (orix)."""
    check_dataset(ds)
    sel = select_grain(ds, grain)
    if "orientation_matrix" not in sel:
        raise ResultsError("ipf_colors: the Dataset has no orientation_matrix (no `index` stage)")
    ub = np.asarray(sel["orientation_matrix"].values, dtype=float)
    which = np.asarray(sel["grain_material"].values).astype(int)
    rgb = np.full(which.shape + (3,), np.nan)
    for index, material in enumerate(store_materials(ds)):
        here = (which == index) & np.isfinite(ub).all(axis=(-1, -2))
        if here.any():
            rgb[here] = _key(material, direction).orientation2color(to_orientations(ub[here], material, frame))
    return rgb


@lru_cache(maxsize=32)
def _key_image(space_group: int, direction: tuple) -> np.ndarray:
    """The orix colour key of a point group's Laue group as an RGBA image, cropped (rendered once)."""
    import io

    import matplotlib
    import matplotlib.image
    import matplotlib.pyplot as plt  # orix draws its key with pyplot
    from orix.plot import IPFColorKeyTSL
    from orix.quaternion.symmetry import get_point_group

    key = IPFColorKeyTSL(get_point_group(space_group), direction=_direction(direction))
    with matplotlib.rc_context({"font.size": 16}):
        fig = key.plot(return_figure=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    buffer.seek(0)
    return matplotlib.image.imread(buffer)


def ipf_map(ds, direction="z", *, frame: str = "sample", grain=None, ax=None, key: bool = True):
    """Orientation map in IPF colours along sample (or lab) ``direction``, with each material's
    colour key (orix TSL key of its Laue group) beside it; grey: not indexed. Returns the Figure."""
    rgb = ipf_colors(ds, direction, frame=frame, grain=grain)
    missing = np.isnan(rgb).any(-1)
    shown = np.where(missing[..., None], np.array(to_rgb(NOT_INDEXED)), rgb)
    which = np.asarray(select_grain(ds, grain)["grain_material"].values)
    materials = [m for i, m in enumerate(store_materials(ds)) if (which == i).any()] if key else []
    label = direction.upper() if isinstance(direction, str) else str(tuple(direction))
    d = tuple(float(v) for v in _direction(direction).data[0])
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
        map_axes(ax, ds, f"IPF-{label}, {frame} frame\n{grain_label(grain)}")
        not_indexed_legend(ax, bool(missing.any()))
        for key_ax, m in zip(keys, materials):
            key_ax.imshow(_key_image(m.space_group_number, d))
            key_ax.set_title(f"{m.name}: IPF-{label} key", fontsize=8)
            key_ax.axis("off")
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
