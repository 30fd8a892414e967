"""Synthetic city: seeded procedural street scenes written as Cityscapes-pairs composites (photo | colour label).

Each scene is drawn twice at once, as a trainId mask and as a flat-colour "albedo"; the albedo is then
textured per class and lit, so every class has its own look (with noise) and the task is learnable.
"""

from pathlib import Path

import cv2
import numpy as np

from segkit import files
from segkit.data.palette import IGNORE_INDEX, TRAIN_CLASSES, TRAIN_CLASS_COLORS
from segkit.errors import SegkitError

__all__ = ["synthetic_city", "synthetic_scene", "write_synthetic"]

# Largest side of a scene: a few float32 layers of this size are held while rendering.
MAX_SIDE = 4096
# Written into every synthetic folder: each file's name and digest, so a later call replaces only those unchanged.
MARKER = ".segkit-synthetic.json"
# Scenes encoded, recorded in the marker, then written, per batch: the marker is rewritten once per batch, not per file.
_BATCH = 16

_ID = {label.name: label.train_id for label in TRAIN_CLASSES}
ROAD, SIDEWALK, BUILDING, WALL, FENCE = (_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN, VEGETATION, TERRAIN = (_ID[n] for n in ("pole", "traffic light", "traffic sign", "vegetation", "terrain"))
SKY, PERSON, CAR, TRUCK, BUS = (_ID[n] for n in ("sky", "person", "car", "truck", "bus"))

# Label colours as the pairs dataset stores them: ignore pixels are black like "unlabeled"/"ego vehicle".
_LABEL_COLORS = np.zeros((256, 3), np.uint8)
_LABEL_COLORS[: len(TRAIN_CLASS_COLORS)] = TRAIN_CLASS_COLORS

# Per-class texture: low-frequency shading amplitude and high-frequency grain (in grey levels).
_SHADING = np.full(256, 0.08, np.float32)
_GRAIN = np.full(256, 6.0, np.float32)
for _cls, _shade, _grain in (
    (SKY, 0.04, 1.5), (ROAD, 0.10, 7.0), (SIDEWALK, 0.06, 4.0), (BUILDING, 0.12, 5.0),
    (VEGETATION, 0.30, 28.0), (TERRAIN, 0.20, 14.0), (CAR, 0.05, 2.0), (PERSON, 0.05, 3.0),
    (POLE, 0.03, 2.0), (WALL, 0.10, 9.0), (FENCE, 0.05, 4.0),
):
    _SHADING[_cls], _GRAIN[_cls] = _shade, _grain


class _Canvas:
    """A trainId mask and a flat-colour albedo drawn together, so labels and photo always align."""

    def __init__(self, height: int, width: int, rng: np.random.Generator):
        self.h, self.w, self.rng = height, width, rng
        self.mask = np.full((height, width), SKY, np.uint8)
        self.albedo = np.zeros((height, width, 3), np.uint8)

    def poly(self, points, cls: int, color) -> None:
        pts = [np.round(np.asarray(points, np.float64) * 16).astype(np.int32)]  # 4 fractional bits
        cv2.fillPoly(self.mask, pts, int(cls), cv2.LINE_8, 4)
        cv2.fillPoly(self.albedo, pts, _int_color(color), cv2.LINE_8, 4)

    def rect(self, x0, y0, x1, y1, cls: int, color) -> None:
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], cls, color)

    def ellipse(self, cx, cy, rx, ry, cls: int, color) -> None:
        center, axes = (int(round(cx)), int(round(cy))), (max(1, int(round(rx))), max(1, int(round(ry))))
        cv2.ellipse(self.mask, center, axes, 0, 0, 360, int(cls), -1)
        cv2.ellipse(self.albedo, center, axes, 0, 0, 360, _int_color(color), -1)

    def paint(self, points, color) -> None:
        """Photo-only detail (windows, markings, lamps): the label underneath stays."""
        pts = [np.round(np.asarray(points, np.float64) * 16).astype(np.int32)]
        cv2.fillPoly(self.albedo, pts, _int_color(color), cv2.LINE_8, 4)

    def jitter(self, color, amount: float = 18.0):
        return np.clip(np.asarray(color, np.float64) + self.rng.normal(0, amount, 3), 0, 255)


