"""Frames with real spots and hot pixels, shared by the hot-pixel tests (a helper module, no tests)."""
import numpy as np

SHAPE = (64, 80)
HOT = [(5, 7), (20, 40), (33, 3), (50, 70), (60, 20)]


def frames(n=12, seed=0):
    """Noisy frames (σ 4 around 1000) with real spots (σ 0.7–1.6 px, 40–30000 counts) at random
    places, five hot pixels in 10 of 12 frames and one in 2 frames only."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    out, spots = [], []
    for k in range(n):
        img = rng.normal(1000, 4, SHAPE)
        for _ in range(15):
            r, c = rng.uniform(3, SHAPE[0] - 4), rng.uniform(3, SHAPE[1] - 4)
            s, a = rng.uniform(0.7, 1.6), 10 ** rng.uniform(1.6, 4.5)
            img += a * np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / (2 * s * s))
            spots.append((k, int(round(r)), int(round(c))))
        if k < 10:
            for r, c in HOT:
                img[r, c] += rng.uniform(300, 5000)
        if k in (3, 7):
            img[40, 60] += 3000
        out.append(np.clip(img, 0, 65535).astype(np.uint16))
    return np.stack(out), spots
