"""`laueflow train`: arguments → configuration, and the model cache seen from the command line."""
from __future__ import annotations

import pytest

from laueflow.stages.indexing.training import IndexerConfig
from tiny_models import forbid_indexer_training


def test_cli_train_indexer_arguments():
    from laueflow.cli.main import build_parser
    from laueflow.cli.train import config_from_args

    parser = build_parser()
    args = parser.parse_args(["train", "indexer", "--material", "Cu"])
    assert args.func.__name__ == "train_indexer_command" and args.material == ["Cu"]
    assert config_from_args(args) == IndexerConfig()  # no option: the documented defaults
    args = parser.parse_args(["train", "indexer", "--material", "GaN", "--material", "Si", "--max-grains", "3",
                              "--max-grains", "1", "--patterns", "50", "--step", "0.5", "--seed", "4"])
    assert args.max_grains == [3, 1]
    cfg = config_from_args(args)
    assert (cfg.max_grains, cfg.n_train, cfg.step_deg, cfg.seed) == ((3, 1), 50, 0.5, 4)


def test_cli_train_indexer_uses_cache(tmp_path, capsys, monkeypatch):
    """`laueflow train indexer` trains and stores once; the same command again loads the cached
    model (no training, file untouched); --retrain trains again."""
    from laueflow.cli.main import main

    cache = tmp_path / "models"
    argv = ["train", "indexer", "--material", "Cu", "--max-index", "2", "--max-grains", "1", "--patterns", "30",
            "--epochs", "1", "--max-angle", "20", "--step", "0.5", "--threads", "1", "--cache-dir", str(cache)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    [path] = cache.glob("lauenn-Cu-*.pt")
    assert f"indexer: saved {path}" in first and "indexer: loaded" not in first
    mtime = path.stat().st_mtime_ns

    forbid_indexer_training(monkeypatch)
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert f"indexer: loaded {path}" in again and "indexer: saved" not in again
    assert f"→ {path}" in again
    assert path.stat().st_mtime_ns == mtime and list(cache.iterdir()) == [path]
    with pytest.raises(AssertionError, match="must not train again"):
        main([*argv, "--retrain"])
