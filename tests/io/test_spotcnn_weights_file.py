"""Writing spot CNN weights (``laueflow train spots``) and reading them back, sha256-checked."""
import json

import torch

from laueflow.io.model_files import file_sha256, load_spotcnn, save_spotcnn
from laueflow.models.spotcnn import SpotCNN, count_parameters


def test_saved_weights_load_back_with_their_hash(tmp_path):
    torch.manual_seed(0)
    model = SpotCNN()
    path = tmp_path / "sub" / "w.pt"
    meta = save_spotcnn(model, path, metadata={"seed": 7})
    assert json.loads(path.with_suffix(".json").read_text()) == meta
    assert meta["sha256"] == file_sha256(path) and meta["parameters"] == count_parameters(model)
    assert meta["seed"] == 7
    loaded = load_spotcnn(path)  # checks the recorded sha256
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
