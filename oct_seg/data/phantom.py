"""Synthetic OCT B-scan phantoms with exact fluid masks (numpy only). SYNTHETIC, not patient data.

A phantom is a layered retina (vitreous, NFL, GCL, IPL, INL, OPL, ONL, inner segments,
IS/OS line, outer segments, RPE, choroid) with a curved foveal pit, dark elliptical cystoid
pockets inside the inner retina (GCL..ONL; intraretinal fluid, IRF), optionally a
dome-shaped subretinal fluid pocket between the photoreceptors and the RPE (SRF) and a
dome-shaped pigment epithelial detachment under the RPE band (PED). Binary masks mark all of
them 1; with ``fluid_types=True`` they hold the RETOUCH class ids (``FLUID_TYPES``: 1 IRF,
2 SRF, 3 PED), so the three types differ by their place in the retina, as in real scans. Multiplicative speckle (gamma distributed, mean 1, ``looks`` = shape,
laterally correlated over 3 px) and a small additive noise floor are applied last. Without
speckle every tissue has the constant level in ``LEVELS`` and fluid is exactly ``FLUID_LEVEL``,
which no other tissue or blend of neighbouring tissues reaches: tests use that to re-derive
the fluid mask from a (transformed) clean phantom.

:func:`make_phantom_volume` builds a raster volume of such B-scans around one 3-D retina: a
radially symmetric foveal pit at a chosen fovea, ellipsoidal cysts and a subretinal dome near
it, the whole retina tilted and curved (also SYNTHETIC; for tests and examples of en-face maps,
fovea detection and ETDRS reports).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from oct_seg.data.retouch import RETOUCH_CLASSES as FLUID_TYPES  # class ids 1 IRF, 2 SRF, 3 PED

FLUID_LEVEL = 0.03
LEVELS = {"vitreous": 0.08, "nfl": 0.80, "gcl": 0.45, "ipl": 0.60, "inl": 0.30, "opl": 0.55,
          "onl": 0.22, "is": 0.35, "isos": 0.85, "os": 0.40, "rpe": 0.90, "choroid": 0.50,
          "sclera": 0.15}
FLUID_DOME = (0.15, 0.3)   # SRF / PED peak height in multi-class phantom sets (x thickness)
_INNER = (("nfl", 0.15), ("gcl", 0.25), ("ipl", 0.20), ("inl", 0.20), ("opl", 0.20))


def _rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def make_phantom(rng_or_seed, height: int = 496, width: int = 768, *, n_cysts: int | None = None,
                 subretinal: bool | None = None, ped: bool = False, fluid_types: bool = False,
                 dome_peak=(0.06, 0.12), speckle: bool = True, looks: float = 3.0):
    """One synthetic B-scan: (image float32 (H, W) in [0, 1], mask uint8 (H, W)).

    n_cysts: number of cystoid pockets (None: random 0..6, 0 with probability 0.25);
    subretinal: add a subretinal pocket (None: with probability 0.2); ped: add a pigment
    epithelial detachment (default False, so the binary phantoms of a seed stay what they
    were); fluid_types: mask holds class ids (1 IRF, 2 SRF, 3 PED) instead of {0, 1};
    dome_peak: range of the SRF and PED domes' peak heights, as fractions of the retina
    thickness (the default keeps the binary phantoms' shallow subretinal pocket); speckle: apply speckle and noise floor (False gives the clean piecewise-constant phantom).
    """
    if height < 32 or width < 32:
        raise ValueError(f"phantom needs height and width >= 32, got {height} x {width}")
    rng = _rng(rng_or_seed)
    H, W = height, width
    x = np.arange(W, dtype=np.float64)
    y = np.arange(H, dtype=np.float64)[:, None]
    xc = W * (0.5 + rng.uniform(-0.08, 0.08))
    u = (x - xc) / (W / 2)
    thick = H * rng.uniform(0.22, 0.28)
    base = H * rng.uniform(0.28, 0.34) + H * rng.uniform(-0.04, 0.04) * u + H * rng.uniform(-0.05, 0.05) * u**2
    pit = np.exp(-(((x - xc) / (W * rng.uniform(0.05, 0.08))) ** 2))
    rpe_top = base + thick
    ilm = base + rng.uniform(0.3, 0.4) * thick * pit
    image, bounds = _layers(H, ilm, rpe_top, thick)
    onl_top = dict(bounds)["onl"]

    mask = np.zeros((H, W), dtype=bool)
    if n_cysts is None:
        n_cysts = 0 if rng.random() < 0.25 else int(rng.integers(1, 7))
    inner_top, inner_bottom = dict(bounds)["gcl"], onl_top + 0.3 * (rpe_top - 0.16 * thick - onl_top)
    for _ in range(n_cysts):
        x0 = xc + rng.uniform(-0.3, 0.3) * W
        i0 = int(np.clip(round(x0), 0, W - 1))
        room = inner_bottom[i0] - inner_top[i0]
        b = max(2.0, rng.uniform(0.2, 0.45) * room)
        y0 = rng.uniform(inner_top[i0] + b, max(inner_top[i0] + b, inner_bottom[i0] - b))
        a = max(2.5, rng.uniform(0.012, 0.04) * W)
        t = np.deg2rad(rng.uniform(-20, 20))
        dx, dy = x[None, :] - x0, y - y0
        mask |= ((dx * np.cos(t) + dy * np.sin(t)) / a) ** 2 + ((dy * np.cos(t) - dx * np.sin(t)) / b) ** 2 <= 1
    mask &= (y > ilm[None, :] + 2) & (y < (rpe_top - 0.08 * thick)[None, :] - 2)
    if subretinal is None:
        subretinal = rng.random() < 0.2
    labels = mask.astype(np.uint8)
    if subretinal:
        h = _dome(rng, x, xc, W, thick, dome_peak)
        labels[(y >= (rpe_top - h)[None, :]) & (y < rpe_top[None, :] - 0.5) & (h[None, :] >= 1)] = 2
    if ped:  # under the RPE band, above the choroid it pushes down
        h, bruch = _dome(rng, x, xc, W, thick, dome_peak), rpe_top + 0.07 * thick
        labels[(y >= bruch[None, :] - 0.5) & (y < (bruch + h)[None, :] - 0.5) & (h[None, :] >= 1)] = 3
    image[labels > 0] = FLUID_LEVEL
    if speckle:
        image = _speckle(image, rng, looks)
    return (np.clip(image, 0.0, 1.0).astype(np.float32),
            labels if fluid_types else (labels > 0).astype(np.uint8))


def _dome(rng, x, xc: float, width: int, thick: float, peak):
    """Height (px) per column (W,) of a parabolic dome near the centre xc: half-width
    5-12 % of the width, peak height U(*peak) x the retina thickness ``thick`` (px)."""
    xs, ws = xc + rng.uniform(-0.1, 0.1) * width, rng.uniform(0.05, 0.12) * width
    return rng.uniform(*peak) * thick * np.clip(1 - ((x - xs) / ws) ** 2, 0, None)


def _layers(height: int, ilm, rpe_top, thick: float):
    """Piecewise-constant retina of one B-scan from its ILM and RPE-top rows (W,) and the
    retina thickness (px) -> (image (H, W) float64, [(tissue, top row (W,)), ...] from top)."""
    onl_top = rpe_top - 0.45 * thick
    bounds, edge = [("vitreous", np.zeros_like(ilm))], ilm
    for name, frac in _INNER:
        bounds.append((name, edge))
        edge = edge + frac * (onl_top - ilm)
    bounds += [("onl", onl_top), ("is", rpe_top - 0.16 * thick), ("isos", rpe_top - 0.08 * thick),
               ("os", rpe_top - 0.05 * thick), ("rpe", rpe_top), ("choroid", rpe_top + 0.07 * thick),
               ("sclera", rpe_top + 0.32 * thick)]
    y = np.arange(height, dtype=np.float64)[:, None]
    image = np.zeros((height, len(ilm)))
    for name, top in bounds:
        image[y >= np.round(top)[None, :]] = LEVELS[name]
    return image, bounds


def _speckle(image, rng: np.random.Generator, looks: float):
    """Multiplicative gamma speckle (mean 1, laterally correlated over 3 px) + noise floor."""
    H, W = image.shape
    field = rng.gamma(looks, 1.0 / looks, size=(H, W + 2))
    field = (field[:, :-2] + field[:, 1:-1] + field[:, 2:]) / 3.0
    return image * field + np.abs(rng.normal(0.0, 0.02, size=(H, W)))


def make_phantom_volume(rng_or_seed, n_bscans: int = 25, height: int = 128, width: int = 128, *,
                        field_mm: float = 6.0, fovea=None, n_cysts: int = 5,
                        subretinal: bool = True, speckle: bool = True, looks: float = 3.0):
    """A synthetic raster volume: (bscans float32 (n, H, W) in [0, 1], labels uint8 (n, H, W)
    in {0, 1}, spacing (lateral, axial, bscan) in mm, fovea (bscan, column)).

    The B-scans cover a square field of `field_mm` (lateral = field_mm / width, B-scan
    spacing = field_mm / n_bscans) and a depth of 2 mm (axial = 2 / height, ~ a Spectralis
    B-scan). fovea: (bscan, column) of the pit's centre, default the middle of the scan.
    Cysts (ellipsoids, 0.15-0.4 mm across, in the inner retina) lie within 1.5 mm of it; the
    subretinal dome (0.5-0.9 mm radius) under it.
    """
    rng = _rng(rng_or_seed)
    n, H, W = n_bscans, height, width
    lateral, axial, bscan = field_mm / W, 2.0 / H, field_mm / n
    fb, fc = fovea if fovea is not None else (n // 2, W // 2)
    tilt, curve = rng.uniform(-0.04, 0.04, 2), rng.uniform(0.0, 0.05)
    pit_mm, pit_depth = rng.uniform(0.55, 0.7), rng.uniform(0.3, 0.4)
    thick = 0.25 * H

    def surfaces(x, y):  # mm from the fovea -> (ILM row, RPE-top row)
        u, v = x / (field_mm / 2), y / (field_mm / 2)
        base = H * (0.3 + tilt[0] * u + tilt[1] * v + curve * (u * u + v * v))
        return base + pit_depth * thick * np.exp(-(x * x + y * y) / pit_mm ** 2), base + thick

    cysts = []
    for _ in range(n_cysts):
        r, t = 1.5 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        cx, cy = r * np.cos(t), r * np.sin(t)
        ilm, rpe = surfaces(cx, cy)
        top, bottom = ilm + 0.25 * (rpe - ilm), rpe - 0.45 * thick
        cysts.append((cx, cy, rng.uniform(top, bottom), rng.uniform(0.075, 0.2),
                      rng.uniform(0.2, 0.45) * (bottom - top) + 2))
    dome = (rng.uniform(-0.2, 0.2, 2), rng.uniform(0.5, 0.9), rng.uniform(0.06, 0.12) * thick)
    x = (np.arange(W) - fc) * lateral
    z = np.arange(H, dtype=np.float64)[:, None]
    bscans, labels = [], []
    for k in range(n):
        y = (k - fb) * bscan
        ilm, rpe = surfaces(x, y)
        image, bounds = _layers(H, ilm, rpe, thick)
        mask = np.zeros((H, W), bool)
        for cx, cy, cz, a, c in cysts:
            mask |= ((x - cx) / a) ** 2 + ((y - cy) / a) ** 2 + ((z - cz) / c) ** 2 <= 1
        mask &= (z > ilm + 2) & (z < dict(bounds)["isos"] - 2)
        if subretinal:
            (dx, dy), radius, top = dome
            h = top * np.clip(1 - ((x - dx) ** 2 + (y - dy) ** 2) / radius ** 2, 0, None)
            mask |= (z >= rpe - h) & (z < rpe - 0.5) & (h >= 1)
        image[mask] = FLUID_LEVEL
        if speckle:
            image = _speckle(image, rng, looks)
        bscans.append(np.clip(image, 0.0, 1.0).astype(np.float32))
        labels.append(mask.astype(np.uint8))
    return np.stack(bscans), np.stack(labels), (lateral, axial, bscan), (int(fb), int(fc))


def write_phantom_dataset(out, n_subjects: int = 4, per_subject: int = 4, height: int = 496,
                          width: int = 768, seed: int = 0, overwrite: bool = False,
                          fluid_types: bool = False):
    """Write a synthetic dataset folder (images/, masks/, index.csv) and return its Path.

    Names are ``phantomSS_scanKK``; index.csv has name, subject ("phantomSS"), bscan_index,
    height, width, fluid_fraction, n_fluid_components (4-connected), source="synthetic".
    Scan (s, k) is generated from numpy seed (seed, s, k), so any subset is reproducible.
    Binary (default): masks 0/255. fluid_types=True: a multi-class set, masks hold the
    class ids of ``FLUID_TYPES`` (1 IRF, 2 SRF, 3 PED), each scan has SRF and PED with
    probability 0.6 each (so a few scans hold every class), their domes 15-30 % of the
    retina thickness high (``FLUID_DOME``: visible at the small sizes of tests and the
    demo, where the binary phantoms' 6-12 % make a pocket 1-2 pixels high), and index.csv adds
    IRF_fraction, SRF_fraction, PED_fraction and classes = "IRF;SRF;PED".
    """
    from pathlib import Path

    from PIL import Image
    from scipy import ndimage

    from oct_seg.data.readers import class_columns
    from oct_seg.io import atomic_dir

    if n_subjects < 1 or per_subject < 1:
        raise ValueError(f"n_subjects and per_subject must be >= 1, got {n_subjects}, {per_subject}")
    out, rows = Path(out), []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for s in range(1, n_subjects + 1):
            for k in range(per_subject):
                rng = np.random.default_rng([seed, s, k])
                kinds = dict(subretinal=bool(rng.random() < 0.6), ped=bool(rng.random() < 0.6),
                             fluid_types=True, dome_peak=FLUID_DOME) if fluid_types else {}
                image, mask = make_phantom(rng, height, width, **kinds)
                name = f"phantom{s:02d}_scan{k:02d}"
                Image.fromarray(np.round(image * 255).astype(np.uint8)).save(tmp / "images" / f"{name}.png")
                Image.fromarray(mask if fluid_types else mask * 255).save(tmp / "masks" / f"{name}.png")
                row = dict(name=name, subject=f"phantom{s:02d}", bscan_index=k, height=height,
                           width=width, fluid_fraction=round(float(np.mean(mask > 0)), 6),
                           n_fluid_components=int(ndimage.label(mask > 0)[1]), source="synthetic")
                rows.append({**row, **class_columns(mask, FLUID_TYPES)} if fluid_types else row)
        pd.DataFrame(rows).to_csv(tmp / "index.csv", index=False)
    return out
