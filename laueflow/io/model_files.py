"""Model weight files: file hashes, the spot CNN's and the autoencoder's shipped weights, saving
trained weights.

``laueflow/data/spotcnn.pt`` (a torch ``state_dict``) ships with ``spotcnn.json`` next to it
(sha256 of the ``.pt``, the command and seed that produced it, training data summary);
:func:`load_spotcnn` refuses a weights file whose sha256 differs from the recorded one;
``autoencoder.pt`` + ``autoencoder.json`` (also its architecture and preprocessing) likewise
(:func:`load_autoencoder`). The
LaueNN indexer files are in :mod:`laueflow.io.indexer_files`.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

__all__ = ["WeightsHashError", "file_sha256", "default_spotcnn_path", "spotcnn_expected_sha256",
           "check_spotcnn_file", "load_spotcnn", "save_spotcnn", "default_autoencoder_path", "autoencoder_metadata",
           "check_autoencoder_file", "load_autoencoder", "save_autoencoder"]


class WeightsHashError(RuntimeError):
    """The weights file does not match the sha256 recorded in its metadata."""


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, computed once per (path, size, mtime) in this process."""
    st = os.stat(path)
    return _sha256(os.fspath(path), st.st_size, st.st_mtime_ns)


def default_spotcnn_path() -> Path:
    """The shipped spot CNN weights (package data)."""
    return Path(__file__).resolve().parent.parent / "data" / "spotcnn.pt"


def spotcnn_expected_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 recorded next to ``path`` (``spotcnn.pt`` → ``spotcnn.json``), or None."""
    meta = Path(path).with_suffix(".json")
    return json.loads(meta.read_text()).get("sha256") if meta.exists() else None


def check_spotcnn_file(path: str | os.PathLike, expected_sha256: str | None = None) -> Path:
    """``path`` exists and matches its recorded sha256; raises with the fix otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"spot CNN weights not found: {path} (re-install laueflow, or train "
                                "them with `laueflow train spots --out FILE.pt`)")
    expected = expected_sha256 or spotcnn_expected_sha256(path)
    if expected is None:
        raise WeightsHashError(f"{path}: no sha256 to check against (missing {path.with_suffix('.json').name})")
    actual = file_sha256(path)
    if actual != expected:
        raise WeightsHashError(
            f"{path}: sha256 {actual[:16]}… does not match the recorded {expected[:16]}… — the weights "
            f"file was modified or replaced; re-install laueflow or retrain with 'laueflow train spots'")
    return path


def load_spotcnn(path=None, device: str = "cpu", *, expected_sha256: str | None = None,
                 check_hash: bool = True):
    """A :class:`~laueflow.models.spotcnn.SpotCNN` in eval mode on ``device`` from a weights file
    (default: the shipped one), after checking its sha256 (``check_hash=False``: fresh files)."""
    import torch  # deferred: torch is heavy

    from ..models.spotcnn import SpotCNN  # deferred: imports torch

    path = Path(path) if path is not None else default_spotcnn_path()
    if check_hash:
        check_spotcnn_file(path, expected_sha256)
    elif not path.is_file():
        raise FileNotFoundError(f"spot CNN weights not found: {path}")
    model = SpotCNN()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    return model.to(torch.device(device))


def save_spotcnn(model, path, *, metadata: dict) -> dict:
    """Write the spot CNN's ``state_dict`` to ``path`` and, next to it, ``path.with_suffix('.json')``
    with its sha256, parameter count and ``metadata`` (what :func:`load_spotcnn` checks); returns it."""
    import torch  # deferred: torch is heavy

    from ..models.spotcnn import count_parameters  # deferred: imports torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, path)
    meta = {"sha256": file_sha256(path), "parameters": count_parameters(model), **metadata}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# --------------------------------------------------------------------------- autoencoder
def default_autoencoder_path() -> Path:
    """The shipped autoencoder weights (package data; ``autoencoder.json`` next to it)."""
    return Path(__file__).resolve().parent.parent / "data" / "autoencoder.pt"


def autoencoder_metadata(path: str | os.PathLike) -> dict:
    """The json next to an autoencoder weights file (sha256, architecture, preprocessing …)."""
    meta = Path(path).with_suffix(".json")
    if not meta.is_file():
        raise WeightsHashError(f"{path}: no {meta.name} next to it (sha256, architecture and preprocessing "
                               "are recorded there); write weights with `laueflow train autoencoder`")
    return json.loads(meta.read_text())


def check_autoencoder_file(path: str | os.PathLike) -> dict:
    """``path`` exists and matches the sha256 in its json; returns the json (raises with the fix)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"autoencoder weights not found: {path} (re-install laueflow, or train them "
                                "with `laueflow train autoencoder --out FILE.pt`)")
    meta = autoencoder_metadata(path)
    actual = file_sha256(path)
    if actual != meta.get("sha256"):
        raise WeightsHashError(
            f"{path}: sha256 {actual[:16]}… does not match the recorded {str(meta.get('sha256'))[:16]}… — the "
            "weights file was modified or replaced; re-install laueflow or retrain with `laueflow train autoencoder`")
    return meta


def load_autoencoder(path=None, device: str = "cpu", *, check_hash: bool = True):
    """A :class:`~laueflow.models.autoencoder.LaueAutoencoder` in eval mode on ``device`` from a
    weights file (default: the shipped one) after checking its sha256. The model carries
    ``preprocess`` (the :func:`~laueflow.kernels.downsample.preprocess_frames` parameters it was
    trained with) and ``sha256``; on the CPU its weights are channels-last (faster, same values)."""
    import torch  # deferred: torch is heavy

    from ..models.autoencoder import LaueAutoencoder  # deferred: imports torch

    path = Path(path) if path is not None else default_autoencoder_path()
    meta = check_autoencoder_file(path) if check_hash else autoencoder_metadata(path)
    config = meta["config"]
    model = LaueAutoencoder(latent_size=config["latent_size"], widths=config["widths"],
                            dropout=config.get("dropout", 0.2), input_size=config["input_size"],
                            batch_norm=config.get("batch_norm", False), decoder_widths=config.get("decoder_widths"))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    model.preprocess = dict(meta["preprocess"])
    model.sha256 = meta["sha256"]
    model = model.to(torch.device(device))
    if torch.device(device).type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


def save_autoencoder(model, path, *, preprocess: dict, metadata: dict) -> dict:
    """Write ``model``'s ``state_dict`` to ``path`` and its json (sha256, architecture, parameter
    count, ``preprocess``, ``metadata``) next to it; returns the json."""
    import torch  # deferred: torch is heavy

    from ..models.autoencoder import count_parameters  # deferred: imports torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    meta = {"sha256": file_sha256(path), "parameters": count_parameters(model), "config": model.config(),
            "preprocess": dict(preprocess), **metadata}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
