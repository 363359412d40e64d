"""laueflow: Laue microdiffraction scans to orientation, strain and microstructure maps.

Layers (dependencies point down only): ``cli`` → ``pipeline`` → ``stages`` → ``physics`` →
``kernels`` / ``models`` (plus ``backend``, the numpy/cupy helper). See ``docs/design.md``.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("laueflow")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