def _int_color(color) -> tuple:
    return tuple(int(c) for c in np.clip(color, 0, 255))


class _Street:
    """Perspective of a straight street: horizon, vanishing point, road and sidewalk edges as lines through it."""

    def __init__(self, canvas: _Canvas):
        rng, h, w = canvas.rng, canvas.h, canvas.w
        self.horizon = h * rng.uniform(0.36, 0.52)
        self.vx = w * rng.uniform(0.3, 0.7)
        self.depth = h - self.horizon
        # Half-widths at the bottom row, as multiples of the depth below the horizon.
        self.road_left, self.road_right = rng.uniform(0.5, 1.1), rng.uniform(0.5, 1.1)
        self.outer_left = self.road_left + rng.uniform(0.4, 1.4)
        self.outer_right = self.road_right + rng.uniform(0.4, 1.4)

    def x_at(self, y, spread):
        """x of the line through the vanishing point with bottom-row offset `spread` (negative: left)."""
        return self.vx + spread * (y - self.horizon)

    def scale(self, y):
        """Apparent size at ground row y: 0 at the horizon, 1 at the bottom row."""
        return max(0.0, (y - self.horizon) / self.depth)


def _draw_sky(c: _Canvas, street: _Street) -> None:
    top = c.jitter((70, 120, 190), 20)
    low = c.jitter((185, 205, 225), 15)
    if c.rng.random() < 0.3:  # overcast
        top = low = c.jitter((190, 195, 200), 10)
    t = np.linspace(0, 1, c.h, dtype=np.float32)[:, None, None] / max(street.horizon / c.h, 0.1)
    c.albedo[:] = np.clip(top + (low - top) * np.minimum(t, 1.0), 0, 255).astype(np.uint8)


def _draw_background(c: _Canvas, street: _Street) -> None:
    """Far buildings and trees around the vanishing point (small, low contrast)."""
    x = street.vx - c.w * c.rng.uniform(0.15, 0.3)
    while x < street.vx + c.w * 0.3:
        width = c.w * c.rng.uniform(0.03, 0.09)
        top = street.horizon - c.h * c.rng.uniform(0.03, 0.16)
        if c.rng.random() < 0.7:
            c.rect(x, top, x + width, street.horizon + 1, BUILDING, c.jitter((150, 150, 155), 25))
        else:
            c.ellipse(x + width / 2, street.horizon - (street.horizon - top) / 2, width / 1.6, (street.horizon - top) / 1.6,
                      VEGETATION, c.jitter((90, 120, 50), 15))
        x += width


def _draw_ground(c: _Canvas, street: _Street) -> None:
    y0, y1 = street.horizon, c.h + 1
    sidewalk = c.jitter((165, 155, 160), 15)
    c.rect(-1, y0, c.w + 1, y1, SIDEWALK, sidewalk)
    road = c.jitter((85, 85, 90), 12)
    c.poly([(street.vx, y0), (street.x_at(y1, -street.road_left), y1), (street.x_at(y1, street.road_right), y1)], ROAD, road)
    # Curb stones: a slightly darker strip on the sidewalk side of each road edge.
    curb = np.asarray(sidewalk) * 0.75
    for edge, sign in ((-street.road_left, -1), (street.road_right, 1)):
        c.paint([(street.vx, y0), (street.x_at(y1, edge), y1), (street.x_at(y1, edge + sign * 0.06), y1)], curb)
    _draw_markings(c, street)


