"""Feature stage: every image of a tile → ``features (y, x, feature)``, the autoencoder's latent
vector (issue #13; Song, Tamura et al., ALS 12.3.2).

**Default ``method: pixels``** (since 2026-11-30, chosen by measurement, ``docs/features.md``):
the shipped generic autoencoder separates grains worse than the pixels (bar scans ARI
0.70–0.96 vs 0.96–1.00); ``method: autoencoder`` is the option (fine-tuning on the scan changes little).

``compute_features(images, mask=None, *, model=None, method="pixels", device="auto", n_features=256, batch_size=64)``:
the images the tile already read (``images (n, rows, cols)`` uint16, the same batch the ``peaks``
stage gets: in one stage group with it, nothing is read twice) are preprocessed by
:func:`laueflow.kernels.downsample.preprocess_frames` with the parameters stored with the model
(crop to a square, area-average to 128 × 128 leaving out the scan's bad pixels, smooth background
removed, log scaling to [0, 1]) in slices of ``batch_size`` images, and encoded in batches on the
model's device (:func:`laueflow.models.autoencoder.encode_images`). ``model`` is the loaded
:class:`~laueflow.models.autoencoder.LaueAutoencoder` (the pipeline loads the file named by the
``model`` parameter — None: the shipped ``laueflow/data/autoencoder.pt`` — once per worker and
device, :mod:`laueflow.pipeline.models`). ``n_features`` must equal the model's latent size (the
validation checks the file before the run starts). The segmentation stage reads ``features``.

``method: pixels`` (no model): the preprocessed 128 × 128 image, blurred by a Gaussian of
σ = ``pixel_blur_px`` (default 1 pixel of the 128 × 128 image, 16 detector pixels), area-averaged to
``sqrt(n_features)`` × ``sqrt(n_features)`` (256 → 16 × 16), in counts above the background
(``pixel_scaling: linear``, the default; ``log`` is the autoencoder's scale). Linear features keep
the image of a point that sees two domains the weighted sum of theirs, which the segmentation's
unmixing assignment uses; on the three bar scans of ``benchmarks/bench_segmentation_bars.py``
linear 16 × 16 features beat log ones (ARI 0.939 / 0.951 / 0.943 vs 0.858 / 0.761 / 0.941 at the
suggested K, nearest-centroid labels; ``docs/features.md``).

Where the run's cluster offers a GPU, ``device: auto`` puts this stage in its own (GPU) stage
group, which reads the tile's images from the scan store again; ``device: cpu`` keeps it in the
peak-search group (one read). Preprocessing runs on the CPU in both cases; CPU and CUDA features
agree to float32 rounding (``tests/stages/test_features_gpu.py``).

``normalize: auto`` (default) puts every image on the same incident intensity when the scan store
has a monitor (``laueflow ingest --monitor``): the counts above background are divided by the
point's monitor relative to the scan's median (the ``monitor`` batch key), before the scaling;
``monitor`` demands one (checked before the run), ``none`` never normalizes. A ring current that
decays between top-ups then no longer stretches a grain's cluster along the intensity
(``docs/segmentation.md``, "Uneven illumination").
"""
from __future__ import annotations

import numpy as np

from ..kernels.downsample import SCALINGS, gaussian_blur, preprocess_frames
from .base import StageSpec, Variable

__all__ = ["STAGE", "compute_features", "DEFAULT_N_FEATURES", "NORMALIZE"]

DEFAULT_N_FEATURES = 256


PIXEL_SIDES = (8, 16, 32, 64)  # sides that divide the 128 × 128 preprocessed image
#: σ (pixels of the 128 × 128 preprocessed image) of the Gaussian applied before the area
#: averages of ``method: pixels`` (docs/features.md, "Blur before the pixel features' area averages")
PIXEL_BLUR_PX = 1.0
NORMALIZE = ("auto", "monitor", "none")
NO_MONITOR = ("normalize: monitor, but the scan store has no monitor; ingest the scan with `laueflow ingest "
              "--monitor …` or set normalize: auto or none")


