"""laueflow: Laue microdiffraction scans to orientation, strain and microstructure maps.

``laueflow.open_results(path)`` opens a results store for exploring (statuses and materials by
name, positions in µm; ``best_grain`` / ``grain`` / ``material`` select grains), and
``laueflow.plot`` draws its maps (docs/results-schema.md, docs/maps.md).

Layers (dependencies point down only): ``cli`` → ``pipeline`` → ``stages`` → ``physics`` →
``kernels`` / ``models`` (plus ``backend``, the numpy/cupy helper). See ``docs/design.md``.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("laueflow")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

#: exploring results, imported on first use (xarray is heavy; the CLI imports this package)
_RESULTS_API = ("open_results", "best_grain", "grain", "material", "ResultsError")
__all__ = ["__version__", *_RESULTS_API]


def __getattr__(name):
    if name in _RESULTS_API:
        # by name, not `from .pipeline import results`: every layer imports this package for
        # __version__, and a static import here would make them all (indirectly) import the pipeline
        import importlib

        return getattr(importlib.import_module("laueflow.pipeline.results"), name)
    raise AttributeError(f"module 'laueflow' has no attribute {name!r}")
