"""``--materials-file YAML`` for every command that names materials (simulate, ingest, train …).

The file has the layout of ``laueflow/data/materials.yaml`` (``docs/materials.md``); its materials
are known by name to the command, before the built-in library. Stores then carry each material's
full definition, so later commands need the file no more.
"""
from __future__ import annotations

from ..io.materials_file import load_materials_file
from ..physics.materials import register_materials
from .main import UserError

__all__ = ["add_materials_file_argument", "use_materials_files"]


def add_materials_file_argument(parser) -> None:
    parser.add_argument("--materials-file", action="append", default=[], metavar="YAML",
                        help="materials defined in a YAML file (layout: docs/materials.md), usable by name "
                             "with --material; repeatable")


def use_materials_files(paths) -> list[str]:
    """Register the materials of each file (by name, before the library); their names."""
    names: list[str] = []
    for path in paths or []:
        try:
            names += register_materials(load_materials_file(path).values())
        except FileNotFoundError:
            raise UserError(f"--materials-file {path}: no such file") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"--materials-file {path}: {err} (layout: docs/materials.md)") from None
    return names