def pixel_features(small, n_features: int, blur_px: float = PIXEL_BLUR_PX) -> np.ndarray:
    """``(n, n_features)`` float32: preprocessed ``(n, 128, 128)`` images blurred by a Gaussian of
    σ = ``blur_px`` pixels (:func:`~laueflow.kernels.downsample.gaussian_blur`; 0: none), then
    area-averaged to a ``side × side`` grid, ``side = sqrt(n_features)``. The blur keeps a spot
    that moves by a few pixels (an orientation gradient across a grain) from jumping from one
    cell to the next; both steps are linear, so a mixture's features stay the mixture of its
    domains' features."""
    side = int(round(np.sqrt(n_features)))
    small = gaussian_blur(np.asarray(small, np.float32), blur_px)
    n, size = small.shape[0], small.shape[-1]
    f = size // side
    return small.reshape(n, side, f, side, f).mean(axis=(2, 4), dtype=np.float32).reshape(n, -1)


def compute_features(images, mask=None, monitor=None, *, model=None, method="pixels", device="auto",
                     n_features=DEFAULT_N_FEATURES, batch_size=64, pixel_scaling="linear",
                     pixel_blur_px=PIXEL_BLUR_PX, normalize="auto") -> dict[str, np.ndarray]:
    """``{"features": (n, n_features) float32}`` for ``images (n, rows, cols)``; ``monitor``:
    None or ``(n,)`` each image's incident intensity relative to the scan's (median 1)."""
    images = _as_batch(images)
    gain = monitor_gain(monitor, normalize, len(images))
    if method == "pixels":
        if model is not None:
            raise ValueError("features: a model was given with method: pixels (which uses none); "
                             "set method: autoencoder to encode with it")
        out = STAGE.empty_outputs(len(images), {"n_features": n_features})
        step = max(1, int(batch_size))
        for lo in range(0, len(images), step):
            small = preprocess_frames(images[lo:lo + step], mask, _part(gain, lo, step), scaling=pixel_scaling)
            out["features"][lo:lo + step] = pixel_features(small, n_features, pixel_blur_px)
        return out
    from ..models.autoencoder import encode_images  # deferred: imports torch

    if model is None or isinstance(model, (str, bytes)) or not hasattr(model, "encode"):
        raise TypeError("features: `model` must be a loaded LaueAutoencoder (laueflow.io.model_files."
                        "load_autoencoder); in a workflow the pipeline loads it from the `model` parameter")
    if int(model.latent_size) != int(n_features):
        raise ValueError(f"features: the model has {model.latent_size} features but n_features is {n_features}; "
                         f"set n_features: {model.latent_size}")
    out = STAGE.empty_outputs(len(images), {"n_features": n_features})
    step = max(1, int(batch_size))
    for lo in range(0, len(images), step):
        small = preprocess_frames(images[lo:lo + step], mask, _part(gain, lo, step), **getattr(model, "preprocess", {}))
        out["features"][lo:lo + step] = encode_images(model, small, batch_size=step)
    return out


def monitor_gain(monitor, normalize: str, n: int) -> np.ndarray | None:
    """``(n,)`` factors ``1 / monitor`` that put the images on the scan's median incident
    intensity, or None (``normalize: none``, or ``auto`` without a monitor)."""
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    if normalize == "none" or (monitor is None and normalize == "auto"):
        return None
    if monitor is None:
        raise ValueError(NO_MONITOR)
    monitor = np.asarray(monitor, dtype=np.float64).reshape(-1)
    if monitor.shape != (n,) or not np.all(np.isfinite(monitor) & (monitor > 0)):
        raise ValueError(f"monitor must hold one finite value > 0 per image ({n}), got shape {monitor.shape} "
                         f"with {int(np.sum(~(np.isfinite(monitor) & (monitor > 0))))} bad values")
    return 1.0 / monitor


def _part(gain, lo: int, step: int):
    return None if gain is None else gain[lo:lo + step]