def _draw_markings(c: _Canvas, street: _Street) -> None:
    white = c.jitter((225, 225, 220), 8)
    center = c.rng.uniform(-0.15, 0.15)
    y = street.horizon + street.depth * 0.04
    while y < c.h:
        dash = street.depth * 0.06 + (y - street.horizon) * 0.35
        y_end = min(y + dash, c.h + 1)
        xa, xb = street.x_at(y, center), street.x_at(y_end, center)
        ha, hb = 0.3 + 0.012 * (y - street.horizon), 0.3 + 0.012 * (y_end - street.horizon)  # wider when nearer
        c.paint([(xa - ha, y), (xa + ha, y), (xb + hb, y_end), (xb - hb, y_end)], white)
        y = y_end + dash * 0.9


def _facade_lines(street: _Street, side: int, x):
    """Distance of column x from the vanishing point, and the facade's bottom row there (the sidewalk's outer edge)."""
    dist = np.abs(x - street.vx)
    outer = street.outer_right if side > 0 else street.outer_left
    return dist, street.horizon + dist / outer


def _draw_building(c: _Canvas, street: _Street, side: int, xa: float, xb: float) -> None:
    height = c.rng.uniform(0.5, 2.2)  # rise per unit of horizontal distance from the vanishing point
    base = c.jitter(c.rng.choice([(140, 130, 120), (170, 160, 140), (120, 110, 110), (150, 110, 90), (190, 185, 175)]), 14)
    da, bottom_a = _facade_lines(street, side, xa)
    db, bottom_b = _facade_lines(street, side, xb)
    top_a, top_b = street.horizon - height * da, street.horizon - height * db
    c.poly([(xa, top_a), (xb, top_b), (xb, bottom_b), (xa, bottom_a)], BUILDING, base)
    _paint_windows(c, street, side, xa, xb, height, base)


def _paint_windows(c: _Canvas, street: _Street, side: int, xa: float, xb: float, height: float, base) -> None:
    """A perspective grid of windows, computed on the facade's bounding box with numpy (no per-window calls)."""
    x0, x1 = int(max(0, np.floor(min(xa, xb)))), int(min(c.w, np.ceil(max(xa, xb))))
    if x1 - x0 < 3:
        return
    xs = np.arange(x0, x1, dtype=np.float32) + 0.5
    dist, bottom = _facade_lines(street, side, xs)
    top = street.horizon - height * dist
    y0, y1 = int(max(0, top.min())), int(min(c.h, bottom.max()))
    if y1 - y0 < 3:
        return
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    floors = (ys - bottom) / np.minimum(top - bottom, -1e-3)  # 0 at the base, 1 at the roof
    across = (xs - xa) / (xb - xa)
    cols, rows = c.rng.integers(3, 9), c.rng.integers(3, 9)
    u, v = (across * cols) % 1.0, (floors * rows) % 1.0
    window = (u > 0.25) & (u < 0.75) & (v > 0.3) & (v < 0.75) & (floors > 0.12) & (floors < 0.95)
    window &= c.mask[y0:y1, x0:x1] == BUILDING
    glass = np.asarray(base, np.float64) * c.rng.uniform(0.25, 0.5) + c.rng.normal(0, 8, 3) + (0, 5, 15)
    c.albedo[y0:y1, x0:x1][window] = np.clip(glass, 0, 255).astype(np.uint8)


def _draw_side(c: _Canvas, street: _Street, side: int) -> None:
    """One side of the street: a row of buildings, or a park (grass and trees), maybe fronted by a wall or fence."""
    far_edge = street.vx + side * c.w * c.rng.uniform(0.08, 0.2)
    image_edge = c.w + 2 if side > 0 else -2
    if c.rng.random() < 0.72:
        x = far_edge
        while (x - image_edge) * side < 0:
            width = c.w * c.rng.uniform(0.1, 0.35) * (0.4 + abs(x - street.vx) / c.w)
            nxt = x + side * width
            _draw_building(c, street, side, x, nxt)
            x = nxt
    else:
        _draw_park(c, street, side, far_edge, image_edge)
    if c.rng.random() < 0.3:
        _draw_barrier(c, street, side, far_edge, image_edge)


