"""Accuracy of a run against the simulator's ground truth: the metrics of ``laueflow evaluate``.

Metrics are plug-ins (:mod:`.metrics`): each names the variables it needs and computes a report
from numpy arrays (:class:`StoreArrays`); :mod:`laueflow.pipeline.evaluate` opens the stores,
selects the arrays, runs every registered metric whose variables are present and formats the
reports. Built in, in this order: ``peaks`` (:mod:`.peaks`), ``descriptors``, ``indexing``,
``strain`` (:mod:`.stage_metrics`), ``segmentation`` (:mod:`.segmentation`), ``delegate_map`` (:mod:`.delegates`); peak ↔ truth-spot matching: :mod:`.matching`.
"""
from . import peaks, stage_metrics, segmentation, delegates  # noqa: F401,I001  (register the built-in metrics, in this order)
from .metrics import DEFAULT_OPTIONS, METRICS, Metric, StoreArrays, register_metric

__all__ = ["DEFAULT_OPTIONS", "METRICS", "Metric", "StoreArrays", "register_metric"]