def _as_batch(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"images must be (n_images, n_rows, n_cols), got shape {images.shape}")
    return images


def check_params(params) -> None:
    for name in ("n_features", "batch_size"):
        value = params.get(name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
    method = params.get("method", "pixels")
    if method not in ("autoencoder", "pixels"):
        raise ValueError(f"method must be 'autoencoder' or 'pixels', got {method!r}")
    if params.get("normalize", "auto") not in NORMALIZE:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE)}, got {params['normalize']!r}")
    blur = params.get("pixel_blur_px", PIXEL_BLUR_PX)
    if isinstance(blur, bool) or not isinstance(blur, (int, float, np.integer, np.floating)) \
            or not np.isfinite(blur) or not 0 <= blur <= 16:
        raise ValueError(f"pixel_blur_px must be a number of pixels (of the 128 × 128 image) from 0 (no blur) to 16, "
                         f"got {blur!r}")
    if params.get("pixel_scaling", "linear") not in SCALINGS:
        raise ValueError(f"pixel_scaling must be one of {', '.join(SCALINGS)}, got {params['pixel_scaling']!r}")
    if method == "pixels" and params["n_features"] not in [s * s for s in PIXEL_SIDES]:
        raise ValueError(f"method: pixels needs n_features = side² with side in {list(PIXEL_SIDES)} "
                         f"({', '.join(str(s * s) for s in PIXEL_SIDES)}), got {params['n_features']}")


def check_scan(params, scan) -> None:
    """``normalize: monitor`` needs a scan store with a monitor."""
    if params.get("normalize", "auto") == "monitor" and not scan.get("has_monitor"):
        raise ValueError(NO_MONITOR)


def prepare(params, context) -> dict:
    """Say once, before the tiles, whether the images are put on the same incident intensity."""
    monitor, log = context.get("monitor"), context.get("log") or (lambda *_: None)
    normalize = params.get("normalize", "auto")
    if monitor and normalize != "none":
        log(f"features: images normalized by the scan's monitor (relative to its median {monitor['median']:.6g}; "
            f"{monitor['min_relative']:.3g}–{monitor['max_relative']:.3g})")
    elif monitor:
        log("features: the scan's monitor is not used (normalize: none)")
    else:
        log("features: the scan store has no monitor, images are not normalized (`laueflow ingest --monitor` "
            "records one)")
    return dict(params)


def linear_features(stages) -> bool | None:
    """Whether the ``features`` stage among ``stages`` (a workflow's recorded stage list:
    ``[{name: params}, …]`` or names) gives features linear in the image (``method: pixels``,
    ``pixel_scaling: linear``: a mixture's features are the weighted sum of its domains', what
    the segmentation's unmixing assumes); None when no ``features`` stage is listed."""
    for entry in stages or []:
        name, params = (entry, {}) if isinstance(entry, str) else next(iter(dict(entry).items()))
        if name == "features":
            params = params or {}
            return (params.get("method", "pixels") == "pixels"
                    and params.get("pixel_scaling", "linear") == "linear")
    return None


STAGE = StageSpec(
    name="features",
    func=compute_features,
    inputs={"images": "images"},
    optional_inputs={"mask": "mask", "monitor": "monitor"},
    outputs=(
        Variable("features", ("feature",), "float32", float("nan"), "1",
                 "autoencoder latent features of the preprocessed 128×128 image, or its area averages "
                 "(method: pixels; counts above background with pixel_scaling: linear) (NaN: image not processed)"),
    ),
    params={"method": "pixels", "model": None, "device": "auto", "n_features": DEFAULT_N_FEATURES,
            "batch_size": 64, "pixel_scaling": "linear", "pixel_blur_px": PIXEL_BLUR_PX, "normalize": "auto"},
    dim_sizes={"feature": "n_features"},
    check=check_params,
    check_scan=check_scan,
    prepare=prepare,
    models={"model": "autoencoder"},
    description="features of every image, the input of the segmentation: area-averaged preprocessed pixels "
                "(default) or CNN autoencoder latents",
)
