"""`laueflow train autoencoder`: help with examples, and fine-tuning on a scan store."""
from __future__ import annotations

import json

import numpy as np

import test_pipeline_standin as standin
from laueflow.cli.train_autoencoder import HELD_OUT_MATERIAL


def test_help_has_examples(capsys):
    import pytest

    from laueflow.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "autoencoder", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "laueflow train autoencoder --out laueflow/data/autoencoder.pt --seed 0" in out
    assert "--init" in out and "--scan" in out and "held-out" in out

    from laueflow.cli.train_autoencoder import HELD_OUT_MATERIAL
    from laueflow.synth import training_frames

    assert HELD_OUT_MATERIAL == training_frames.HELD_OUT_MATERIAL  # the help names the right one


def test_fine_tune_on_a_scan_store(tmp_path, capsys):
    from laueflow.cli.main import main
    from laueflow.io.model_files import default_autoencoder_path, load_autoencoder

    scan = tmp_path / "scan.zarr"
    standin.make_scan_store(scan, ny=2, nx=5, rows=256, cols=256, n_spots=20, invalid=[(1, 4)])
    out = tmp_path / "tuned.pt"
    shipped = default_autoencoder_path()
    assert main(["train", "autoencoder", "--init", str(shipped), "--scan", str(scan), "--out", str(out),
                 "--val-scans", "0", "--heldout-scans", "0", "--epochs", "1", "--batch-size", "4"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["init"] == str(shipped) and meta["user_scans"] == [str(scan)] and meta["train_scan_seeds"] == []
    assert meta["n_train"] == 8  # 9 valid images, 1 kept for validation
    assert meta["preprocess"] == json.loads(shipped.with_suffix(".json").read_text())["preprocess"]
    tuned = load_autoencoder(out)
    assert np.isfinite(meta["history"][0]["scan0_bce"])
    assert any(not np.array_equal(a.detach().numpy(), b.detach().numpy())
               for a, b in zip(tuned.parameters(), load_autoencoder().parameters()))
    assert "wrote" in capsys.readouterr().out


def test_simulated_training_keeps_the_epoch_that_separates_grains_best(tmp_path, capsys):
    """Score scans with known grain maps choose the epoch (the initial weights included); the
    held-out material's separability is reported, never used to choose."""
    from laueflow.cli.main import main

    out = tmp_path / "small.pt"
    assert main(["train", "autoencoder", "--out", str(out), "--train-scans", "2", "--scan-shape", "2", "3",
                 "--epochs", "1", "--val-scans", "1", "--heldout-scans", "1", "--score-scans", "2"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["epoch_kept_by"].startswith("separability") and len(meta["score_scans"]) == 2
    history = meta["history"]
    assert [r["epoch"] for r in history] == [0, 1]
    assert meta["best_epoch"] == max(history, key=lambda r: (r["mean_ari"], -r["epoch"]))["epoch"]
    held = meta["heldout_separability"]  # two Sn score scans and their mean
    assert len(held) == 3 and "mean" in held
    assert all(name == "mean" or name.split()[0] == HELD_OUT_MATERIAL for name in held)
    assert all(name.split()[0] != HELD_OUT_MATERIAL for name in meta["score_scans"])
    assert "score scans (choose the epoch)" in capsys.readouterr().out


def test_score_scans_out_of_range_is_refused_before_any_work(tmp_path, capsys):
    from laueflow.cli.main import main

    assert main(["train", "autoencoder", "--out", str(tmp_path / "x.pt"), "--score-scans", "-1"]) == 2
    captured = capsys.readouterr()
    assert "--score-scans must be in 0" in captured.err
    assert "simulated training scans" not in captured.out and not (tmp_path / "x.pt").exists()
