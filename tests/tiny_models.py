"""Small model configurations shared by test files (a helper module, no tests here).

Imported by name (``from tiny_models import TINY``): tests/ is on ``sys.path`` (``pythonpath`` in
pyproject.toml).
"""
from laueflow.stages.indexing.training import IndexerConfig

#: a tiny, fast indexer configuration (Cu, ≤ 2 grains, small network): trains in a few seconds
TINY = IndexerConfig(max_index=(4,), max_grains=(2,), n_train=150, n_validation=30, n_centres=40,
                     hidden=(96, 96, 96), epochs=20, batch_size=256, learning_rate=3e-3,
                     min_class_count=5, patience=3, seed=0)


def forbid_indexer_training(monkeypatch) -> None:
    """From here on (this test), training an indexer raises ``AssertionError("must not train
    again")`` — wherever it is called from (``laueflow.pipeline.indexers`` binds its own name)."""
    def boom(*a, **k):
        raise AssertionError("must not train again")

    monkeypatch.setattr("laueflow.stages.indexing.training.train_indexer", boom)
    monkeypatch.setattr("laueflow.pipeline.indexers.train_indexer", boom)