def _draw_park(c: _Canvas, street: _Street, side: int, far_edge: float, image_edge: float) -> None:
    outer = street.outer_right if side > 0 else street.outer_left
    # Grass above the sidewalk's outer edge, trees behind it.
    tree_line = street.horizon - c.h * c.rng.uniform(0.05, 0.25)
    x = far_edge
    while (x - image_edge) * side < 0:
        r = c.w * c.rng.uniform(0.05, 0.14) * (0.5 + abs(x - street.vx) / c.w)
        c.ellipse(x, tree_line + c.rng.uniform(-r, r), r, r * c.rng.uniform(0.8, 1.4), VEGETATION, c.jitter((70, 110, 40), 18))
        x += side * r * 1.2
    y_bottom = c.h + 1
    x_bottom = street.x_at(y_bottom, side * outer)
    grass = c.jitter((120, 150, 80), 15)
    c.poly([(far_edge, street.horizon), (image_edge, street.horizon), (image_edge, y_bottom), (x_bottom, y_bottom),
            (street.vx, street.horizon)], TERRAIN, grass)


def _draw_barrier(c: _Canvas, street: _Street, side: int, far_edge: float, image_edge: float) -> None:
    """A low wall or fence along the sidewalk's outer edge."""
    rise = c.rng.uniform(0.1, 0.3)

    def rows_at(x):
        """(top, bottom) rows of the barrier at column x."""
        dist, bottom = _facade_lines(street, side, x)
        return bottom - rise * dist, bottom

    xa, xb = far_edge, image_edge
    (top_a, bottom_a), (top_b, bottom_b) = rows_at(xa), rows_at(xb)
    if c.rng.random() < 0.5:
        c.poly([(xa, top_a), (xb, top_b), (xb, bottom_b), (xa, bottom_a)], WALL, c.jitter((150, 140, 125), 20))
        return
    # Fence: posts and two rails; the gaps show what is behind.
    color = c.jitter((110, 100, 90), 20)
    for x in np.linspace(xa, xb, int(c.rng.integers(5, 14))):
        top, bottom = rows_at(x)
        half = 0.6 + 0.02 * abs(x - street.vx)
        c.rect(x - half, top, x + half, bottom, FENCE, color)
    for frac in (0.15, 0.85):
        ya, yb = top_a + (bottom_a - top_a) * frac, top_b + (bottom_b - top_b) * frac
        ta, tb = 0.6 + 0.03 * (bottom_a - street.horizon), 0.6 + 0.03 * (bottom_b - street.horizon)
        c.poly([(xa, ya - ta), (xb, yb - tb), (xb, yb + tb), (xa, ya + ta)], FENCE, color)


def _draw_car(c: _Canvas, street: _Street, x: float, y: float) -> None:
    s = street.scale(y)
    kind = c.rng.choice([CAR] * 8 + [TRUCK, BUS])
    w = c.w * s * {CAR: 0.42, TRUCK: 0.55, BUS: 0.6}[kind]
    h = w * {CAR: 0.75, TRUCK: 1.15, BUS: 1.05}[kind]
    color = c.jitter(c.rng.choice([(30, 30, 35), (200, 200, 205), (150, 20, 20), (30, 50, 120), (120, 120, 125),
                                   (230, 230, 230), (60, 90, 60), (200, 170, 40)]), 12)
    if kind == BUS:
        color = c.jitter((200, 60, 40) if c.rng.random() < 0.5 else (230, 200, 40), 15)
    # Wheels, body, cabin, glass, lights: all one class.
    wheel = (20, 20, 20)
    c.rect(x - w * 0.45, y - h * 0.18, x - w * 0.28, y, kind, wheel)
    c.rect(x + w * 0.28, y - h * 0.18, x + w * 0.45, y, kind, wheel)
    body_top = y - h * (0.55 if kind == CAR else 0.95)
    c.rect(x - w / 2, body_top, x + w / 2, y - h * 0.1, kind, color)
    if kind == CAR:
        c.poly([(x - w * 0.42, body_top), (x - w * 0.32, y - h), (x + w * 0.32, y - h), (x + w * 0.42, body_top)], kind, color)
        c.paint([(x - w * 0.36, body_top - h * 0.03), (x - w * 0.28, y - h * 0.93), (x + w * 0.28, y - h * 0.93),
                 (x + w * 0.36, body_top - h * 0.03)], (40, 50, 60))
    else:
        c.paint([(x - w * 0.42, y - h * 0.9), (x + w * 0.42, y - h * 0.9), (x + w * 0.42, y - h * 0.6), (x - w * 0.42, y - h * 0.6)],
                (40, 50, 60))
    for sign in (-1, 1):
        lx = x + sign * w * 0.4
        c.paint([(lx - w * 0.05, y - h * 0.35), (lx + w * 0.05, y - h * 0.35), (lx + w * 0.05, y - h * 0.27),
                 (lx - w * 0.05, y - h * 0.27)], (210, 30, 30))


