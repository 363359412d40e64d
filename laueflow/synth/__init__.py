"""Synthetic Laue scans with ground truth (``laueflow simulate``).

* :mod:`~laueflow.synth.microstructure` — Voronoi grains, twins, sub-grains, footprint overlap,
  orientation gradients and strain fields;
* :mod:`~laueflow.synth.spots` — truth spot table (amplitudes, profiles, qualities);
* :mod:`~laueflow.synth.render` — pure image kernels (background, Gaussian spots, noise);
* :mod:`~laueflow.synth.scan` — plan / render / write a whole scan (``docs/truth-format.md``).
"""
from .scan import TRUTH_FORMAT_VERSION, ScanParameters, ScanPlan, plan_scan, simulate_scan, truth_dataset

__all__ = ["TRUTH_FORMAT_VERSION", "ScanParameters", "ScanPlan", "plan_scan", "simulate_scan", "truth_dataset"]
