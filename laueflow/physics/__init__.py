"""Laue physics: detector geometry, crystallography, spot simulation, strain conventions."""
from .detfile import read_det, write_det
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
    "angular_distance", "read_det", "write_det", "Material", "get_material", "list_materials",
    "LaueSpots", "simulate_spots",
]