def _draw_person(c: _Canvas, street: _Street, x: float, y: float) -> None:
    h = c.h * 0.75 * street.scale(y) * c.rng.uniform(0.85, 1.1)
    w = h * 0.28
    clothes = c.jitter(c.rng.choice([(40, 40, 60), (150, 30, 40), (60, 90, 140), (200, 200, 190), (90, 70, 50)]), 20)
    legs = c.jitter((40, 40, 50), 15)
    step = c.rng.uniform(-0.12, 0.12) * w
    c.rect(x - w * 0.35 - step, y - h * 0.48, x - w * 0.05 - step, y, PERSON, legs)
    c.rect(x + w * 0.05 + step, y - h * 0.48, x + w * 0.35 + step, y, PERSON, legs)
    c.poly([(x - w * 0.5, y - h * 0.82), (x + w * 0.5, y - h * 0.82), (x + w * 0.4, y - h * 0.45), (x - w * 0.4, y - h * 0.45)],
           PERSON, clothes)
    c.ellipse(x, y - h * 0.9, w * 0.22, h * 0.09, PERSON, c.jitter((210, 170, 140), 25))


def _draw_pole(c: _Canvas, street: _Street, x: float, y: float) -> None:
    s = street.scale(y)
    h, w = c.h * 1.1 * s, max(1.0, c.w * 0.012 * s)
    top = y - h
    c.rect(x - w, top, x + w, y, POLE, c.jitter((120, 120, 120), 15))
    kind = c.rng.random()
    if kind < 0.35:  # traffic sign: a disc or a triangle, plate facing us
        r = max(2.0, c.w * 0.05 * s)
        color = c.jitter(c.rng.choice([(200, 30, 30), (30, 70, 170), (230, 200, 30)]), 15)
        if c.rng.random() < 0.5:
            c.ellipse(x, top + r, r, r, SIGN, color)
            c.ellipse(x, top + r, r * 0.65, r * 0.65, SIGN, (235, 235, 235))  # painted face, still the sign
        else:
            c.poly([(x - r, top), (x + r, top), (x, top + 1.8 * r)], SIGN, color)
    elif kind < 0.65:  # traffic light: dark housing with three lamps, one lit
        bw, bh = max(2.0, c.w * 0.03 * s), max(4.0, c.w * 0.09 * s)
        c.rect(x - bw, top, x + bw, top + bh, LIGHT, c.jitter((35, 35, 30), 8))
        lit = c.rng.integers(3)
        for i, color in enumerate(((230, 40, 30), (240, 180, 20), (40, 210, 80))):
            cy = top + bh * (i + 0.5) / 3
            lamp = color if i == lit else (60, 60, 55)
            c.paint([(x - bw * 0.6, cy - bh * 0.12), (x + bw * 0.6, cy - bh * 0.12), (x + bw * 0.6, cy + bh * 0.12),
                     (x - bw * 0.6, cy + bh * 0.12)], lamp)


