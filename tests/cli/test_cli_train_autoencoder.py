"""`laueflow train autoencoder`: help with examples, and fine-tuning on a scan store."""
from __future__ import annotations

import json

import numpy as np

import test_pipeline_standin as standin


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
