"""Dask orchestration: workflows, clusters, the results store, evaluation. No science here.

- :mod:`.workflow` — workflow YAML schema and validation (:func:`load_workflow`)
- :mod:`.cluster` — cluster configs → a ``distributed.Client`` (:func:`connect`), CPU sizing
- :mod:`.store` — results-store layout, creation, whole-chunk writes, resume markers
- :mod:`.run` — the task per tile and the driver (:func:`run_workflow`)
- :mod:`.evaluate` — metrics against the simulator's truth (:func:`evaluate`)
- :mod:`.ingest` — image files → scan store
- :mod:`.indexers` — LaueNN model cache (find or train once per run; the ``index`` stage's prepare hook)

Submodules are imported on use so ``import laueflow.pipeline`` stays light.
"""
