"""Models of stages: resolved to files on the driver, loaded once per worker process.

A stage declares its model parameters (``StageSpec.models = {parameter: kind}``). For each kind
this module knows how to

- ``check(params, context)`` — validate phase: the file exists and is sound, or it can be made
  (no training, no store, no worker);
- ``resolve(params, context) -> path | None`` — prepare phase, on the driver: the absolute path of
  the model file (found in the cache, or trained and stored once); None when the stage's
  parameters need no model (e.g. ``descriptors`` with ``method: fit``);
- ``load(path, device)`` — in the worker, through :func:`cached_model`: once per worker process
  per (file SHA-256, device); the stage receives the loaded model in place of the path.

Built-in kinds: ``spot-cnn`` (``laueflow/data/spotcnn.pt`` or a user file, sha256-checked),
``autoencoder`` (``laueflow/data/autoencoder.pt`` or a user file, sha256-checked; its latent size
must equal the stage's ``n_features``) and ``lauenn-indexer`` (:mod:`laueflow.pipeline.indexers`). Plug-ins add kinds with
:func:`register_model_kind`.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..io.indexer_files import load_indexer
from ..io.model_files import (check_autoencoder_file, check_spotcnn_file, default_autoencoder_path,
                              default_spotcnn_path, file_sha256, load_autoencoder, load_spotcnn)
from . import indexers

__all__ = ["ModelKind", "register_model_kind", "model_kind", "check_models", "resolve_models",
           "cached_model", "clear_model_cache"]


@dataclass(frozen=True)
class ModelKind:
    name: str
    check: Callable[[Mapping, Mapping], None]
    resolve: Callable[[Mapping, Mapping], "str | None"]
    load: Callable[[str, str], Any]


_KINDS: dict[str, ModelKind] = {}


def register_model_kind(kind: ModelKind) -> ModelKind:
    _KINDS[kind.name] = kind
    return kind


def model_kind(name: str) -> ModelKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise KeyError(f"unknown model kind {name!r} (known: {', '.join(sorted(_KINDS))}); a plug-in "
                       "must register it with laueflow.pipeline.models.register_model_kind") from None


def check_models(spec, params: Mapping, context: Mapping) -> None:
    """Validate phase: every model the stage will need can be had (raises ``ValueError``)."""
    for parameter, kind in spec.models.items():
        try:
            model_kind(kind).check(params, context)
        except (OSError, LookupError, RuntimeError, ValueError) as err:
            raise ValueError(f"stage {spec.name!r}, parameter {parameter!r}: {err}") from None


def resolve_models(spec, params: Mapping, context: Mapping) -> dict:
    """Prepare phase: ``params`` with every model parameter set to an absolute file path (or None)."""
    out = dict(params)
    for parameter, kind in spec.models.items():
        path = model_kind(kind).resolve(params, context)
        out[parameter] = None if path is None else str(Path(path).resolve())
    return out


# --------------------------------------------------------------------------- worker-side cache
_MODELS: dict[tuple, Any] = {}
_MODEL_LOCK = threading.Lock()


def cached_model(loader: Callable[[str, str], Any], path: str | os.PathLike, *, device: str = "cpu"):
    """``loader(path, device)``, once per process per (loader, file SHA-256, device).

    The one model cache of laueflow: on a Dask worker it lives as long as the worker process, so
    each model loads once per worker, not per task; a changed file reloads, an unchanged never.
    """
    key = (getattr(loader, "__module__", ""), getattr(loader, "__qualname__", repr(loader)),
           file_sha256(path), str(device))
    with _MODEL_LOCK:
        if key not in _MODELS:
            _MODELS[key] = loader(os.fspath(path), str(device))
        return _MODELS[key]


def clear_model_cache() -> None:
    with _MODEL_LOCK:
        _MODELS.clear()


def load_models(spec, params: Mapping, device: str) -> dict:
    """In the worker: ``params`` with each model path replaced by the loaded model."""
    out = dict(params)
    for parameter, kind in spec.models.items():
        if out.get(parameter) is not None:
            out[parameter] = cached_model(model_kind(kind).load, out[parameter], device=device)
    return out


# --------------------------------------------------------------------------- built-in kinds
def _spotcnn_path(params: Mapping) -> Path | None:
    if params.get("method", "cnn") != "cnn":
        return None
    return Path(params["model"]).expanduser() if params.get("model") else default_spotcnn_path()


def _check_spotcnn(params: Mapping, context: Mapping) -> None:
    path = _spotcnn_path(params)
    if path is not None:
        check_spotcnn_file(path)


def _resolve_spotcnn(params: Mapping, context: Mapping):
    return _spotcnn_path(params)


def _load_indexer(path: str, device: str):
    indexer = load_indexer(path)
    indexer.model.to(device)
    return indexer


register_model_kind(ModelKind("spot-cnn", _check_spotcnn, _resolve_spotcnn, load_spotcnn))
register_model_kind(ModelKind("lauenn-indexer", indexers.check_index_model, indexers.resolve_index_model,
                              _load_indexer))


def _autoencoder_path(params: Mapping) -> Path | None:
    if params.get("method", "pixels") != "autoencoder":
        return None  # method: pixels needs no model
    return Path(params["model"]).expanduser() if params.get("model") else default_autoencoder_path()


def _check_autoencoder(params: Mapping, context: Mapping) -> None:
    path = _autoencoder_path(params)
    if path is None:
        return
    meta = check_autoencoder_file(path)
    latent = int(meta["config"]["latent_size"])
    if "n_features" in params and int(params["n_features"]) != latent:
        raise ValueError(f"the model has {latent} features but n_features is {params['n_features']}; "
                         f"set n_features: {latent}")


register_model_kind(ModelKind("autoencoder", _check_autoencoder, lambda params, context: _autoencoder_path(params),
                              load_autoencoder))
