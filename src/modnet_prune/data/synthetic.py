"""Synthetic portrait matting samples, generated on the fly and reproducible by seed.

A sample is a head/neck/shoulders figure (random pose, scale, position and skin, hair and
clothes) composited over a cluttered background. The matte is exact by construction:
opaque body parts have anti-aliased edges, the hair has a fuzzy fringe and thin
semi-transparent flyaway strands, so the alpha has the fractional values real portrait
mattes have. Same (seed, size) -> byte-identical sample (one `numpy.random.Generator` per
sample, no threads). Everything is drawn in pixel units scaled by the size, with float32
array arithmetic: about 5 ms per 128x128 sample on one core.
"""
from __future__ import annotations

import colorsys
import math
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

GENERATOR_VERSION = 2  # bump whenever the pixels a seed produces change
# "shifted" draws settings the standard generator never does, a second distribution to
# measure how far a student's imitation of its teacher carries: close-ups (head half-width
# 0.2-0.3 of the frame instead of 0.08-0.2), under- or over-exposure (gain 0.5-0.7 or
# 1.35-1.6 instead of 0.8-1.2) and stronger sensor noise (0.03-0.06 instead of 0-0.025).
VARIANTS = ("standard", "shifted")
HAIR_STYLES = ("short", "long", "curly", "updo", "buzz")
HAIR_STYLE_WEIGHTS = (0.28, 0.36, 0.14, 0.12, 0.10)


def sample_name(seed: int) -> str:
    """File stem / dataset name of the sample generated from `seed`."""
    return f"synth_{seed:07d}"


def render_portrait(seed: int, size: int, variant: str = "standard") -> tuple[np.ndarray, np.ndarray]:
    """One sample: image uint8 (size, size, 3) and alpha uint8 (size, size)."""
    if size < 16:
        raise ValueError(f"synthetic size must be at least 16, got {size}")
    if variant not in VARIANTS:
        raise ValueError(f"synthetic variant {variant!r}: expected one of {VARIANTS}")
    shifted = variant == "shifted"
    rng = np.random.default_rng(seed)
    canvas = _Canvas(size)
    background = _background(rng, canvas)
    layers = _portrait_layers(rng, canvas, background.mean(axis=(0, 1)), shifted)
    image, alpha = background, np.zeros((size, size), np.float32)
    for layer_alpha, colour in layers:  # back to front, "over" compositing
        image = image + layer_alpha[..., None] * (colour - image)
        alpha = alpha + layer_alpha * (1.0 - alpha)
    image = _camera(rng, canvas, image, shifted)
    return (np.round(np.clip(image, 0, 1) * 255).astype(np.uint8),
            np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8))


# --------------------------------------------------------------------------- geometry

