"""Training of LaueNN indexers: configuration, training data → samples, the fit.

:func:`train_indexer` returns an :class:`Indexer` (model + class table + configuration) for
(materials, calibration, energy band, feature/class/training parameters); :func:`model_hash`
identifies it. Files and the model cache live outside the stages layer:
:mod:`laueflow.io.indexer_files` (save/load) and :mod:`laueflow.pipeline.indexers` (cache
directory, train-once-per-run, the stage's driver-side preparation).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ...backend import native_bfloat16, to_numpy
from ...kernels.histograms import angular_histograms, n_bins_for
from ...physics.geometry import Calibration, angles_to_pixel, pixel_to_angles
from ...physics.materials import Material, get_materials
from ...physics.simulate import DEFAULT_ENERGY_BAND_KEV
from .classes import ClassTable, build_class_table
from .training_data import grain_count_table, simulate_patterns

__all__ = ["IndexerConfig", "Indexer", "train_indexer", "model_hash", "resolve_materials", "MODEL_FORMAT",
           "TRAINING_CODE_VERSION", "CALIBRATION_TOLERANCE_PX", "calibration_sensitivity", "calibration_decimals",
           "calibration_key", "class_log_priors", "relative_rank_bucket", "PRIOR_RANK_BUCKETS"]

#: version of the stored model (part of the model hash; see :mod:`laueflow.io.indexer_files`)
MODEL_FORMAT = 2

#: version of the training and feature code (part of the model hash): bump it whenever a change to
#: this module, ``training_data.py``, ``classes.py``, ``kernels/histograms.py``, the simulator or
#: ``models/lauenn.py`` changes what training the same inputs gives (history: ``docs/indexing.md`` §4)
TRAINING_CODE_VERSION = 4

#: the cache key rounds each calibration parameter to a step that moves no spot on the detector by
#: this much (px) — see :func:`calibration_key`
CALIBRATION_TOLERANCE_PX = 0.05


@dataclass(frozen=True)
class IndexerConfig:
    """Everything that defines a trained indexer (all of it enters the cache hash).

    ``max_index`` / ``max_grains`` are per material (a single value applies to all).
    """

    max_index: tuple = (5,)
    max_grains: tuple = (5,)
    max_angle_deg: float = 60.0   # 20° (the example) gives 94 % on Cu 1–5 grains, 60° 98.7 %
    step_deg: float = 0.1
    smooth_bins: float = 0.0      # Gaussian σ (bins) applied to the histograms (training and prediction);
                                  # off: σ = 1 cost ZrO2 6 points (95.96 → 89.9 %) and Cu nothing
    energy_band_kev: tuple = DEFAULT_ENERGY_BAND_KEV
    n_train: int = 600            # patterns per grain-count combination (training)
    n_validation: int = 120       # patterns per grain-count combination (validation)
    max_train_patterns: int = 3000  # cap on the training patterns per epoch (Cu 1–5 grains: 5 × 600);
                                    # multi-phase models have many combinations, each gets an equal share
    max_validation_patterns: int = 600  # the same cap for the validation set
    n_centres: int = 60           # centre spots per pattern used as samples (prediction: the first n_predict)
    training_centres: str = "random"  # how the training centres are drawn (``centre_order``): "random" =
                                  # uniformly among the labelled spots, so the classifier is as accurate on
                                  # peak lists in any order as in intensity order (within 0.06 point; costs
                                  # 0.5-1 point in intensity order: docs/indexing.md §4 "Spot order");
                                  # "brightest" = the first n_centres in intensity order (before issue #12);
                                  # "mixed" = the labelled among the n_centres/2 brightest, then random ones
    min_class_count: int = 20     # classes with ≤ this many training samples are dropped
    fresh_data: bool = True       # new training patterns every epoch (seeds (seed, 1, epoch)): no sample
                                  # is seen twice, so more epochs do not over-fit
    precision: str = "auto"       # "auto": bfloat16 autocast where the device has native bf16 (AVX512-BF16,
                                  # AMX, CUDA ≥ sm80), else float32; "bfloat16"; "float32"
    hidden: tuple | None = (1200,)  # hidden widths; None = LaueNN's formula (three layers, 15·n_classes wide)
    dropout: float = 0.0          # LaueNN: 0.3; with new patterns every epoch nothing is seen twice
    epochs: int = 6
    patience: int = 2
    batch_size: int = 512         # 256 before: 512 trains GaN + Si 15 % faster at the same accuracy (issue #12)
    learning_rate: float = 3e-3
    lr_schedule: str = "cosine"    # "constant" or "cosine" (per batch, from learning_rate to 0 over `epochs`)
    weight_decay: float = 1e-5
    class_weighting: str = "sqrt"  # "sqrt" (sqrt(max/count)), "lauenn" (floor(max/count)), "none"
    max_train_seconds: float | None = None  # optional wall-clock cap on the fit (breaks determinism)
    extinction_rule: str = "space_group"
    seed: int = 0

    def for_materials(self, n: int) -> "IndexerConfig":
        def expand(v):
            v = tuple(int(x) for x in np.atleast_1d(v))
            return v * n if len(v) == 1 else v

        cfg = replace(self, max_index=expand(self.max_index), max_grains=expand(self.max_grains),
                      energy_band_kev=tuple(float(e) for e in self.energy_band_kev),
                      hidden=None if self.hidden is None else tuple(int(h) for h in self.hidden))
        if len(cfg.max_index) != n or len(cfg.max_grains) != n:
            raise ValueError(f"max_index/max_grains need 1 or {n} values")
        return cfg

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> "IndexerConfig":
        known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def resolve_materials(materials, extinction_rule: str = "space_group") -> list[Material]:
    """Names or :class:`Material` objects → materials; clear error for unknown names."""
    try:
        out = get_materials(materials, extinction_rule)
    except ValueError as err:
        raise ValueError(f"{err} (needed by the indexer)") from err
    if not out:
        raise ValueError("the indexer needs at least one material")
    return out


#: finite-difference steps of :func:`calibration_sensitivity` (parameter units)
_SENSITIVITY_STEPS = {"distance_mm": 1e-3, "xcen_px": 1e-3, "ycen_px": 1e-3, "xbet_deg": 1e-4,
                      "xgam_deg": 1e-4, "pixel_size_mm": 1e-7}


def calibration_sensitivity(calibration: Calibration) -> dict[str, float]:
    """Largest spot displacement (px per parameter unit) over the detector for each calibration
    parameter: a fixed scattered ray (2θ, χ) through each corner, edge midpoint and the centre of the
    frame is projected with the parameter changed by ±h (central difference), the other parameters
    kept; the largest |Δ(col, row)| / 2h of the nine points (the corners, in practice)."""
    n_rows, n_cols = calibration.frame_shape
    col, row = np.meshgrid([-0.5, (n_cols - 1) / 2, n_cols - 0.5], [-0.5, (n_rows - 1) / 2, n_rows - 0.5])
    two_theta, chi = pixel_to_angles(col.ravel(), row.ravel(), calibration)
    out = {}
    for name, h in _SENSITIVITY_STEPS.items():
        value = getattr(calibration, name)
        c1, r1 = angles_to_pixel(two_theta, chi, calibration.replace(**{name: value + h}))
        c0, r0 = angles_to_pixel(two_theta, chi, calibration.replace(**{name: value - h}))
        out[name] = float(np.nanmax(np.hypot(c1 - c0, r1 - r0)) / (2 * h))
    return out


def calibration_decimals(calibration: Calibration, tolerance_px: float = CALIBRATION_TOLERANCE_PX) -> dict[str, int]:
    """Decimal places kept per calibration parameter in the cache key: the coarsest power-of-ten
    step ``10**-n`` whose change of the parameter moves every spot by less than ``tolerance_px``
    (``n = floor(log10(sensitivity / tolerance_px)) + 1``, at least 0)."""
    return {name: max(0, math.floor(math.log10(s / tolerance_px)) + 1) if s > 0 else 0
            for name, s in calibration_sensitivity(calibration).items()}


def calibration_key(calibration: Calibration) -> dict:
    """The calibration as it enters the model hash: each geometric parameter (distance, centre, the
    two tilts, pixel size) rounded to :func:`calibration_decimals` — steps that move spots by less
    than :data:`CALIBRATION_TOLERANCE_PX` anywhere on the detector (default sCMOS calibration:
    distance 0.001 mm, centre 0.01 px, xbet/xgam 0.001°, pixel size 1e-6 mm) — and the frame shape.
    A calibration refined in the 6th decimal keeps its model; one that moves spots by ≥ 0.05 px
    gets a new one (unless it happens to round to the same key, at most one step away). The
    detector name does not enter: it changes no spot."""
    key = {name: round(float(getattr(calibration, name)), n) for name, n in calibration_decimals(calibration).items()}
    key["frame_shape"] = [int(n) for n in calibration.frame_shape]
    return key


def model_hash(materials: list[Material], calibration: Calibration, config: IndexerConfig) -> str:
    """Hex digest identifying a model: materials (lattice, space group, rule), calibration (rounded:
    :func:`calibration_key`), config, the file format and :data:`TRAINING_CODE_VERSION`."""
    key = {
        "format": MODEL_FORMAT,
        "training_code": TRAINING_CODE_VERSION,
        "materials": [{"name": m.name, "lattice": [round(x, 6) for x in m.lattice_parameters],
                       "space_group": m.spacegroup.xhm(), "rule": m.extinction_rule,
                       "code": m.lauetools_extinction} for m in materials],
        "calibration": calibration_key(calibration),
        "config": config.to_dict(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


@dataclass
class Indexer:
    """A trained LaueNN model with everything needed to use it."""

    materials: list
    calibration: Calibration
    config: IndexerConfig
    classes: ClassTable
    model: object  # LaueNN (torch module)
    validation_accuracy: float = float("nan")
    train_seconds: float = float("nan")
    history: list = field(default_factory=list)
    path: Path | None = None
    #: label-shift corrections of the network's log-probabilities (:func:`class_log_priors`):
    #: ``(PRIOR_RANK_BUCKETS, n_classes)`` for a centre by its relative intensity rank in an
    #: intensity-ordered list, ``(n_classes,)`` for a list in arbitrary order; None (models stored
    #: before them): no correction
    log_prior_rank: np.ndarray | None = None
    log_prior_any: np.ndarray | None = None

    @property
    def material_names(self) -> list[str]:
        return [m.name for m in self.materials]

    def features(self, two_theta, chi, n_centres=None):
        """Histograms (n_images, n_centres, n_bins) float32 numpy (numpy/cupy in)."""
        c = self.config
        return to_numpy(angular_histograms(two_theta, chi, max_angle_deg=c.max_angle_deg, step_deg=c.step_deg,
                                           n_centres=n_centres or c.n_centres, smooth_bins=c.smooth_bins))

    def predict(self, two_theta, chi, n_centres=None, device=None, *, intensity_order: bool = False,
                first_rank: int = 0):
        """Predicted class and confidence for the first ``n_centres`` spots of each image.

        ``intensity_order``: the spots are sorted brightest first, so the centre in column j has
        intensity rank ``first_rank + j`` among the image's spots, and the class probabilities are
        corrected to the class frequencies at that relative rank (bright spots are mostly
        low-index reflections); otherwise (a list in arbitrary order) to the frequencies over all
        spots (:func:`class_log_priors`).

        Returns ``(class (n, c) int64, −1 where no spot; confidence (n, c) float32)``.
        """
        import torch  # deferred: torch is heavy

        tth = np.asarray(two_theta, dtype=float)
        single = tth.ndim == 1
        if single:
            tth, chi = tth[None], np.asarray(chi, dtype=float)[None]
        feats = self.features(tth, chi, n_centres)
        n, c, nb = feats.shape
        valid = np.isfinite(tth[:, :c])
        x = torch.from_numpy(feats[valid])
        rows, cols = np.nonzero(valid)
        shift = self.log_prior_shift(cols + int(first_rank), np.isfinite(tth).sum(axis=1)[rows], intensity_order)
        if device is not None:
            self.model.to(device)
            x = x.to(device)
        with torch.inference_mode():
            self.model.eval()
            logits = self.model(x) if len(x) else torch.zeros((0, self.classes.n_classes))
            if shift is not None:
                logits = logits + torch.as_tensor(shift, dtype=logits.dtype, device=logits.device)
            prob = torch.softmax(logits, dim=-1)
        conf, cls = prob.max(dim=-1)
        out_cls = np.full((n, c), -1, dtype=np.int64)
        out_conf = np.zeros((n, c), dtype=np.float32)
        out_cls[valid] = cls.cpu().numpy()
        out_conf[valid] = conf.cpu().numpy()
        return (out_cls[0], out_conf[0]) if single else (out_cls, out_conf)

    def log_prior_shift(self, rank, n_spots, intensity_order: bool):
        """Corrections float32 added to the logits of centres at intensity ``rank`` in lists of
        ``n_spots`` spots: ``(len(rank), n_classes)`` with ``intensity_order``, else ``(n_classes,)``
        (the same for every centre); None when the model has none."""
        if intensity_order and self.log_prior_rank is not None:
            return np.asarray(self.log_prior_rank, dtype=np.float32)[relative_rank_bucket(rank, n_spots)]
        if not intensity_order and self.log_prior_any is not None:
            return np.asarray(self.log_prior_any, dtype=np.float32)
        return None



# --------------------------------------------------------------------------- data → samples
#: patterns per histogram call in :func:`make_samples` (patterns sorted by spot count first)
_FEATURE_GROUP = 128


#: how :func:`make_samples` picks the centre spots of each pattern (``IndexerConfig.training_centres``)
CENTRE_MODES = ("brightest", "shuffled", "random", "mixed")


def centre_order(patterns, labels, mode: str, rng=None, n_bright: int = 0) -> np.ndarray:
    """Column order (n_patterns, max_spots) int64 that puts each pattern's centre spots first.

    ``labels`` (n_patterns, max_spots): class of every spot (−1: none). ``mode``:

    * ``"brightest"``: the stored (intensity) order — centres are the brightest spots, as in an
      intensity-ordered peak list;
    * ``"shuffled"``: a uniformly random permutation of the pattern's spots — the centres a
      peak list in arbitrary order puts first (spurious and unlabelled spots included);
    * ``"random"``: the labelled spots in a uniformly random order, then the others — every
      centre is a training sample, drawn without regard to intensity;
    * ``"mixed"``: the labelled spots among the ``n_bright`` brightest first, then the other
      labelled spots in a random order, then the rest.

    Padding (2θ = NaN) stays last; the histograms do not depend on the order of the other spots.
    """
    if mode not in CENTRE_MODES:
        raise ValueError(f"centres must be one of {CENTRE_MODES}, got {mode!r}")
    n_pat, m = patterns.two_theta.shape
    if mode == "brightest":
        return np.broadcast_to(np.arange(m), (n_pat, m))
    key = np.random.default_rng(rng).random((n_pat, m))
    if mode in ("random", "mixed"):
        key = key + (labels < 0)
    if mode == "mixed":
        key[:, :n_bright] -= labels[:, :n_bright] >= 0
    key = key + 2.0 * ~np.isfinite(patterns.two_theta)
    return np.argsort(key, axis=1, kind="stable")


def make_samples(patterns, classes: ClassTable, config: IndexerConfig, return_pattern: bool = False,
                 centres: str = "brightest", rng=None):
    """(features (N, n_bins) float32, labels (N,) int64[, pattern index (N,), centre column (N,)])
    of the labelled centre spots, pattern by pattern in input order (the column is the centre's
    rank in the order of ``centres``: its intensity rank for ``"brightest"``).

    The centres are the first ``config.n_centres`` spots of each pattern in the order
    :func:`centre_order` gives for ``centres`` (``rng``: seed or Generator of the random orders).
    The histograms are those of :func:`~laueflow.kernels.histograms.angular_histograms` (the
    prediction features; distances to all spots of the pattern), computed for groups of patterns
    with similar spot counts, each group cut to its own largest count: the padding of the whole
    set (2θ = NaN up to the fullest pattern, about twice the mean count for 1–4 grains) costs
    nothing, and only the labelled centres' rows are kept (written straight into the output).
    """
    c = min(int(config.n_centres), patterns.two_theta.shape[1])
    two_theta, chi = patterns.two_theta, patterns.chi
    if centres == "brightest":
        lab = classes.label(np.maximum(patterns.spot_material[:, :c], 0), patterns.hkl[:, :c])
        lab[patterns.spot_material[:, :c] < 0] = -1
    else:
        lab = classes.label(np.maximum(patterns.spot_material, 0), patterns.hkl)
        lab[patterns.spot_material < 0] = -1
        order = centre_order(patterns, lab, centres, rng, n_bright=c // 2)
        two_theta, chi = (np.take_along_axis(a, order, axis=1) for a in (two_theta, chi))
        lab = np.take_along_axis(lab, order[:, :c], axis=1)
    keep = lab >= 0
    n_bins = n_bins_for(config.max_angle_deg, config.step_deg)
    n_spots = np.isfinite(two_theta).sum(axis=1)
    row = np.cumsum(keep.ravel()).reshape(keep.shape) - 1  # output row of each kept (pattern, centre)
    feats = np.empty((int(keep.sum()), n_bins), dtype=np.float32)
    order = np.argsort(n_spots, kind="stable")
    for start in range(0, len(order), _FEATURE_GROUP):
        idx = order[start:start + _FEATURE_GROUP]
        m = max(int(n_spots[idx].max()), 1)
        h = angular_histograms(two_theta[idx, :m], chi[idx, :m], max_angle_deg=config.max_angle_deg,
                               step_deg=config.step_deg, n_centres=c, smooth_bins=config.smooth_bins)
        k = keep[idx, :h.shape[1]]
        feats[row[idx, :h.shape[1]][k]] = h[k]
    if return_pattern:
        pattern, column = np.nonzero(keep)
        return feats, lab[keep], pattern, column
    return feats, lab[keep]


#: buckets of the relative intensity rank (rank / number of spots in the list) of the rank prior
PRIOR_RANK_BUCKETS = 40


def relative_rank_bucket(rank, n_spots):
    """Bucket (int array) of the relative intensity rank ``rank / n_spots`` (0 = brightest)."""
    rel = np.asarray(rank, float) / np.maximum(np.asarray(n_spots, float), 1.0)
    return np.clip((rel * PRIOR_RANK_BUCKETS).astype(np.int64), 0, PRIOR_RANK_BUCKETS - 1)


def class_log_priors(labels, n_spots, train_labels, loss_weights, n_classes: int):
    """Label-shift corrections of a classifier trained on ``train_labels`` with the loss weights
    ``loss_weights`` (it learned the class prior ∝ frequency × weight): ``log p_target − log
    p_learned`` for two targets, from training-like patterns: ``labels`` ``(n_patterns,
    max_spots)``, the class of every spot in intensity order (−1: none), ``n_spots``
    ``(n_patterns,)`` the spots of each pattern (unlabelled ones included):

    * ``rank`` ``(PRIOR_RANK_BUCKETS, n_classes)``: the class frequencies of the spots in each
      bucket of the relative intensity rank (:func:`relative_rank_bucket`) — the centres of an
      intensity-ordered peak list (bright spots are mostly low-index reflections, the more so
      the more spots the list has);
    * ``any`` ``(n_classes,)``: the frequencies over all spots — a list in arbitrary order.

    Frequencies use add-one (Laplace) counts. Returns ``(rank, any)`` float32.
    """
    def log_freq(lab):
        counts = np.bincount(lab[lab >= 0], minlength=n_classes)[:n_classes] + 1.0
        return np.log(counts / counts.sum())

    labels = np.asarray(labels)
    learned = log_freq(np.asarray(train_labels)) + np.log(np.asarray(loss_weights, float))
    learned -= np.log(np.exp(learned).sum())
    bucket = relative_rank_bucket(np.arange(labels.shape[1])[None], np.asarray(n_spots)[:, None])
    rank = np.stack([log_freq(labels[bucket == b]) for b in range(PRIOR_RANK_BUCKETS)])
    return (rank - learned).astype(np.float32), (log_freq(labels.ravel()) - learned).astype(np.float32)


def _class_weights(counts: np.ndarray, scheme: str) -> np.ndarray:
    counts = np.maximum(counts.astype(float), 1.0)
    if scheme == "lauenn":
        return np.floor(counts.max() / counts)
    if scheme == "sqrt":
        return np.sqrt(counts.max() / counts)
    if scheme == "none":
        return np.ones_like(counts)
    raise ValueError(f"class_weighting must be 'lauenn', 'sqrt' or 'none', got {scheme!r}")


def train_indexer(materials, calibration: Calibration, config: IndexerConfig | None = None, *,
                  device=None, threads: int | None = None, verbose: bool = True, log=print) -> Indexer:
    """Simulate training/validation data, train a LaueNN classifier, return the :class:`Indexer`.

    ``threads``: torch CPU threads during training (restored afterwards). Default: torch's setting
    minus one when ``config.fresh_data`` (that core simulates the next epoch's patterns), else
    torch's setting. On a shared machine use 1: with more OpenMP threads than free cores, torch's
    spinning threads made each batch ~15× slower in our measurements.
    """
    import torch  # deferred: torch is heavy

    old_threads = torch.get_num_threads()
    if not threads and (config or IndexerConfig()).fresh_data and old_threads > 1:
        threads = old_threads - 1  # one core simulates the next epoch's patterns meanwhile
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _train(materials, calibration, config, device, verbose, log)
    finally:
        torch.set_num_threads(old_threads)


def _autocast_dtype(precision: str, device):
    """bfloat16 for mixed-precision training, or None for float32 (see ``IndexerConfig.precision``)."""
    import torch  # deferred: torch is heavy

    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device) else None
    raise ValueError(f"precision must be 'auto', 'bfloat16' or 'float32', got {precision!r}")


class _TrainingData:
    """Training samples per epoch: the epoch-0 patterns fix the class list; with ``fresh_data``
    every later epoch simulates new patterns (seed ``(seed, 1, epoch)``)."""

    def __init__(self, mats, calibration, classes, config, counts, pool=None):
        self.mats, self.calibration, self.config, self.counts = mats, calibration, config, counts
        self._pool, self._own_pool, self._pending = pool, pool is None, None
        (x, y), pats = self._simulate(0, classes, with_patterns=True)
        freq = np.bincount(y, minlength=classes.n_classes)
        keep = freq > config.min_class_count
        self.remap = np.full(classes.n_classes, -1)
        self.remap[keep] = np.arange(keep.sum())
        self.all_classes, self.classes = classes, classes.subset(keep)
        self.first = self._relabel(x, y)
        self.n_patterns = len(counts)
        # the class of every spot of the epoch-0 patterns, intensity order (kept classes; −1: none)
        lab = classes.label(np.maximum(pats.spot_material, 0), pats.hkl)
        self.spot_labels = np.where((pats.spot_material >= 0) & (lab >= 0), self.remap[np.maximum(lab, 0)], -1)
        self.n_spots = np.isfinite(pats.two_theta).sum(axis=1)

    def _simulate(self, epoch, classes, with_patterns=False):
        c = self.config
        seed = (c.seed, 1) if epoch == 0 else (c.seed, 1, epoch)
        pats = simulate_patterns(self.mats, self.calibration, self.counts, seed=seed,
                                 energy_band_kev=c.energy_band_kev, mode="lauenn")
        samples = make_samples(pats, classes, c, centres=c.training_centres, rng=(*seed, 3))
        return (samples, pats) if with_patterns else samples

    def _relabel(self, x, y):
        y = self.remap[y]
        return x[y >= 0], y[y >= 0]

    def epoch(self, epoch):
        """Samples of ``epoch``; the next epoch's patterns are simulated in a background thread
        meanwhile (numpy releases the GIL in its heavy loops, torch in its kernels)."""
        if epoch == 0 or not self.config.fresh_data:
            out = self.first
        else:
            out = self._pending.result() if self._pending is not None else self._make(epoch)
        self._pending = None
        if self.config.fresh_data and epoch + 1 < self.config.epochs:
            self._pool = self._pool or ThreadPoolExecutor(1, thread_name_prefix="lauenn-data")
            self._pending = self._pool.submit(self._make, epoch + 1)
        return out

    def _make(self, epoch):
        return self._relabel(*self._simulate(epoch, self.all_classes))

    def close(self):
        if self._pool is not None and self._own_pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None


def _train(materials, calibration, config, device, verbose, log) -> Indexer:
    import torch  # deferred: torch is heavy

    from ...models.lauenn import LaueNN  # deferred: imports torch

    config = config or IndexerConfig()
    mats = resolve_materials(materials, config.extinction_rule)
    config = config.for_materials(len(mats))
    _check_config(config)
    say = log if verbose else (lambda *a, **k: None)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    amp = _autocast_dtype(config.precision, device)
    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    classes = build_class_table(mats, list(config.max_index), config.max_angle_deg, config.step_deg)
    n_combos = len(grain_count_table(config.max_grains, 1))
    n_tr = max(1, min(config.n_train, config.max_train_patterns // n_combos))
    n_va = max(1, min(config.n_validation, config.max_validation_patterns // n_combos))
    # the validation set is simulated on the data thread while this one makes the first epoch's
    pool = ThreadPoolExecutor(1, thread_name_prefix="lauenn-data")
    try:
        val_future = pool.submit(_validation_samples, mats, calibration, classes, config, n_va)
        data = _TrainingData(mats, calibration, classes, config, grain_count_table(config.max_grains, n_tr), pool)
        (x_va, y_va, g_va, r_va, n_va_spots), (x_vs, y_vs, g_vs, _, _) = val_future.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    # the classes kept (seen > min_class_count times in the first epoch)
    x_va, y_va, g_va, r_va, n_va_spots = _kept(x_va, data.remap[y_va], g_va, r_va, n_va_spots)
    x_vs, y_vs, g_vs = _kept(x_vs, data.remap[y_vs], g_vs)
    classes = data.classes
    x_tr, y_tr = data.first
    t_data = time.perf_counter() - t0
    say(f"indexer {'+'.join(m.name for m in mats)}: {data.n_patterns} training patterns per epoch"
        f"{' (new every epoch)' if config.fresh_data else ''} ({config.training_centres} centres) / "
        f"{n_va * n_combos} validation patterns, {len(y_tr)} / {len(y_va)} + {len(y_vs)} spots (intensity order + "
        f"shuffled), {classes.n_classes} classes, {x_tr.shape[1]} bins, "
        f"{'bfloat16 mixed precision' if amp else 'float32'} on {device} (data {t_data:.1f} s)")

    n_bins = n_bins_for(config.max_angle_deg, config.step_deg)
    model = LaueNN(n_bins, classes.n_classes, config.hidden, config.dropout).to(device)
    weights = torch.as_tensor(_class_weights(np.bincount(y_tr, minlength=classes.n_classes), config.class_weighting),
                              dtype=torch.float32, device=device)
    log_prior_rank, log_prior_any = class_log_priors(data.spot_labels, data.n_spots, y_tr, weights.cpu().numpy(),
                                                     classes.n_classes)
    validation = _Validation(
        x=torch.from_numpy(x_va).to(device), y=torch.from_numpy(y_va).to(device),
        shift=torch.from_numpy(log_prior_rank[relative_rank_bucket(r_va, n_va_spots)]).to(device),
        x_shuffled=torch.from_numpy(x_vs).to(device), y_shuffled=torch.from_numpy(y_vs).to(device),
        shift_shuffled=torch.from_numpy(log_prior_any).to(device))
    try:
        fit = _fit(model, data, validation, torch.nn.CrossEntropyLoss(weight=weights), config, device, amp,
                   len(y_tr), say)
    finally:
        data.close()  # stop a prefetch still running after early stopping
        pool.shutdown(wait=True, cancel_futures=True)
    model.load_state_dict(fit["state"])
    seconds = time.perf_counter() - t0
    per_count = _per_grain_count(_logits(model, validation.x), y_va, g_va, validation.shift)
    per_count_shuffled = _per_grain_count(_logits(model, validation.x_shuffled), y_vs, g_vs,
                                          validation.shift_shuffled)
    say("  validation accuracy per grain count: " + ", ".join(f"{g}: {100 * a:.2f} %" for g, a in per_count.items())
        + " (intensity order); " + ", ".join(f"{g}: {100 * a:.2f} %" for g, a in per_count_shuffled.items())
        + " (shuffled)")
    history = fit["history"] + [{
        "validation_accuracy_per_grain_count": per_count, "n_train_spots": int(fit["n_train_spots"]),
        "validation_accuracy_shuffled": fit["shuffled"],
        "validation_accuracy_shuffled_per_grain_count": per_count_shuffled,
        "n_validation_spots": int(len(y_va)), "n_validation_spots_shuffled": int(len(y_vs)),
        "data_seconds": t_data, "precision": "bfloat16" if amp else "float32", "device": str(device),
        "threads": torch.get_num_threads()}]
    model.to("cpu").eval()
    say(f"  best validation accuracy {100 * fit['accuracy']:.3f} % (intensity order), {100 * fit['shuffled']:.3f} % "
        f"(shuffled); total training time {seconds:.1f} s")
    return Indexer(mats, calibration, config, classes, model, fit["accuracy"], seconds, history,
                   log_prior_rank=log_prior_rank, log_prior_any=log_prior_any)


def _check_config(config) -> None:
    if config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {config.lr_schedule!r}")
    if config.training_centres not in ("brightest", "random", "mixed"):
        raise ValueError(f"training_centres must be 'brightest', 'random' or 'mixed', got {config.training_centres!r}")


@dataclass
class _Validation:
    """Validation spots on the training device: intensity order (``x, y``, class log-prior
    ``shift`` of their rank) and shuffled (``*_shuffled``)."""

    x: object
    y: object
    shift: object
    x_shuffled: object
    y_shuffled: object
    shift_shuffled: object


def _fit(model, data, validation: _Validation, loss_fn, config, device, amp, n_first: int, say) -> dict:
    """The epochs (Adam, optional cosine schedule, early stopping on the intensity-order
    validation accuracy, a fit-time budget). ``{"state", "accuracy", "shuffled", "history",
    "n_train_spots"}``: the best epoch's weights and accuracies, one history entry per epoch."""
    import torch  # deferred: torch is heavy

    opt = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    best_score, best_acc, best_shuffled, best_state, bad, history = -1.0, -1.0, -1.0, None, 0, []
    t_fit = time.perf_counter()
    n_steps, step = config.epochs * -(-n_first // config.batch_size), 0
    n_train = n_first
    for epoch in range(config.epochs):
        x_tr, y_tr = data.epoch(epoch)
        n_train = len(y_tr)
        xt = torch.from_numpy(x_tr).to(device)
        yt = torch.from_numpy(y_tr).to(device)
        model.train()
        perm = torch.randperm(len(yt), generator=gen).to(device)
        total = 0.0
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start:start + config.batch_size]
            if config.lr_schedule == "cosine":
                for grp in opt.param_groups:
                    grp["lr"] = config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(step, n_steps) / n_steps))
            step += 1
            opt.zero_grad(set_to_none=True)
            with torch.autocast(torch.device(device).type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        lv, ls = _logits(model, validation.x), _logits(model, validation.x_shuffled)
        acc = _accuracy(lv, validation.y, validation.shift)
        acc_shuffled = _accuracy(ls, validation.y_shuffled, validation.shift_shuffled)
        score = acc  # early stopping and the best epoch: intensity-order accuracy, as before #12
        history.append({"epoch": epoch + 1, "loss": total / max(len(perm), 1), "val_accuracy": acc,
                        "val_accuracy_shuffled": acc_shuffled, "val_accuracy_uncorrected": _accuracy(lv, validation.y),
                        "val_accuracy_shuffled_uncorrected": _accuracy(ls, validation.y_shuffled),
                        "seconds": time.perf_counter() - t_fit})
        say(f"  epoch {epoch + 1}: loss {total / max(len(perm), 1):.4f}  validation accuracy {100 * acc:.3f} % "
            f"(intensity order), {100 * acc_shuffled:.3f} % (shuffled)  ({time.perf_counter() - t_fit:.1f} s)")
        if score > best_score:
            best_score, best_acc, best_shuffled, bad = score, acc, acc_shuffled, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= config.patience:
                break
        if config.max_train_seconds is not None and time.perf_counter() - t_fit > config.max_train_seconds:
            say(f"  stopping: fit time budget {config.max_train_seconds:.0f} s reached")
            break
    return {"state": best_state, "accuracy": best_acc, "shuffled": best_shuffled, "history": history,
            "n_train_spots": n_train}


def _validation_samples(mats, calibration, classes, config, n_per_combination):
    """Validation samples of the same patterns (seed ``(seed, 2)``, disjoint from the training
    draws) in intensity order (centres: the brightest) and shuffled (centres: the first spots of a
    random permutation, as a peak list in arbitrary order gives them): two tuples (features,
    labels in ``classes``, grains in the spot's pattern, intensity rank of the centre, spots in its
    pattern)."""
    val = simulate_patterns(mats, calibration, grain_count_table(config.max_grains, n_per_combination),
                            seed=(config.seed, 2), energy_band_kev=config.energy_band_kev, mode="lauenn")
    grains = (val.grain_material >= 0).sum(axis=1)
    n_spots = np.isfinite(val.two_theta).sum(axis=1)
    out = []
    for centres in ("brightest", "shuffled"):
        x, y, p, r = make_samples(val, classes, config, return_pattern=True, centres=centres, rng=(config.seed, 2, 3))
        out.append((x, y, grains[p], r, n_spots[p]))
    return tuple(out)


def _kept(x, y, *rest):
    """Samples whose (remapped) class is kept (≥ 0)."""
    keep = y >= 0
    return (x[keep], y[keep], *(a[keep] for a in rest))


def _logits(model, x, batch: int = 65536):
    """Logits (N, C) of the network in eval mode."""
    import torch  # deferred: torch is heavy

    model.eval()
    with torch.inference_mode():
        out = [model(x[s:s + batch]) for s in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.zeros((0, 0))


def _per_grain_count(logits, y, grains, shift=None) -> dict:
    """Accuracy per number of grains in the pattern: {grains: fraction}."""
    pred = (logits if shift is None else logits + shift).argmax(-1).cpu().numpy()
    return {int(g): float((pred[grains == g] == y[grains == g]).mean()) for g in np.unique(grains)}


def _accuracy(logits, y, shift=None) -> float:
    """Fraction of ``argmax(logits + shift) == y`` (``shift``: (N, C), (C,) or None)."""
    pred = (logits if shift is None else logits + shift).argmax(-1)
    return int((pred == y).sum()) / max(len(y), 1)
