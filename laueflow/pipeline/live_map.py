"""A laueflow page on the Dask dashboard, ``/laueflow``: maps of the scan that fill in as tiles
finish — tiles done, peak count, best matching rate (when the workflow indexes), status.

:func:`register` adds the page to the dashboards of the schedulers this process starts from
then on (local and SLURM clusters: their scheduler runs in the driver); :func:`watching` tells it
which results store the run is writing. The page reads the store once a second (in a thread: the
scheduler's event loop never waits on the filesystem). A scheduler started elsewhere
(``--scheduler tcp://…``) has no such page.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["PAGE", "register", "watching", "read_maps"]

PAGE = "/laueflow"
#: the results store being written by the run of this process (None between runs)
_CURRENT: dict = {"results": None}
#: the maps: (results variable, title, colour palette); a variable the store lacks is not drawn
MAPS = (("tile_done", "tiles done", "Greens256", True), ("peak_count", "peak count", "Viridis256", False),
        ("matching_rate", "best matching rate (%)", "Plasma256", False), ("status", "status code", "Turbo256", False))
#: the longer side of each map on the page (screen pixels)
MAP_PIXELS = 300


def register() -> None:
    """Add :data:`PAGE` to the dashboard of every scheduler started in this process from now on."""
    from distributed.dashboard import scheduler as dashboard  # deferred: heavy

    dashboard.applications.setdefault(PAGE, _live_map_doc)


@contextlib.contextmanager
def watching(results: str | Path) -> Iterator[None]:
    """Show ``results`` on :data:`PAGE` from the block on (and after it, until the next run: the
    page keeps the finished maps)."""
    _CURRENT["results"] = str(Path(results).resolve())
    yield


def read_maps(results: str | Path) -> dict[str, np.ndarray]:
    """``{name: (ny, nx) float64}`` of a results store: ``tile_done`` (1/0 per point, from the tile
    bookkeeping), ``peak_count``, ``matching_rate`` (the highest of the point's grains) and ``status`` — NaN where
    the point's tile is not done; a variable the store lacks is left out."""
    import zarr  # deferred: heavy

    group = zarr.open_group(str(results), mode="r", use_consolidated=False)
    if "chunk_done" not in group or "status" not in group:
        return {}
    ny, nx = group["status"].shape
    done_tiles = np.asarray(group["chunk_done"][...], bool)
    cy, cx = -(-ny // done_tiles.shape[0]), -(-nx // done_tiles.shape[1])
    done = np.repeat(np.repeat(done_tiles, cy, axis=0), cx, axis=1)[:ny, :nx]
    maps = {"tile_done": done.astype(np.float64)}
    for name in ("peak_count", "matching_rate", "status"):
        if name in group:
            values = np.asarray(group[name][...], np.float64)
            if values.ndim == 3:  # (y, x, grain): the best grain
                with np.errstate(all="ignore"), _quiet():
                    values = np.nanmax(values, axis=2)
            maps[name] = np.where(done, values, np.nan)
    return maps


@contextlib.contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: not indexed yet
        yield


def _live_map_doc(scheduler, extra, doc) -> None:
    """The page: one image per map of :data:`MAPS`, refreshed every second."""
    from bokeh import palettes
    from bokeh.layouts import column, gridplot
    from bokeh.models import ColumnDataSource, Div, LinearColorMapper
    from bokeh.plotting import figure

    title = Div(text="<b>laueflow</b>: no run yet", name="laueflow-title")
    sources: dict = {}
    figures = []
    for name, label, palette, reverse in MAPS:
        colours = list(getattr(palettes, palette))
        mapper = LinearColorMapper(palette=colours[::-1] if reverse else colours, nan_color="lightgray",
                                   **({"low": 0, "high": 1} if name == "tile_done" else {}))
        source = ColumnDataSource({"image": [np.full((1, 1), np.nan)], "dw": [1], "dh": [1]}, name=f"laueflow-{name}")
        fig = figure(title=label, frame_width=MAP_PIXELS, frame_height=MAP_PIXELS, x_range=(0, 1), y_range=(1, 0),
                     tools="hover,save", tooltips=[(label, "@image")], name=f"laueflow-figure-{name}")
        fig.image(image="image", x=0, y=0, dw="dw", dh="dh", source=source, color_mapper=mapper)
        sources[name] = (source, fig)
        figures.append(fig)
    doc.title = "laueflow: live maps"
    doc.add_root(column(title, gridplot(figures, ncols=2), name="laueflow-page"))

    async def refresh():
        import asyncio

        results = _CURRENT["results"]
        if results is None:
            return
        try:
            maps = await asyncio.get_running_loop().run_in_executor(None, read_maps, results)
        except (OSError, KeyError, ValueError):  # the store is being created
            return
        if not maps:
            return
        ny, nx = maps["tile_done"].shape
        title.text = (f"<b>laueflow</b>: {results} — {ny}×{nx} points, "
                      f"{int(maps['tile_done'].sum())} done")
        for name, (source, fig) in sources.items():
            if name in maps:
                source.data = {"image": [maps[name]], "dw": [nx], "dh": [ny]}
                fig.x_range.end, fig.y_range.start = nx, ny
                scale = MAP_PIXELS / max(ny, nx)  # the scan's shape: square points
                fig.frame_width, fig.frame_height = round(nx * scale), round(ny * scale)
                fig.visible = True
            else:
                fig.visible = False

    doc.add_periodic_callback(refresh, 1000)