def _draw_tree(c: _Canvas, street: _Street, x: float, y: float) -> None:
    s = street.scale(y)
    h = c.h * 1.2 * s
    trunk = max(1.0, c.w * 0.015 * s)
    c.rect(x - trunk, y - h * 0.6, x + trunk, y, VEGETATION, c.jitter((90, 70, 45), 12))
    green = c.jitter((70, 115, 40), 18)
    for _ in range(3):
        c.ellipse(x + c.rng.normal(0, h * 0.1), y - h * c.rng.uniform(0.65, 0.85), h * c.rng.uniform(0.15, 0.25),
                  h * c.rng.uniform(0.15, 0.22), VEGETATION, c.jitter(green, 10))


def _draw_objects(c: _Canvas, street: _Street) -> None:
    """Cars on the road, people, poles and trees on the sidewalks; painted far to near so near ones occlude."""
    objects = []
    for _ in range(c.rng.integers(0, 5)):
        y = street.horizon + street.depth * c.rng.uniform(0.12, 0.9)
        lane = c.rng.uniform(-street.road_left * 0.7, street.road_right * 0.7)
        objects.append((y, _draw_car, street.x_at(y, lane)))
    for draw, count, reach in ((_draw_person, c.rng.integers(0, 5), (0.1, 0.75)), (_draw_pole, c.rng.integers(1, 5), (0.05, 0.8)),
                               (_draw_tree, c.rng.integers(0, 3), (0.05, 0.6))):
        for _ in range(count):
            y = street.horizon + street.depth * c.rng.uniform(*reach)
            side = c.rng.choice((-1, 1))
            road, outer = (street.road_right, street.outer_right) if side > 0 else (street.road_left, street.outer_left)
            spread = side * (road + (outer - road) * c.rng.uniform(0.1, 0.9))
            objects.append((y, draw, street.x_at(y, spread)))
    for y, draw, x in sorted(objects, key=lambda o: o[0]):
        draw(c, street, x, y)


def _draw_ego_vehicle(c: _Canvas) -> None:
    """The bonnet at the bottom edge, as in Cityscapes frames; labelled ignore."""
    top = c.h * c.rng.uniform(0.88, 0.95)
    bulge = c.h * c.rng.uniform(0.02, 0.05)
    c.poly([(-1, c.h + 1), (-1, top + bulge), (c.w * 0.5, top), (c.w + 1, top + bulge), (c.w + 1, c.h + 1)], IGNORE_INDEX,
           c.jitter((45, 45, 50), 10))