class _Canvas:
    """Pixel-centre coordinates of a size x size image and scale-aware helpers."""

    def __init__(self, size: int):
        self.size = size
        self.unit = size / 128.0  # the generator was tuned at 128x128
        self.y, self.x = _grid(size)

    def local(self, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates in a frame centred at (cx, cy) and rotated by `angle` (radians)."""
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = self.x - cx, self.y - cy
        return dx * c + dy * s, dy * c - dx * s


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    y.flags.writeable = x.flags.writeable = False
    return y, x


def _as_distance(level: np.ndarray) -> np.ndarray:
    """Turn a level function (negative inside) into an approximate signed distance in
    pixels by dividing by its gradient norm: exact enough near the edge for anti-aliasing."""
    gy, gx = np.gradient(level)
    return level / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-3)


def _superellipse(u: np.ndarray, v: np.ndarray, rx: float, ry: float, power: float = 2.0):
    """Level function of |u/rx|^p + |v/ry|^p = 1 (negative inside), as a distance."""
    q = (np.abs(u / rx) ** power + np.abs(v / ry) ** power) ** (1.0 / power)
    return _as_distance(q - 1.0)


def _ellipse(u: np.ndarray, v: np.ndarray, rx: float, ry: float) -> np.ndarray:
    return _as_distance(np.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1.0)


def _capsule(u, v, a: tuple[float, float], b: tuple[float, float], radius: float):
    """Exact signed distance to a segment a-b thickened by `radius`."""
    pu, pv, du, dv = u - a[0], v - a[1], b[0] - a[0], b[1] - a[1]
    t = np.clip((pu * du + pv * dv) / (du * du + dv * dv + 1e-9), 0.0, 1.0)
    return np.sqrt((pu - t * du) ** 2 + (pv - t * dv) ** 2) - radius


def _smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def _coverage(distance: np.ndarray, softness: float = 1.0) -> np.ndarray:
    """Anti-aliased inside-ness: 1 inside, 0 outside, a ramp `softness` px wide."""
    return np.clip(0.5 - distance / softness, 0.0, 1.0)


# --------------------------------------------------------------------------- textures

def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random (cells+1)^2 lattice upsampled bicubically."""
    lattice = rng.random((cells + 1, cells + 1), dtype=np.float32)
    return np.asarray(Image.fromarray(lattice).resize((size, size), Image.Resampling.BICUBIC))


def _fractal_noise(rng, size: int, cells: int = 3, octaves: int = 4) -> np.ndarray:
    total, weight = np.zeros((size, size), np.float32), 0.0
    for octave in range(octaves):
        amplitude = 0.5 ** octave
        total += amplitude * _value_noise(rng, size, min(cells * 2 ** octave, size))
        weight += amplitude
    return total / weight


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (H, W) or (H, W, C) float32 with replicated borders. Wide blurs run
    at a reduced resolution (box-reduced, blurred, upsampled): cost independent of sigma."""
    factor = int(sigma // 2) if sigma >= 4 else 1
    if factor == 1:
        spatial = (sigma, sigma) + (0,) * (image.ndim - 2)
        return gaussian_filter(image, sigma=spatial, mode="nearest")
    h, w = image.shape[:2]
    planes = image[..., None] if image.ndim == 2 else image
    out = np.empty_like(planes)
    for c in range(planes.shape[2]):
        small = np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c])).reduce(factor))
        small = gaussian_filter(small, sigma=np.sqrt(sigma ** 2 - factor ** 2 / 4) / factor,
                                mode="nearest")
        out[..., c] = np.asarray(Image.fromarray(small).resize(
            (w, h), Image.Resampling.BICUBIC, box=(0, 0, w / factor, h / factor)))  # smooth
        # gradients: shading differentiates this, and bilinear would make it blocky
    return out.reshape(image.shape)


def _angular_noise(rng, theta: np.ndarray, samples: int) -> np.ndarray:
    """Noise around a centre, a function of the angle only: `samples` random values in
    [-1, 1] spaced evenly on the circle, interpolated periodically (no seam at +-pi)."""
    knots = np.linspace(-math.pi, math.pi, samples, endpoint=False)
    values = rng.uniform(-1.0, 1.0, samples)
    return np.interp(theta, knots, values, period=2 * math.pi).astype(np.float32)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), np.float32)


def _random_colour(rng, saturation=(0.1, 0.9), value=(0.15, 0.95)) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(*saturation), rng.uniform(*value))


def _paint(image: np.ndarray, coverage: np.ndarray, colour) -> np.ndarray:
    """`colour` (RGB or a full image) over `image` with the given coverage; new array.
    Small features (eyes, lines) only touch their own pixels, which is most of the speed."""
    colour = np.asarray(colour, np.float32)
    where = np.flatnonzero(coverage)
    if where.size > coverage.size // 4:
        return image + coverage[..., None] * (colour - image)
    out = np.array(image, np.float32).reshape(-1, 3)
    src = colour.reshape(-1, 3)[where] if colour.ndim == 3 else colour
    out[where] += coverage.reshape(-1)[where, None] * (src - out[where])
    return out.reshape(image.shape)


# --------------------------------------------------------------------------- background

def _background(rng: np.random.Generator, canvas: _Canvas) -> np.ndarray:
    """Gradient + noise + shapes (+ stripes/foliage), then a depth-of-field blur."""
    size, x, y = canvas.size, canvas.x / canvas.size, canvas.y / canvas.size
    kind = rng.choice(("indoor", "outdoor", "studio", "abstract"), p=(0.45, 0.2, 0.15, 0.2))
    c0, c1 = _random_colour(rng), _random_colour(rng)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.clip(0.5 + (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle), 0, 1)
    image = c0 + ramp[..., None] * (c1 - c0)
    if kind == "studio":  # smooth backdrop with a soft vignette
        r2 = (x - rng.uniform(0.3, 0.7)) ** 2 + (y - rng.uniform(0.2, 0.6)) ** 2
        return image * (1.0 - rng.uniform(0.2, 0.6) * np.clip(r2, 0, 1))[..., None]
    if kind == "outdoor":
        horizon = rng.uniform(0.2, 0.7)
        sky = _hsv(rng.uniform(0.5, 0.65), rng.uniform(0.1, 0.6), rng.uniform(0.6, 1.0))
        ground = _hsv(rng.uniform(0.08, 0.4), rng.uniform(0.3, 0.8), rng.uniform(0.15, 0.6))
        foliage = _fractal_noise(rng, size, cells=4)
        image = _paint(image, np.clip((horizon - y) * 8, 0, 1), sky)
        image = _paint(image, np.clip((y - horizon) * 8 + foliage - 0.5, 0, 1),
                       ground * (0.6 + 0.8 * foliage[..., None]))
    image = image * (0.75 + 0.5 * _fractal_noise(rng, size, cells=2))[..., None]
    n_shapes = int(rng.integers(2, 9 if kind == "indoor" else 5))
    for _ in range(n_shapes):
        image = _paint(image, _random_shape(rng, canvas) * rng.uniform(0.5, 1.0),
                       _random_colour(rng))
    if kind in ("indoor", "abstract") and rng.random() < 0.5:
        image = _paint(image, _stripes(rng, canvas) * rng.uniform(0.2, 0.6), _random_colour(rng))
    image = image + rng.uniform(0.0, 0.08) * (_value_noise(rng, size, size // 4) - 0.5)[..., None]
    if rng.random() < 0.75:  # depth of field: backgrounds are usually out of focus
        sigma = rng.uniform(0.5, 4.0) * canvas.unit
        image = _blur(image.astype(np.float32), sigma)
    return np.clip(image, 0, 1).astype(np.float32)


def _random_shape(rng, canvas: _Canvas) -> np.ndarray:
    s = canvas.size
    cx, cy = rng.uniform(-0.1, 1.1, 2) * s
    u, v = canvas.local(cx, cy, rng.uniform(0, math.pi) if rng.random() < 0.4 else 0.0)
    w, h = rng.uniform(0.04, 0.5, 2) * s
    kind = rng.integers(4)
    if kind == 0:  # boxes: walls, windows, furniture, frames
        d = np.maximum(np.abs(u) - w, np.abs(v) - h)
    elif kind == 1:  # discs and blobs: lamps, plants, bokeh
        d = _ellipse(u, v, w * 0.6, h * 0.6)
    elif kind == 2:  # thin lines: edges of shelves, door frames, cables
        d = np.abs(v) - rng.uniform(0.3, 2.5) * canvas.unit
    else:  # rings
        d = np.abs(np.sqrt(u * u + v * v) - w * 0.5) - rng.uniform(0.5, 0.1 * w + 1)
    return _coverage(d, rng.uniform(0.8, 2.0))


def _stripes(rng, canvas: _Canvas) -> np.ndarray:
    angle = rng.choice((0.0, math.pi / 2, rng.uniform(0, math.pi)))
    u, _ = canvas.local(0, 0, angle)
    period = rng.uniform(3, 24) * canvas.unit
    return np.clip(np.sin(2 * math.pi * u / period) * 3, 0, 1)


# --------------------------------------------------------------------------- the portrait

def _portrait_layers(rng, canvas: _Canvas, ambient: np.ndarray, shifted: bool = False
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(alpha, colour) layers, back to front: back hair, body, head, hair, strands."""
    s = canvas.size
    rx = rng.uniform(*((0.2, 0.3) if shifted else (0.08, 0.2))) * s  # head half-width
    ry = rx * rng.uniform(1.2, 1.38)
    head = dict(cx=rng.uniform(0.2, 0.8) * s, cy=rng.uniform(0.22, 0.5) * s, rx=rx, ry=ry,
                roll=float(np.clip(rng.normal(0, 0.13), -0.35, 0.35)),
                yaw=float(np.clip(rng.normal(0, 0.35), -0.8, 0.8)))
    skin = _skin_colour(rng)
    hair_colour = _hair_colour(rng)
    light = rng.normal(0, 1, 2)
    light = light / (np.linalg.norm(light) + 1e-6)
    style = HAIR_STYLES[rng.choice(len(HAIR_STYLES), p=HAIR_STYLE_WEIGHTS)]
    tint = (0.8 + 0.4 * ambient / (ambient.mean() + 1e-3)).astype(np.float32)  # environment light

    body_d, neck_d, clothes = _body(rng, canvas, head)
    head_d = _head_shape(canvas, head)
    hair_d, back_hair_d, window, back_view = _hair_shape(rng, canvas, head, style)
    soft = rng.uniform(0.7, 1.4)  # edge sharpness of opaque parts (focus)
    body_a, head_a = _coverage(body_d, soft), _coverage(head_d, soft)
    shade = _shading(canvas, np.maximum(body_a, head_a), light, rx)

    hair_tex = _hair_texture(rng, canvas, head, hair_colour)
    hair_a = _fuzzy(rng, canvas, hair_d, head, style) * (1.0 - window)
    skin_map = skin * (0.92 + 0.16 * _fractal_noise(rng, s, cells=4))[..., None]
    body_col = _paint(clothes, _coverage(neck_d, 1.5 * canvas.unit), skin_map)  # neck, neckline
    face_col = skin_map if back_view else _face(rng, canvas, head, skin_map, hair_colour)
    strands_a = _strands(rng, canvas, hair_d, hair_a, head, style)

    layers = []
    if back_hair_d is not None:
        layers.append((_fuzzy(rng, canvas, back_hair_d, head, style), hair_tex * 0.8))
    layers += [(body_a, body_col), (head_a, face_col), (hair_a, hair_tex),
               (strands_a, np.clip(hair_tex * 1.15, 0, 1))]
    lit = shade[..., None] * tint
    return [(a, np.clip(c * lit, 0, 1)) for a, c in layers]


def _skin_colour(rng) -> np.ndarray:
    tone = rng.random()  # light ... dark
    light, dark = np.array([0.96, 0.80, 0.70], np.float32), np.array([0.33, 0.21, 0.15], np.float32)
    colour = light + tone * (dark - light)
    return np.clip(colour * rng.uniform(0.92, 1.08, 3).astype(np.float32), 0, 1)


def _hair_colour(rng) -> np.ndarray:
    palette = np.array([[0.05, 0.04, 0.04], [0.18, 0.11, 0.07], [0.35, 0.22, 0.12],
                        [0.72, 0.58, 0.36], [0.55, 0.25, 0.10], [0.6, 0.6, 0.6],
                        [0.9, 0.88, 0.82]], np.float32)
    p = np.array([0.3, 0.25, 0.15, 0.1, 0.08, 0.08, 0.04]) if rng.random() > 0.05 else None
    base = palette[rng.choice(len(palette), p=p)] if p is not None else _random_colour(rng)
    return np.clip(base * rng.uniform(0.85, 1.15, 3).astype(np.float32), 0, 1)


def _body(rng, canvas: _Canvas, head: dict):
    """Distance fields of neck+torso and of the neck alone; clothes colour map."""
    rx, ry = head["rx"], head["ry"]
    shoulder_y = head["cy"] + ry * rng.uniform(0.95, 1.25)
    half_width = rx * rng.uniform(2.3, 3.2)
    torso_h = half_width * rng.uniform(0.45, 0.8)
    bx = head["cx"] + rng.normal(0, 0.3) * rx
    u, v = canvas.local(bx, shoulder_y + torso_h, rng.normal(0, 0.06))
    torso = _superellipse(u, np.minimum(v, 0.0), half_width, torso_h, rng.uniform(2.4, 4.0))
    neck_r = rx * rng.uniform(0.5, 0.68)
    hu, hv = canvas.local(head["cx"], head["cy"], head["roll"] * 0.5)
    neck = _capsule(hu, hv, (0.0, 0.2 * ry), (0.0, shoulder_y - head["cy"] + torso_h * 0.3), neck_r)
    body = _smooth_union(torso, neck, rx * rng.uniform(0.4, 0.9))
    return body, neck, _clothes_colour(rng, canvas)


def _clothes_colour(rng, canvas: _Canvas) -> np.ndarray:
    s = canvas.size
    base = _random_colour(rng, saturation=(0.0, 0.9), value=(0.08, 0.95))
    pattern = rng.choice(("plain", "stripes", "checks", "print"), p=(0.55, 0.2, 0.1, 0.15))
    colour = np.broadcast_to(base, (s, s, 3)).astype(np.float32)
    if pattern == "stripes":
        colour = _paint(colour, _stripes(rng, canvas), _random_colour(rng))
    elif pattern == "checks":
        colour = _paint(colour, _stripes(rng, canvas) * _stripes(rng, canvas) * 0.7, _random_colour(rng))
    elif pattern == "print":
        blobs = np.clip((_value_noise(rng, s, int(rng.integers(6, 16))) - 0.55) * 10, 0, 1)
        colour = _paint(colour, blobs, _random_colour(rng))
    folds = _fractal_noise(rng, s, cells=int(rng.integers(3, 7)), octaves=3)
    return colour * (0.75 + 0.5 * folds)[..., None]


def _head_shape(canvas: _Canvas, head: dict) -> np.ndarray:
    """Skull+face: an ellipse whose lower half narrows to a chin, plus two ears."""
    u, v = canvas.local(head["cx"], head["cy"], head["roll"])
    rx, ry = head["rx"], head["ry"]
    taper = 1.0 - 0.22 * np.clip(v / ry, 0.0, 1.0) ** 2
    face = _as_distance(np.sqrt((u / (rx * taper)) ** 2 + (v / ry) ** 2) - 1.0)
    ear_u = rx * 0.95
    ears = np.minimum(_ellipse(u - ear_u, v - 0.05 * ry, 0.18 * rx, 0.3 * rx),
                      _ellipse(u + ear_u, v - 0.05 * ry, 0.18 * rx, 0.3 * rx))
    return _smooth_union(face, ears, 0.1 * rx)


def _hair_shape(rng, canvas: _Canvas, head: dict, style: str):
    """Distance field of the hair mass, of hair behind the neck (long styles, else None),
    the face window (where skin shows through the hair) and whether we see the back of
    the head (no window, no face)."""
    u, v = canvas.local(head["cx"], head["cy"], head["roll"])
    rx, ry = head["rx"], head["ry"]
    grow = {"short": (1.08, 1.04), "long": (1.1, 1.05), "curly": (1.35, 1.25),
            "updo": (1.04, 1.02), "buzz": (1.02, 1.0)}[style]
    gx, gy = (g * rng.uniform(0.98, 1.06) for g in grow)
    lift = rng.uniform(0.04, 0.14) * ry
    hair = _ellipse(u, v + lift, rx * gx, ry * gy)
    back = None
    if style == "long":
        length = ry * rng.uniform(1.3, 3.2)
        spread = rx * rng.uniform(0.9, 1.5)
        width = rx * rng.uniform(0.3, 0.55)
        for side in (-1.0, 1.0):
            curtain = _capsule(u, v, (side * rx * 0.8, -0.2 * ry), (side * spread, length), width)
            hair = _smooth_union(hair, curtain, rx * 0.3)
        back = _capsule(u, v, (0.0, 0.0), (0.0, length - width), spread)
    elif style == "updo":
        bun = _ellipse(u - rng.normal(0, 0.2) * rx, v + ry * 1.0, rx * 0.42, rx * 0.38)
        hair = _smooth_union(hair, bun, rx * 0.2)
    if style != "long":  # short styles end around the ears: no hair under the chin
        hair = np.maximum(hair, v - ry * rng.uniform(0.2, 0.5))
    back_view = rng.random() < 0.07
    part = rng.normal(0, 0.25) * rx  # fringe/parting shifts the hairline sideways
    window_d = _ellipse(u - part * 0.3, v - ry * rng.uniform(0.18, 0.34),
                        rx * rng.uniform(0.8, 0.95), ry * rng.uniform(0.82, 0.98))
    window = np.zeros_like(u) if back_view else _coverage(window_d, 1.5 * canvas.unit)
    return hair, back, window, back_view


def _fuzzy(rng, canvas: _Canvas, distance: np.ndarray, head: dict, style: str) -> np.ndarray:
    """Hair coverage: the edge is pushed in and out by random tufts a few pixels apart and
    spread over a few pixels, so the fringe has fractional alpha with an uneven texture."""
    theta = np.arctan2(canvas.y - (head["cy"] - head["ry"]), canvas.x - head["cx"])
    # tufts about 1.5-4 px apart along the hair outline (circumference ~ 2 pi 1.5 rx)
    tufts = int(3 * math.pi * head["rx"] / (canvas.unit * rng.uniform(1.5, 4.0)))
    streaks = _angular_noise(rng, theta, max(tufts, 16))
    amplitude = canvas.unit * (rng.uniform(1.5, 4.0) if style == "curly" else rng.uniform(0.3, 1.5))
    softness = canvas.unit * rng.uniform(1.0, 3.0 if style == "curly" else 2.2)
    return _coverage(distance + amplitude * streaks, softness)


def _hair_texture(rng, canvas: _Canvas, head: dict, colour: np.ndarray) -> np.ndarray:
    crown_x, crown_y = head["cx"] + rng.normal(0, 0.3) * head["rx"], head["cy"] - head["ry"] * 1.2
    theta = np.arctan2(canvas.y - crown_y, canvas.x - crown_x)
    radius = np.sqrt((canvas.y - crown_y) ** 2 + (canvas.x - crown_x) ** 2)
    strands = int(2 * math.pi * head["ry"] * 1.5 / (canvas.unit * rng.uniform(0.7, 1.5)))
    value = 0.75 + 0.18 * _angular_noise(rng, theta, max(strands, 32))
    sheen_r = head["ry"] * rng.uniform(0.5, 1.0)
    value += rng.uniform(0.1, 0.5) * np.exp(-((radius - sheen_r) / (0.15 * head["ry"])) ** 2)
    return np.clip(colour * value[..., None] + 0.02, 0, 1).astype(np.float32)


def _face(rng, canvas: _Canvas, head: dict, skin_map: np.ndarray, hair: np.ndarray) -> np.ndarray:
    """Skin with eyes, brows, nose shadow and mouth placed by the head's roll and yaw."""
    rx, ry = head["rx"], head["ry"]
    u, v = canvas.local(head["cx"], head["cy"], head["roll"])
    u = u - head["yaw"] * rx * 0.35
    eye_v, gap = ry * rng.uniform(-0.02, 0.1), rx * rng.uniform(0.32, 0.4)
    out = skin_map
    iris = _hsv(rng.uniform(0.05, 0.6), rng.uniform(0.2, 0.7), rng.uniform(0.1, 0.45))
    brow = np.clip(hair * 0.8, 0, 1)
    for side in (-1.0, 1.0):
        eu = u - side * gap * (1 + 0.3 * side * head["yaw"])
        out = _paint(out, _coverage(_ellipse(eu, v - eye_v, 0.15 * rx, 0.065 * rx)), (0.9, 0.88, 0.85))
        out = _paint(out, _coverage(_ellipse(eu, v - eye_v, 0.065 * rx, 0.065 * rx)), iris)
        out = _paint(out, _coverage(_ellipse(eu, v - eye_v + 0.17 * ry, 0.19 * rx, 0.035 * rx))
                     * rng.uniform(0.5, 1.0), brow)
    skin = skin_map.mean(axis=(0, 1))
    out = _paint(out, _coverage(_ellipse(u, v - eye_v - 0.33 * ry, 0.09 * rx, 0.05 * rx), 2.0) * 0.5,
                 skin * 0.6)
    lips = np.clip(skin * np.array([0.85, 0.55, 0.55], np.float32) + rng.uniform(0, 0.1), 0, 1)
    out = _paint(out, _coverage(_ellipse(u, v - eye_v - 0.57 * ry, 0.22 * rx, 0.055 * rx)), lips)
    if rng.random() < 0.12:  # glasses
        for side in (-1.0, 1.0):
            ring = np.abs(np.sqrt((u - side * gap) ** 2 + (v - eye_v) ** 2) - 0.2 * rx) - 0.02 * rx - 0.3
            out = _paint(out, _coverage(ring), (0.05, 0.05, 0.05))
    return out


def _shading(canvas: _Canvas, silhouette: np.ndarray, light: np.ndarray, rx: float) -> np.ndarray:
    """Lambert-like shading from the normals of a blurred silhouette used as a height map."""
    height = _blur(silhouette, max(rx * 0.45, 1.0))
    gy, gx = np.gradient(height)
    k = rx * 1.5
    return np.clip(0.8 - k * (gx * light[0] + gy * light[1]), 0.45, 1.3).astype(np.float32)


def _strands(rng, canvas: _Canvas, hair_d: np.ndarray, hair_a: np.ndarray, head: dict,
             style: str) -> np.ndarray:
    """Flyaway strands: thin curved lines rooted on the hair edge, leaving it outwards,
    splatted with sub-pixel (bilinear) weights so that each is semi-transparent."""
    edge = np.flatnonzero((hair_a > 0.15) & (hair_a < 0.85))
    base_count = {"curly": 120, "long": 60, "short": 40, "updo": 30, "buzz": 8}[style]
    count = min(int(base_count * rng.uniform(0.3, 1.5) * max(canvas.unit, 1.0)), edge.size)
    if count == 0:
        return np.zeros_like(hair_a)
    roots = rng.choice(edge, size=count, replace=False)
    gy, gx = np.gradient(hair_d)
    size = canvas.size
    ry, rx = np.divmod(roots, size)
    normal = np.stack([gx.flat[roots], gy.flat[roots]], 1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-6
    angle = np.arctan2(normal[:, 1], normal[:, 0]) + rng.normal(0, 0.6, count)
    if style == "long":  # gravity
        angle = np.where(rng.random(count) < 0.5, angle, math.pi / 2 + rng.normal(0, 0.3, count))
    length = canvas.unit * rng.uniform(2, 12 if style != "curly" else 8, count)
    bend = length * rng.normal(0, 0.4 if style != "curly" else 0.9, count)
    width = rng.uniform(0.25, 0.8, count) * max(1.0, canvas.unit / 2)
    opacity = rng.uniform(0.35, 1.0, count)
    return _splat_curves(size, rx + 0.5, ry + 0.5, angle, length, bend, width * opacity)


def _splat_curves(size, x0, y0, angle, length, bend, strength) -> np.ndarray:
    """Sum of quadratic curves as sub-pixel coverage; strength = width x opacity."""
    step = 0.4
    n = np.ceil(length / step).astype(np.int64) + 1
    idx = np.repeat(np.arange(n.size), n)
    t = (np.arange(idx.size) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(n - 1, n)
    c, s = np.cos(angle)[idx], np.sin(angle)[idx]
    along, across = (length[idx] * t - 1.0), bend[idx] * t * t  # start 1 px inside
    px = x0[idx] + along * c - across * s - 0.5
    py = y0[idx] + along * s + across * c - 0.5
    weight = strength[idx] * step * (1.0 - t ** 2)  # thin out toward the tip
    ix, iy = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    fx, fy = px - ix, py - iy
    total = np.zeros(size * size, np.float64)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xx, yy = ix + dx, iy + dy
        ok = (xx >= 0) & (xx < size) & (yy >= 0) & (yy < size)
        total += np.bincount(yy[ok] * size + xx[ok], weights=(weight * w)[ok], minlength=size * size)
    return (1.0 - np.exp(-total)).reshape(size, size).astype(np.float32)


# --------------------------------------------------------------------------- camera

def _camera(rng, canvas: _Canvas, image: np.ndarray, shifted: bool = False) -> np.ndarray:
    """White balance, exposure, optical softness and sensor noise."""
    balance = rng.uniform(0.9, 1.1, 3).astype(np.float32)  # draw order kept: same pixels
    gain = (rng.uniform(*((0.5, 0.7) if rng.random() < 0.5 else (1.35, 1.6))) if shifted
            else rng.uniform(0.8, 1.2))
    image = image * balance * gain
    image = np.clip(image, 0, 1) ** rng.uniform(0.8, 1.25)
    if rng.random() < 0.3:  # mild: a strand the matte has should stay visible
        sigma = rng.uniform(0.2, 0.5) * canvas.unit
        image = _blur(image, sigma)
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    return image + rng.uniform(*((0.03, 0.06) if shifted else (0.0, 0.025))) * noise
