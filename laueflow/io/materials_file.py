"""User materials YAML files (the layout of ``laueflow/data/materials.yaml``, ``docs/materials.md``)."""
from __future__ import annotations

import yaml

from ..physics.materials import Material, material_from_entry

__all__ = ["load_materials_file"]


def load_materials_file(path) -> dict[str, Material]:
    """Read a user materials YAML file: ``{name: Material}``."""
    with open(path) as f:
        entries = yaml.safe_load(f) or {}
    return {name: material_from_entry(name, entry) for name, entry in entries.items()}
