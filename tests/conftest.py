import json
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"


def load_json(name: str):
    with open(DATA / name) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def geometry_vectors():
    return load_json("geometry_vectors.json")


@pytest.fixture(scope="session")
def simulated_spots_cases():
    return load_json("simulated_spots.json")["cases"]


@pytest.fixture(scope="session")
def strain_cases():
    return load_json("strain_cases.json")["cases"]


def calibration_from_block(block):
    from laueflow.physics.geometry import Calibration

    return Calibration(*block["calib"], block["pixelsize_mm"], tuple(block["framedim_rows_cols"]), block.get("CCDLabel", "sCMOS"))


def gpu_available() -> bool:
    from laueflow.backend import gpu_available as _gpu

    return _gpu()


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (cupy/torch CUDA not available)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
