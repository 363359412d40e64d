"""The reduce phase: scan-wide stages after every tile is done (contract: ``docs/design.md``).

A reduce stage's function is called once, on the driver, as
``func(**inputs, client=client, writer=writer, **params)``: ``inputs`` are the earlier outputs it
declares, as lazy dask arrays read from the results store (chunked like the store); it writes each
declared output exactly once through ``writer.write(name, array)``: a numpy array is written
directly, a dask array region by region (one results chunk at a time, on the workers). When the
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

__all__ = ["ReduceWriter", "run_reduce_stage", "lazy_outputs"]


def lazy_outputs(results: Path, names) -> dict:
    """``{name: dask array}`` of results-store variables, chunked as stored (nothing is read)."""
    group = zarr.open_group(str(results), mode="r", use_consolidated=False)
    return {name: da.from_zarr(group[name]) for name in names}


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
        """Write the whole of output ``name`` (numpy: at once; dask: chunk by chunk on workers)."""
        if name not in self.variables:
            raise KeyError(f"reduce stage {self.spec.name!r} writes {name!r}, which it does not declare "
                           f"(outputs: {', '.join(self.variables)})")
        var = self.variables[name]
        shape = self.layout.shape(var)
        if tuple(np.shape(array)) != shape:
            raise ValueError(f"reduce stage {self.spec.name!r}: {name!r} has shape {np.shape(array)}, "
                             f"the store expects {shape}")
        if hasattr(array, "dask"):
            chunked = array.astype(var.dtype).rechunk(self.layout.chunks(var))
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
