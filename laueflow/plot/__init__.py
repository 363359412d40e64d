"""Maps and figures of a results store (matplotlib; orix for IPF colours, symmetry and pole figures).

Open the store with :func:`laueflow.open_results`, then e.g.::

    import laueflow, laueflow.plot as lp
    ds = laueflow.open_results("demo/results.zarr")
    lp.ipf_map(ds, "z").savefig("ipf_z.png")

Every function returns a ``matplotlib.figure.Figure`` (no pyplot state: safe in scripts and
notebooks alike). Axes in µm, colour bars with units, grey = not indexed; grain variables show
the best grain (the brightest, then the highest matching rate: ``laueflow.best_grain``) unless
``grain=k``. The catalogue: docs/maps.md.
"""
from .histograms import descriptor_histograms, strain_histograms
from .image import image_view
from .maps import (STRAIN_COMPONENTS, matching_rate_map, peak_count_map, scalar_map, status_map, strain_map,
                   tensor_maps, von_mises_map)
from .orientations import ipf_colors, ipf_map, pole_figure
from .segmentation import cluster_map, phase_group_map, rgb_map, segmentation_scores

__all__ = ["scalar_map", "matching_rate_map", "peak_count_map", "von_mises_map", "strain_map", "status_map",
           "tensor_maps", "STRAIN_COMPONENTS", "ipf_colors", "ipf_map", "pole_figure", "cluster_map", "phase_group_map", "rgb_map",
           "segmentation_scores", "image_view", "strain_histograms", "descriptor_histograms"]
