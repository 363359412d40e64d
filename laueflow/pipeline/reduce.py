"""The reduce phase: scan-wide stages after every tile is done (contract: ``docs/design.md``).

A reduce stage's function is called once, on the driver, as
``func(**inputs, client=client, writer=writer, **params)``: ``inputs`` are the earlier outputs it
declares, as lazy dask arrays read from the results store in blocks of whole stored chunks of
about 64 MB (:func:`read_chunks`: whole rows of x when they fit); it writes each declared output
exactly once through ``writer.write(name, array)``: a numpy array is written directly, a dask
array block by block (blocks of whole store chunks, the same rule, on the workers). When the
function returns and every output was written, the stage is marked done in the store
(``reduce_done`` attribute): a killed run re-runs only the reduce stages not marked done.
A stage may return a small JSON-able dict (what it chose, what it found): it is kept in the
store's ``reduce_info`` attribute under the stage's name, and its ``log`` lines are logged.
"""
from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from ..stages.base import StageSpec
from .store import Layout, mark_reduce_done, record_reduce_info, write_region

__all__ = ["ReduceWriter", "run_reduce_stage", "lazy_outputs", "read_chunks", "BLOCK_BYTES"]

#: size of the blocks reduce stages read and write (a task per stored chunk — often a few kB —
#: costs more in scheduling than in reading: 500 chunks of 100 kB read 10× faster as one block)
BLOCK_BYTES = 64 << 20


def read_chunks(shape, chunks, itemsize: int, block_bytes: int = BLOCK_BYTES) -> tuple:
    """Blocks of whole stored chunks of a ``(y, x, …)`` array, about ``block_bytes`` each: whole
    rows of x (a multiple of the ``cy`` rows of a chunk) when ``cy`` rows fit, else runs of whole
    chunks along x within ``cy`` rows. Either way each block covers whole stored chunks and a
    ``(y, x)`` → points flattening of ``cy = 1`` stores moves no data."""
    ny, nx, *rest = (int(v) for v in shape)
    cy, cx = int(chunks[0]), int(chunks[1])
    points = max(1, int(block_bytes) // (int(itemsize) * int(np.prod(rest, dtype=np.int64))))
    if nx * cy <= points:
        return (min(ny, max(cy, points // nx // cy * cy)), nx, *rest)
    return (cy, min(nx, max(cx, points // cy // cx * cx)), *rest)


def _per_point(array) -> bool:
    dims = tuple(getattr(array.metadata, "dimension_names", None) or ())
    return dims[:2] == ("y", "x")


def lazy_outputs(results: Path, names) -> dict:
    """``{name: dask array}`` of results-store variables (nothing is read): per-point ones in
    blocks of :func:`read_chunks`, scan-wide ones as stored."""
    group = zarr.open_group(str(results), mode="r", use_consolidated=False)
    out = {}
    for name in names:
        array = group[name]
        chunks = read_chunks(array.shape, array.chunks, array.dtype.itemsize) if _per_point(array) else None
        out[name] = da.from_zarr(array, chunks=chunks) if chunks else da.from_zarr(array)
    return out


def _store_chunk(block, *, results: str, variable: str, block_info=None):
    """Write one block of a dask array into its region of the results store."""
    region = tuple(slice(start, stop) for start, stop in block_info[0]["array-location"])
    write_region(results, variable, block, region)
    return np.zeros((1,) * block.ndim, dtype=bool)


class ReduceWriter:
    """Writes a reduce stage's declared outputs into the results store."""

    def __init__(self, results: Path, spec: StageSpec, layout: Layout, client):
        self.results = Path(results)
        self.spec = spec
        self.layout = layout
        self.client = client
        self.variables = {v.name: v for v in spec.outputs}
        self.written: set[str] = set()

    def write(self, name: str, array) -> None:
        """Write the whole of output ``name`` (numpy: at once; dask: block by block on workers,
        each block whole store chunks)."""
        if name not in self.variables:
            raise KeyError(f"reduce stage {self.spec.name!r} writes {name!r}, which it does not declare "
                           f"(outputs: {', '.join(self.variables)})")
        var = self.variables[name]
        shape = self.layout.shape(var)
        if tuple(np.shape(array)) != shape:
            raise ValueError(f"reduce stage {self.spec.name!r}: {name!r} has shape {np.shape(array)}, "
                             f"the store expects {shape}")
        if hasattr(array, "dask"):
            store_chunks = self.layout.chunks(var)
            blocks = (read_chunks(shape, store_chunks, np.dtype(var.dtype).itemsize) if var.per_point
                      else store_chunks)  # whole store chunks each: no two tasks write one chunk
            chunked = array.astype(var.dtype).rechunk(blocks)
            marks = chunked.map_blocks(_store_chunk, results=str(self.results), variable=name,
                                       dtype=bool, chunks=tuple((1,) * len(c) for c in chunked.chunks))
            self.client.compute(marks).result()
        else:
            write_region(self.results, name, np.asarray(array, dtype=var.dtype))
        self.written.add(name)


def run_reduce_stage(spec: StageSpec, params: dict, results: Path, layout: Layout, client, *,
                     available: set, log=None) -> dict | None:
    """Run one reduce stage on the ``available`` outputs (of the stages before it), check it
    wrote every output, record what it returned, mark it done; returns what it returned."""
    names = {**spec.inputs, **spec.optional_inputs}
    present = {key for key in names.values() if key in available}
    arrays = lazy_outputs(results, sorted(present))
    kwargs = {arg: arrays[key] for arg, key in spec.inputs.items()}
    kwargs.update({arg: arrays.get(key) for arg, key in spec.optional_inputs.items()})
    writer = ReduceWriter(results, spec, layout, client)
    info = spec.function()(**kwargs, client=client, writer=writer, **params)
    missing = [name for name in spec.output_names if name not in writer.written]
    if missing:
        raise RuntimeError(f"reduce stage {spec.name!r} did not write {missing}")
    if isinstance(info, dict):
        for line in info.get("log", []):
            if log is not None:
                log(f"    {line}")
        record_reduce_info(results, spec.name, info)
    mark_reduce_done(results, spec.name)
    return info
