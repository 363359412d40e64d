"""Laue physics: detector geometry, crystallography, spot simulation, strain conventions.

(LaueTools ``.det`` files are read and written by :mod:`laueflow.io.detfile`.)
"""
from .geometry import (
    DEFAULT_CALIBRATION,
    Calibration,
    angles_to_pixel,
    angles_to_qhat,
    angular_distance,
    pixel_to_angles,
)
from .materials import Material, get_material, list_materials
from .simulate import LaueSpots, simulate_spots

__all__ = [
    "Calibration", "DEFAULT_CALIBRATION", "pixel_to_angles", "angles_to_pixel", "angles_to_qhat",
    "angular_distance", "Material", "get_material", "list_materials",
    "LaueSpots", "simulate_spots",
]
