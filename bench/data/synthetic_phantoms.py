"""Procedurally generated cardiac short-axis MRI phantoms: the benchmark's embedded default dataset.

The harness has to run anywhere, within minutes, with no download, no licence acceptance and no
files shipped.  This module therefore *generates* a small cine-MRI-like dataset on the fly: each case
is a short stack of short-axis slices with the ACDC label convention (0 background, 1 RV, 2 MYO,
3 LV).  Everything is a pure function of ``(config.seed, case_index, split)``, so every machine gets
bit-identical data, and results obtained on it are comparable across runs.

The phantoms are deliberately not trivial.  Heart size, shape, position and orientation vary per
case and smoothly along the stack (the heart shrinks towards the apex, where the RV may vanish); the
myocardial wall thickness varies around the circumference; papillary muscles darken the LV cavity;
unlabelled bright structures (an aorta-like vessel, other blobs) have blood-like intensity, and dark
lungs and a liver-like region surround the heart.  Each case is imaged by one of several "vendors"
(:data:`DOMAIN_STYLES`) that differ in tissue contrast (one has a weak blood/myocardium contrast),
blur, Rician noise, a smooth multiplicative bias field and a gamma curve, so that the dataset also
carries a domain shift that methods can be evaluated against.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from bench.data.case import Case

CLASS_NAMES = ("RV", "MYO", "LV")

TISSUES = ("air", "body", "fat", "lung", "liver", "spine", "vessel", "blob", "myo", "lv", "rv", "papillary")
_T = {name: i for i, name in enumerate(TISSUES)}

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DomainStyle:
    """How one simulated scanner ("vendor") renders the tissues.

    ``intensity`` maps every name in :data:`TISSUES` to its mean signal (before normalisation);
    ``noise`` is the Rician noise sigma, ``blur`` the in-plane Gaussian PSF sigma in pixels at
    ``size=96`` (scaled with the image size), ``bias`` the log-amplitude of the smooth multiplicative
    bias field, ``gamma`` the exponent applied after min-max normalisation and ``texture`` the
    relative amplitude of the low-frequency tissue texture.
    """

    intensity: dict[str, float]
    noise: float
    blur: float
    bias: float
    gamma: float
    texture: float


DOMAIN_STYLES: dict[str, DomainStyle] = {
    "vendor_a": DomainStyle(
        intensity=dict(air=0.0, body=0.34, fat=0.87, lung=0.05, liver=0.20, spine=0.12, vessel=0.88, blob=0.72,
                       myo=0.22, lv=0.90, rv=0.84, papillary=0.30),
        noise=0.025, blur=0.6, bias=0.20, gamma=1.0, texture=0.08,
    ),
    "vendor_b": DomainStyle(
        intensity=dict(air=0.0, body=0.46, fat=0.90, lung=0.10, liver=0.62, spine=0.24, vessel=0.74, blob=0.80,
                       myo=0.32, lv=0.72, rv=0.66, papillary=0.42),
        noise=0.050, blur=1.1, bias=0.40, gamma=1.3, texture=0.10,
    ),
    "vendor_c": DomainStyle(
        intensity=dict(air=0.0, body=0.50, fat=0.85, lung=0.12, liver=0.34, spine=0.30, vessel=0.64, blob=0.62,
                       myo=0.40, lv=0.64, rv=0.60, papillary=0.46),
        noise=0.055, blur=0.85, bias=0.50, gamma=0.8, texture=0.12,
    ),
}


@dataclass(frozen=True)
class PhantomConfig:
    """Size and seed of the generated dataset; ``size`` scales all anatomy proportionally."""

    num_train: int = 40
    num_val: int = 8
    num_test: int = 16
    slices: int = 6
    size: int = 96
    seed: int = 0
    domains: tuple[str, ...] = field(default=("vendor_a", "vendor_b", "vendor_c"))

    def __post_init__(self) -> None:
        if min(self.num_train, self.num_val, self.num_test) < 0:
            raise ValueError("split sizes must be non-negative")
        if self.slices < 1:
            raise ValueError("slices must be >= 1")
        if self.size < 24:
            raise ValueError("size must be >= 24 pixels")
        if not self.domains:
            raise ValueError("at least one domain is required")
        unknown = [d for d in self.domains if d not in DOMAIN_STYLES]
        if unknown:
            raise ValueError(f"unknown domains {unknown}; known: {sorted(DOMAIN_STYLES)}")

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}


def _rng(config: PhantomConfig, case_index: int, split: str) -> np.random.Generator:
    return np.random.default_rng((config.seed, zlib.crc32(split.encode("utf-8")), case_index))


def _ellipse_radius(phi: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)


def _in_ellipse(yy, xx, cy, cx, ay, ax, angle=0.0) -> np.ndarray:
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0


def _dilate(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    struct = np.zeros((1, 3, 3), bool)
    struct[0] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_dilation(mask, structure=struct, iterations=iterations)


def _anatomy(rng: np.random.Generator, slices: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Label map ``[D,H,W]`` (ACDC convention) and tissue map (indices into :data:`TISSUES`)."""
    s = size / 96.0
    D, n = slices, size
    zf = (np.arange(D) / (D - 1) if D > 1 else np.zeros(1))[:, None, None]
    mid = D // 2
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) + 0.5
    yy, xx = yy[None], xx[None]
    c0 = n / 2.0

    body_cy = c0 + rng.normal(0, 1.5) * s
    body_cx = c0 + rng.normal(0, 1.5) * s
    body_ay = rng.uniform(35, 41) * s * (1 - 0.03 * zf)
    body_ax = rng.uniform(41, 46) * s * (1 - 0.03 * zf)
    body_angle = rng.uniform(-0.2, 0.2)
    fat_frac = rng.uniform(2.0, 4.5) * s / body_ay

    r0 = rng.uniform(9.0, 17.0)
    shrink = rng.uniform(0.30, 0.55)
    ecc = rng.uniform(0.0, 0.18)
    theta = rng.uniform(0, np.pi) + rng.uniform(-0.3, 0.3) * zf
    lv_harm = [(k, rng.uniform(0, 0.05), rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)]
    t0 = rng.uniform(3.5, 7.0)
    t_a1, t_p1 = rng.uniform(0, 0.35), rng.uniform(0, 2 * np.pi)
    t_a2, t_p2 = rng.uniform(0, 0.15), rng.uniform(0, 2 * np.pi)
    alpha = rng.uniform(0, 2 * np.pi)
    rv_k = rng.uniform(0.45, 0.85)
    rv_wf = rng.uniform(0.30, 0.65)
    rv_tan = rng.uniform(1.15, 1.65)
    rv_apex = rng.uniform(0.0, 0.6)
    drop_apex_rv = D >= 3 and rng.random() < 0.35

    extent = r0 * (1 + ecc) + t0 * 1.35 + rv_wf * (r0 + t0)
    room = 0.8 * min(body_ay.min(), body_ax.min()) / s
    if extent > room:
        f = room / extent
        r0, t0 = r0 * f, t0 * f
    r0, t0 = r0 * s, t0 * s
    ua = np.array([np.sin(alpha), np.cos(alpha)])
    shift = 0.4 * rv_wf * (r0 + t0)
    cy0 = body_cy + rng.uniform(-8, 8) * s - ua[0] * shift
    cx0 = body_cx + rng.uniform(-8, 8) * s - ua[1] * shift
    cy = cy0 + rng.uniform(-3, 3) * s * zf
    cx = cx0 + rng.uniform(-3, 3) * s * zf

    r = np.maximum(r0 * (1 - shrink * zf ** 1.3), 1.5)
    t_z = t0 * (1 - 0.35 * shrink * zf)
    t_min = max(2.0, 2.5 * s)

    def lv_radius(phi):
        a, b = r * (1 + ecc), r * (1 - ecc)
        out = _ellipse_radius(phi - theta, a, b)
        return out * (1 + sum(amp * np.cos(k * phi - p) for k, amp, p in lv_harm))

    def thickness(phi):
        mod = 1 + t_a1 * np.cos(phi - t_p1) + t_a2 * np.cos(2 * phi - t_p2)
        return np.maximum(t_z * mod, t_min)

    dy, dx = yy - cy, xx - cx
    d = np.hypot(dy, dx)
    phi = np.arctan2(dy, dx)
    r_lv = lv_radius(phi)
    r_epi = r_lv + thickness(phi)
    lv = d <= r_lv
    myo = (d <= r_epi) & ~lv

    phi_a = np.arctan2(ua[0], ua[1])
    r_epi_a = lv_radius(np.full_like(r, phi_a)) + thickness(np.full_like(r, phi_a))
    r_mean = r + t_z
    w = rv_wf * (r0 + t0) * (1 - (1 - rv_apex) * zf ** 1.5)
    z_idx = np.arange(D)[:, None, None]
    w = np.where(z_idx <= mid, np.maximum(w, 2.0), w)
    rv_on = (w >= 1.2) & ~((z_idx == D - 1) & (z_idx > mid) & drop_apex_rv)
    along = dy * ua[0] + dx * ua[1] - rv_k * r_mean
    across = -dy * ua[1] + dx * ua[0]
    b_rad = r_epi_a - rv_k * r_mean + w
    a_tan = rv_tan * r_mean
    rv = ((along / b_rad) ** 2 + (across / a_tan) ** 2 <= 1.0) & (d > r_epi) & rv_on

    label = np.zeros((D, n, n), np.uint8)
    label[rv] = 1
    label[myo] = 2
    label[_dilate(lv) & ~lv] = 2
    label[lv] = 3
    heart = label > 0

    tissue = np.zeros((D, n, n), np.uint8)
    body = _in_ellipse(yy, xx, body_cy, body_cx, body_ay, body_ax, body_angle)
    inner = _in_ellipse(yy, xx, body_cy + rng.uniform(-1.5, 1.5) * s, body_cx + rng.uniform(-1.5, 1.5) * s,
                        body_ay * (1 - fat_frac * rng.uniform(0.6, 1.4)),
                        body_ax * (1 - fat_frac * rng.uniform(0.6, 1.4)), body_angle)
    tissue[body] = _T["fat"]
    tissue[inner] = _T["body"]

    for side in (-1.0, 1.0):
        lung = _in_ellipse(
            yy, xx,
            body_cy + rng.uniform(-8, 4) * s,
            body_cx + side * rng.uniform(20, 28) * s,
            rng.uniform(13, 21) * s * (1 - 0.2 * zf),
            rng.uniform(7, 12) * s * (1 - 0.2 * zf),
            rng.uniform(-0.5, 0.5),
        )
        tissue[lung & inner] = _T["lung"]

    liver_side = rng.choice([-1.0, 1.0])
    liver = _in_ellipse(
        yy, xx,
        body_cy + rng.uniform(18, 28) * s,
        body_cx + liver_side * rng.uniform(10, 22) * s,
        rng.uniform(10, 16) * s * (0.7 + 0.6 * zf),
        rng.uniform(16, 26) * s * (0.7 + 0.6 * zf),
        rng.uniform(-0.5, 0.5),
    )
    tissue[liver & inner] = _T["liver"]
    spine_angle = rng.uniform(-0.5, 0.5) - np.pi / 2
    spine_d = body_ay.min() * rng.uniform(0.62, 0.78)
    spine_cy = body_cy - np.sin(spine_angle) * spine_d
    spine_cx = body_cx + np.cos(spine_angle) * spine_d
    spine = _in_ellipse(yy, xx, spine_cy, spine_cx,
                        rng.uniform(5, 8) * s, rng.uniform(6, 9) * s)
    tissue[spine & inner] = _T["spine"]

    reach = float(np.max(np.where(heart, d, 0.0)))
    ao_r = rng.uniform(3.5, 6.0) * s
    beta = alpha + np.pi + rng.uniform(-0.9, 0.9)
    ao_d = reach + ao_r + rng.uniform(2.5, 8.0) * s
    ao_cy = cy0 + np.sin(beta) * ao_d + rng.uniform(-1, 1) * s * zf
    ao_cx = cx0 + np.cos(beta) * ao_d + rng.uniform(-1, 1) * s * zf
    tissue[_in_ellipse(yy, xx, ao_cy, ao_cx, ao_r, ao_r) & inner] = _T["vessel"]

    for _ in range(int(rng.integers(1, 4))):
        br = rng.uniform(2.0, 4.5) * s
        for _try in range(20):
            rho, ang = np.sqrt(rng.random()) * 0.85, rng.uniform(0, 2 * np.pi)
            by = body_cy + rho * body_ay.min() * np.sin(ang)
            bx = body_cx + rho * body_ax.min() * np.cos(ang)
            if np.hypot(by - cy0, bx - cx0) > reach + br + 3 * s:
                tissue[_in_ellipse(yy, xx, by, bx, br * rng.uniform(0.7, 1.3), br) & inner] = _T["blob"]
                break

    tissue[_dilate(heart, max(1, round(2 * s)))] = _T["body"]
    tissue[label == 1] = _T["rv"]
    tissue[label == 2] = _T["myo"]
    tissue[label == 3] = _T["lv"]

    for _ in range(int(rng.integers(1, 3))):
        pa = rng.uniform(0, 2 * np.pi)
        pr = rng.uniform(1.5, 2.6) * s * (r / r0)
        pd = np.maximum(lv_radius(np.full_like(r, pa)) - pr - 0.5, 0)
        pap = (np.hypot(yy - (cy + np.sin(pa) * pd), xx - (cx + np.cos(pa) * pd)) <= pr) & (r >= 6 * s)
        tissue[pap & lv] = _T["papillary"]
    return label, tissue


