"""The LaueTools reference data in tests/data and helpers to read it (a helper module, no tests).

Imported by name (``from reference_data import calibration_from_block``): tests/ is on
``sys.path`` (``pythonpath`` in pyproject.toml). The fixtures that serve these files are in
tests/conftest.py.
"""
import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def load_json(name: str):
    with open(DATA / name) as f:
        return json.load(f)


def calibration_from_block(block):
    from laueflow.physics.geometry import Calibration

    return Calibration(*block["calib"], block["pixelsize_mm"], tuple(block["framedim_rows_cols"]), block.get("CCDLabel", "sCMOS"))
