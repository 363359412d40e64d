"""`laueflow train spots`: help with examples; the weights it writes are hash-checked on load
and the same command with the same seed writes the same file."""
from __future__ import annotations

import json

import pytest

from laueflow.cli.main import main
from laueflow.io.model_files import WeightsHashError, file_sha256, load_spotcnn

TINY = ["--train-scans", "2", "--scans-per-dataset", "2", "--val-scans", "1", "--spots-per-scan", "60",
        "--per-bin", "20", "--epochs", "2", "--hold-epochs", "1"]


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "spots", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "laueflow train spots --scan-zarr myscan.zarr --init laueflow/data/spotcnn.pt" in out


def test_weights_are_reproducible_and_hash_checked(tmp_path):
    # same file name in two folders: torch.save names the archive's records after the file
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "spotcnn.pt", tmp_path / "b" / "spotcnn.pt"
    assert main(["train", "spots", *TINY, "--out", str(first)]) == 0
    assert main(["train", "spots", *TINY, "--out", str(second)]) == 0
    meta = json.loads(first.with_suffix(".json").read_text())
    assert meta["sha256"] == file_sha256(first) == file_sha256(second)
    assert meta["seed"] == 0 and meta["best_epoch"] in (1, 2) and len(meta["history"]) == 2
    load_spotcnn(first)  # the recorded hash matches
    first.write_bytes(first.read_bytes()[:-1] + bytes([first.read_bytes()[-1] ^ 1]))
    with pytest.raises(WeightsHashError):
        load_spotcnn(first)


def test_nothing_to_train_on_is_refused(tmp_path, capsys):
    assert main(["train", "spots", "--train-scans", "0", "--out", str(tmp_path / "x.pt")]) == 2
    assert "nothing to train on: give --train-scans > 0 or --scan-zarr" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