def _render(tissue: np.ndarray, style: DomainStyle, rng: np.random.Generator, size: int) -> np.ndarray:
    s = size / 96.0
    D, n, _ = tissue.shape
    lut = np.array([style.intensity[name] for name in TISSUES]) * rng.uniform(0.92, 1.08, len(TISSUES))
    img = lut[tissue]

    tex = ndimage.gaussian_filter(rng.standard_normal(tissue.shape), (0.7, 3 * s, 3 * s))
    tex /= tex.std() + 1e-8
    fine = ndimage.gaussian_filter(rng.standard_normal(tissue.shape), (0, 0.8 * s, 0.8 * s))
    fine /= fine.std() + 1e-8
    img = img * (1 + style.texture * tex + 0.3 * style.texture * fine)

    img = ndimage.gaussian_filter(img, (0, style.blur * s, style.blur * s))

    g = (np.arange(n) + 0.5) / n * 2 - 1
    yy, xx = np.meshgrid(g, g, indexing="ij")
    zf = (np.arange(D) / (D - 1) if D > 1 else np.zeros(1))[:, None, None] * 2 - 1
    terms = np.stack(np.broadcast_arrays(xx[None], yy[None], xx[None] ** 2, yy[None] ** 2,
                                         (xx * yy)[None], 0.3 * zf))
    poly = np.tensordot(rng.normal(size=len(terms)), terms, axes=1)
    poly /= np.abs(poly).max() + 1e-8
    img = img * np.exp(style.bias * rng.uniform(0.6, 1.0) * poly)

    sigma = style.noise * rng.uniform(0.8, 1.2)
    img = np.hypot(img + sigma * rng.standard_normal(img.shape), sigma * rng.standard_normal(img.shape))

    img = (img - img.min()) / (img.max() - img.min() + 1e-8)
    img = img ** (style.gamma * rng.uniform(0.95, 1.05))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def generate_case(case_index: int, split: str, config: PhantomConfig) -> Case:
    """Generate one phantom; a pure function of ``(config.seed, case_index, split)`` and the config.

    ``case_index`` is the dataset-wide index (``generate_cases`` numbers train, val, then test
    consecutively); it also picks the domain, cycling through ``config.domains``.
    """
    if case_index < 0:
        raise ValueError("case_index must be >= 0")
    rng = _rng(config, case_index, split)
    domain = config.domains[case_index % len(config.domains)]
    label, tissue = _anatomy(rng, config.slices, config.size)
    image = _render(tissue, DOMAIN_STYLES[domain], rng, config.size)
    px = 1.5 * 96.0 / config.size
    return Case(
        case_id=f"phantom_{case_index:03d}",
        image=image,
        label=label,
        split=split,
        domain=domain,
        spacing=(10.0, px, px),
        extra={"source": "synthetic_phantoms", "seed": config.seed, "case_index": case_index},
    )


def generate_cases(config: PhantomConfig = PhantomConfig()) -> list[Case]:
    """All cases of all splits (train, val, test), with dataset-wide unique ids ``phantom_NNN``."""
    cases: list[Case] = []
    index = 0
    for split, count in config.split_sizes().items():
        for _ in range(count):
            cases.append(generate_case(index, split, config))
            index += 1
    return cases
