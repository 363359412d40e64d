"""`laueflow index` on quartz peak lists: the Dauphiné twin (60° about c) puts every spot at the
same place, so a list with intensities is indexed to the right one of the two orientations and a
list without intensities is flagged ``variant_ambiguous`` (summary column and note) — never a
silent coin toss. Real command, real .dat files, a tiny quartz model trained once."""
from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from laueflow.cli.main import main
from laueflow.io.detfile import write_det
from laueflow.io.lauetools_files import read_fit, write_dat
from laueflow.physics import DEFAULT_CALIBRATION as CAL, get_material, simulate_spots
from laueflow.physics.orientations import random_orientations
from laueflow.physics.symmetry import reduce_misorientation
from laueflow.pipeline.indexers import get_indexer
from tiny_models import TINY

CONFIG = replace(TINY, max_grains=(1,))
QUARTZ = get_material("quartz")
UB_KEY = "UB matrix in q= (UB) B0 G*"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("quartz")
    get_indexer(["quartz"], CAL, CONFIG, cache_dir=root / "cache", verbose=False, threads=1)
    (root / "config.json").write_text(json.dumps(CONFIG.to_dict()))
    write_det(root / "calib.det", CAL, material="quartz")
    peaks = root / "peaks"
    peaks.mkdir()
    truth = {}
    for name, seed in (("bright", 3), ("plain", 4)):
        ub = random_orientations(1, seed=seed)[0]
        s = simulate_spots(QUARTZ, ub, CAL)
        order = np.random.default_rng(seed).permutation(len(s))  # file order says nothing
        measured = s.intensity ** 0.8 * np.exp(np.random.default_rng(seed).normal(0, 0.5, len(s))) * 1e4
        if name == "bright":
            write_dat(peaks / "bright.dat", s.col[order], s.row[order], measured[order], np.full(len(s), 100.0))
        else:
            (peaks / "plain.dat").write_text("peak_X peak_Y\n" + "".join(
                f"{c + 1:.3f} {r + 1:.3f}\n" for c, r in zip(s.col[order], s.row[order])))
        truth[name] = ub
    out = root / "out"
    rc = main(["index", str(peaks), "--calibration", str(root / "calib.det"), "--out", str(out), "--serial",
               "--material", "quartz", "--cache-dir", str(root / "cache"), "--indexer-config",
               str(root / "config.json"), "--no-train", "--max-grains", "1"])
    with open(out / "summary.csv", newline="") as f:
        rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(f)}
    return rc, out, rows, truth


def test_intensities_choose_the_orientation_and_no_intensities_are_flagged(indexed):
    rc, out, rows, truth = indexed
    assert rc == 0
    bright, plain = rows["bright.dat"], rows["plain.dat"]
    assert bright["variant_ambiguous"] == "0" and bright["intensities"] == "given"
    fit = read_fit(out / bright["fit_file"])
    assert float(reduce_misorientation(fit[UB_KEY], truth["bright"], QUARTZ)) < 0.1
    assert plain["variant_ambiguous"] == "1" and plain["intensities"] == "none"
    assert "Dauphiné twin" in plain["note"] and "there are no intensities" in plain["note"]
    # the flagged grain is the true one or its twin: the positions allow nothing else
    ub = read_fit(out / plain["fit_file"])[UB_KEY]
    twin = truth["plain"] @ np.array([[0.5, -np.sqrt(3) / 2, 0], [np.sqrt(3) / 2, 0.5, 0], [0, 0, 1]])  # 60° about c
    assert min(float(reduce_misorientation(ub, truth["plain"], QUARTZ)),
               float(reduce_misorientation(ub, twin, QUARTZ))) < 0.1