def _render(c: _Canvas) -> np.ndarray:
    """Texture the albedo per class, shade it smoothly, light the scene and soften edges like a lens."""
    h, w, rng = c.h, c.w, c.rng
    low = cv2.resize(rng.standard_normal((max(2, h // 24), max(2, w // 24)), np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    grain = rng.standard_normal((h, w), np.float32)
    exposure = np.float32(rng.uniform(0.75, 1.15))
    gain = (1.0 + cv2.LUT(c.mask, _SHADING) * low) * exposure
    offset = cv2.LUT(c.mask, _GRAIN) * grain * exposure
    photo = c.albedo * gain[..., None] + offset[..., None]
    return cv2.GaussianBlur(np.clip(photo, 0, 255, out=photo).astype(np.uint8), (3, 3), 0.6)


def synthetic_scene(index: int, seed: int = 0, size: tuple[int, int] = (256, 256)) -> tuple[np.ndarray, np.ndarray]:
    """Scene `index` of the city with `seed`: an RGB uint8 photo (H, W, 3) and its trainId mask (H, W), 255 = ignore.

    The scene depends only on (seed, index, size), so `write_synthetic`'s file `i.jpg` is scene i.
    """
    height, width = _check_scene_size(size)
    canvas = _Canvas(height, width, np.random.default_rng([int(seed), int(index)]))
    street = _Street(canvas)
    _draw_sky(canvas, street)
    _draw_background(canvas, street)
    _draw_ground(canvas, street)
    _draw_side(canvas, street, -1)
    _draw_side(canvas, street, 1)
    _draw_objects(canvas, street)
    if canvas.rng.random() < 0.25:
        _draw_ego_vehicle(canvas)
    return _render(canvas), canvas.mask


def write_synthetic(out, count: int, seed: int = 0, size: tuple[int, int] = (256, 256), quality: int = 90) -> list[Path]:
    """Write `count` scenes to `out/1.jpg .. out/N.jpg` as composites H x 2W: photo left, official label colours right.

    `out` must be missing, empty or an earlier synthetic set (which is replaced whole): a folder holding
    anything else, or a synthetic file changed since it was written (a real pair copied over `1.jpg`), is
    refused, since real pairs carry the same `N.jpg` names.
    """
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise SegkitError(f"count must be a positive integer, got {count!r}")
    _check_scene_size(size)
    out = files.check_writable_folder(out)
    ledger = _earlier_set(out)
    earlier = list(ledger.digests)
    names = [f"{i}.jpg" for i in range(1, count + 1)]
    # Full-resolution chroma (4:4:4): with the usual 4:2:0, label colours bleed two pixels at every edge.
    jpeg_params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    paths = []
    with files.writing_into(out, "folder"):
        out.mkdir(parents=True, exist_ok=True)
        for first in range(1, count + 1, _BATCH):
            batch = {names[i - 1]: _encoded_scene(i, seed, size, jpeg_params) for i in range(first, min(first + _BATCH, count + 1))}
            paths += ledger.write(batch)
        for stale in set(earlier) - set(names):
            (out / stale).unlink(missing_ok=True)
        ledger.settle(names)
    return paths


def _encoded_scene(index: int, seed: int, size, jpeg_params) -> bytes:
    """Scene `index` as the JPEG bytes of its composite (photo | label colours)."""
    photo, mask = synthetic_scene(index, seed, size)
    composite = np.concatenate([photo, _LABEL_COLORS[mask]], axis=1)
    ok, data = cv2.imencode(".jpg", composite[..., ::-1], jpeg_params)
    if not ok:
        raise SegkitError(f"could not encode synthetic scene {index} as JPEG")
    return data.tobytes()


def synthetic_city(out, count: int, seed: int = 0) -> Path:
    """`out` holding `count` pairs of seed `seed` (256x256 halves), generated on first use; an existing `out` is taken as it is.

    The pairs are written into a temporary folder that is renamed into place: an interrupted run leaves no partial set.
    """
    out = Path(out)
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating the synthetic city ({count} pairs, seed {seed}) -> {out}")
    with files.atomic_path(out) as partial:
        write_synthetic(partial, count, seed=seed)
    return out


def _earlier_set(out: Path) -> files.Ledger:
    """The ledger of the synthetic set already in `out` (empty when it is missing or empty); anything else is refused."""
    ledger = files.Ledger(out, MARKER, "segkit_synthetic")
    if not out.is_dir():
        return ledger
    for name in [*ledger.digests, MARKER]:
        files.remove_abandoned(out / name)  # half-written files of a synth run that was killed
    entries = {entry.name for entry in out.iterdir()} - {MARKER}
    foreign = sorted(entries - set(ledger.digests))
    if foreign:
        raise SegkitError(
            f"{out}: holds files not written by segkit data synth ({_some(foreign)}); give an empty or new folder"
        )
    changed = sorted(ledger.foreign(entries), key=_natural)
    if changed:
        them = "it" if len(changed) == 1 else "them"
        raise SegkitError(f"{out}: {_some(changed)} changed since segkit data synth wrote {them}; "
                          f"move {them} away or give an empty or new folder")
    return ledger


def _some(names) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _natural(name: str):
    stem = Path(name).stem
    return (0, int(stem)) if stem.isdigit() else (1, name)


def _check_scene_size(size) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise SegkitError(f"size must be (height, width), got {size!r}") from None
    if height < 32 or width < 32:
        raise SegkitError(f"size must be at least 32 x 32, got {height} x {width}")
    if max(height, width) > MAX_SIDE:
        raise SegkitError(f"size must be at most {MAX_SIDE} x {MAX_SIDE}, got {height} x {width}")
    return height, width
