"""A seeded, procedurally drawn stand-in for Market-1501 (same folders, file names and 128x64 JPEGs), filed in any
layout by that layout's writer (reid/data/layouts/), so the toolkit runs end to end without a real download.
"""
import copy
import json
import os
import shutil
from collections import namedtuple
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reid.data.layouts.common import FrameSpec

HEIGHT, WIDTH = 128, 64          # Market-1501's native crop size (H x W)
SCALE = 2                        # draw at twice the size, then downsample: anti-aliased edges for free
MARKER = '.synthetic_reid.json'  # written into the root so a re-run knows the folder is ours to overwrite
FOLDERS = ('bounding_box_train', 'bounding_box_test', 'query', 'gt_bbox')
FORMAT_VERSION = 1
BOXES_FILE = 'person_boxes.csv'  # optional (boxes=True): path,x0,y0,x1,y1 of each drawn person, for tests

# Sizes. Counts per (id, camera) are drawn around these totals; 'market' matches Market-1501's published counts.
PRESETS = {
    'tiny': dict(train_ids=12, train_images=60, test_ids=12, queries=30, gallery_real=60, distractors=8,
                 junk=8, gt_per_pair=(1, 2), gt_train_per_id=1, max_cams=4),
    'demo': dict(train_ids=100, train_images=1200, test_ids=100, queries=400, gallery_real=1400,
                 distractors=200, junk=250, gt_per_pair=(2, 3), gt_train_per_id=1, max_cams=6),
    'market': dict(train_ids=751, train_images=12936, test_ids=750, queries=3368, gallery_real=13120,
                   distractors=2793, junk=3819, gt_per_pair=(1, 3), gt_train_per_id=1, max_cams=6),
}

# Small palettes on purpose: many identities share any single cue, only the combination is (nearly) unique.
UPPER = [(200, 30, 35), (35, 70, 190), (40, 140, 60), (230, 200, 40), (235, 235, 230), (25, 25, 28),
         (128, 128, 132), (120, 50, 150), (235, 120, 30), (230, 130, 170), (25, 35, 90), (20, 140, 140)]
LOWER = [(25, 25, 28), (50, 75, 120), (110, 110, 115), (190, 170, 120), (225, 225, 220), (100, 70, 45),
         (45, 80, 50), (160, 35, 40)]
SKIN = [(240, 205, 180), (210, 165, 125), (160, 115, 80), (100, 70, 50)]
HAIR = [(20, 18, 18), (70, 45, 30), (200, 170, 100), (165, 165, 165), (140, 60, 30)]
SHOES = [(20, 20, 20), (230, 230, 230), (110, 70, 40), (180, 30, 30), (40, 60, 150)]
UPPER_PATTERNS = ('solid', 'hstripes', 'vstripes', 'checks', 'jacket')
LOWER_KINDS = ('trousers', 'shorts', 'skirt')
ACCESSORIES = ('none', 'backpack', 'bag', 'hat')

ImageSpec = namedtuple('ImageSpec', 'folder name cam mode look_key image_key')
Look = namedtuple('Look', 'upper upper2 pattern sleeves lower lower_kind shoes skin hair long_hair '
                          'accessory acc_colour bag_side height width')
Camera = namedtuple('Camera', 'background scale foot_y x_shift blur gain cast occlusion front_prob')


def _rng(*key):
    return np.random.default_rng([int(k) for k in key])


@lru_cache(maxsize=None)
def identity_look(seed, kind, number):
    """Return the appearance of one identity (kind 1) or one distractor/junk person (kinds 4, 5)."""
    r = _rng(seed, kind, number)
    upper = int(r.integers(len(UPPER)))
    pattern = int(r.choice(len(UPPER_PATTERNS), p=[0.4, 0.15, 0.15, 0.15, 0.15]))
    upper2 = int((upper + r.integers(1, len(UPPER))) % len(UPPER))  # a second colour that differs
    return Look(upper=upper, upper2=upper2, pattern=pattern, sleeves=int(r.integers(2)),
                lower=int(r.integers(len(LOWER))), lower_kind=int(r.choice(3, p=[0.6, 0.25, 0.15])),
                shoes=int(r.integers(len(SHOES))), skin=int(r.integers(len(SKIN))), hair=int(r.integers(len(HAIR))),
                long_hair=bool(r.random() < 0.3), accessory=int(r.choice(4, p=[0.4, 0.25, 0.2, 0.15])),
                acc_colour=int(r.integers(len(UPPER))), bag_side=int(r.choice((-1, 1))),
                height=float(r.uniform(0.86, 1.0)), width=float(r.uniform(0.82, 1.22)))


@lru_cache(maxsize=None)
def camera_setup(seed, cam):
    """Return the fixed viewing conditions of one camera: background, framing, blur, light, occlusion."""
    r = _rng(seed, 2, cam)
    return Camera(background=_background_panorama(r), scale=float(r.uniform(0.74, 0.93)),
                  foot_y=float(r.uniform(0.94, 0.995)), x_shift=float(r.uniform(-0.08, 0.08)),
                  blur=float(r.uniform(0.0, 0.9)), gain=float(r.uniform(0.7, 1.2)),
                  cast=tuple(float(c) for c in r.uniform(0.86, 1.14, 3)), occlusion=float(r.uniform(0.0, 0.3)),
                  front_prob=float(r.uniform(0.25, 0.75)))


def _muted(r, tint=35):
    """A greyish colour: real street scenes are mostly dull, and the clothes should stand out from them."""
    return np.clip(r.uniform(50, 210) + r.uniform(-tint, tint, 3), 0, 255)


def _background_panorama(r):
    """A scene twice as wide as a crop: each image crops it at its own offset, as if the person moved."""
    h, w = HEIGHT * SCALE, 2 * WIDTH * SCALE
    wall, ground, accent = (_muted(r) for _ in range(3))
    horizon = int(h * r.uniform(0.55, 0.8))
    yy = np.linspace(0, 1, h)[:, None, None]
    img = np.empty((h, w, 3))
    img[:] = wall * (1.0 + r.uniform(-0.25, 0.25) * (yy - 0.5))
    img[horizon:] = ground
    texture = int(r.integers(4))
    period = int(r.integers(12, 40))
    xs, ys = np.arange(w), np.arange(h)
    if texture == 0:     # windows / facade bars
        bars = (xs % period) < period // 2
        img[:horizon, bars] = 0.6 * img[:horizon, bars] + 0.4 * accent
    elif texture == 1:   # brick / tile grid on the wall
        lines_y = (ys[:horizon] % period) < 3
        lines_x = (xs % (2 * period)) < 3
        img[:horizon][lines_y] = accent
        img[:horizon, lines_x] = 0.5 * img[:horizon, lines_x] + 0.5 * accent
    elif texture == 2:   # shop fronts: random blocks
        x = 0
        while x < w:
            bw = int(r.integers(20, 70))
            top = int(r.integers(0, horizon // 2))
            img[top:horizon, x:x + bw] = _muted(r, tint=50)
            x += bw + int(r.integers(2, 12))
    else:                # paving stripes on the ground, plain wall
        stripes = (ys[horizon:] // max(4, period // 3)) % 2 == 0
        img[horizon:][stripes] = 0.7 * img[horizon:][stripes] + 0.3 * accent
    img += r.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _pattern_fill(look, size, unit, front, r):
    """RGB array of the upper garment's pattern over a (h, w) box."""
    h, w = size
    a = np.array(UPPER[look.upper], float)
    b = np.array(UPPER[look.upper2], float)
    period = max(6, int(round(0.05 * unit)))
    ys, xs = np.mgrid[0:h, 0:w]
    phase = int(r.integers(period))
    kind = UPPER_PATTERNS[look.pattern]
    if kind == 'hstripes':
        sel = ((ys + phase) // (period // 2)) % 2 == 1
    elif kind == 'vstripes':
        sel = ((xs + phase) // (period // 2)) % 2 == 1
    elif kind == 'checks':
        sel = (((ys + phase) // period) + ((xs + phase) // period)) % 2 == 1
    elif kind == 'jacket' and front:   # an open jacket: the shirt shows as a band down the middle
        sel = np.abs(xs - w / 2) < 0.18 * w
    else:                              # solid, or a jacket seen from the back
        sel = np.zeros((h, w), bool)
    out = np.where(sel[..., None], b, a)
    return out.astype(np.uint8)


# Where and how a person is drawn: centre x, head top y and height `unit` in pixels of the drawing, the walking
# phase (-1..1: legs and arms swing with it), and whether the person faces the camera.
Pose = namedtuple('Pose', 'cx top unit phase front')


def draw_person(img, look, pose, r):
    """Draw one pedestrian of `look` at `pose` on PIL image `img`; `r` draws the garment pattern's phase."""
    d = ImageDraw.Draw(img)
    if look.long_hair and pose.front:   # long hair behind the shoulders
        d.rectangle([pose.cx - 0.055 * pose.unit, _at(pose, 0.04), pose.cx + 0.055 * pose.unit, _at(pose, 0.23)],
                    fill=HAIR[look.hair])
    _draw_legs(d, look, pose)
    _draw_torso(img, look, pose, r)
    _draw_arms(d, look, pose)
    _draw_head(d, look, pose)
    _draw_accessory(d, look, pose)


def _at(pose, f):
    """The y of a point a share `f` of the person's height below the head top."""
    return pose.top + f * pose.unit


def _draw_legs(d, look, pose):
    """Legs (one steps forward, the other back), shoes, and the lower garment's top (or a skirt)."""
    cx, unit, bw = pose.cx, pose.unit, look.width
    skin, lower = SKIN[look.skin], LOWER[look.lower]
    wh = 0.095 * unit * bw
    stride = pose.phase * 0.09 * unit
    leg_w = max(2, int(0.075 * unit * bw))
    knee = 0.45 if LOWER_KINDS[look.lower_kind] == 'shorts' else 0.0
    for s, step in ((-1, stride), (1, -stride)):
        hip = (cx + s * 0.05 * unit * bw, _at(pose, 0.50))
        foot = (cx + s * 0.045 * unit * bw + step, _at(pose, 0.955))
        if LOWER_KINDS[look.lower_kind] == 'trousers':
            d.line([hip, foot], fill=lower, width=leg_w)
        else:
            d.line([hip, foot], fill=skin, width=max(2, int(leg_w * 0.8)))
            if knee:
                mid = (hip[0] + knee * (foot[0] - hip[0]), hip[1] + knee * (foot[1] - hip[1]))
                d.line([hip, mid], fill=lower, width=leg_w)
        d.ellipse([foot[0] - 0.04 * unit, _at(pose, 0.94), foot[0] + 0.05 * unit, _at(pose, 0.995)],
                  fill=SHOES[look.shoes])
    if LOWER_KINDS[look.lower_kind] == 'skirt':
        d.polygon([(cx - wh, _at(pose, 0.49)), (cx + wh, _at(pose, 0.49)), (cx + 1.45 * wh, _at(pose, 0.72)),
                   (cx - 1.45 * wh, _at(pose, 0.72))], fill=lower)
    else:
        d.polygon([(cx - wh, _at(pose, 0.48)), (cx + wh, _at(pose, 0.48)), (cx + wh, _at(pose, 0.57)),
                   (cx - wh, _at(pose, 0.57))], fill=lower)


def _draw_torso(img, look, pose, r):
    """The torso, filled with the upper garment's pattern through a mask."""
    cx, unit = pose.cx, pose.unit
    sh, wh = 0.12 * unit * look.width, 0.095 * unit * look.width
    poly = [(cx - sh, _at(pose, 0.155)), (cx + sh, _at(pose, 0.155)), (cx + wh, _at(pose, 0.50)),
            (cx - wh, _at(pose, 0.50))]
    x0, y0 = int(cx - sh) - 1, int(_at(pose, 0.155)) - 1
    x1, y1 = int(cx + sh) + 2, int(_at(pose, 0.50)) + 2
    mask = Image.new('L', (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).polygon([(px - x0, py - y0) for px, py in poly], fill=255)
    fill = Image.fromarray(_pattern_fill(look, (y1 - y0, x1 - x0), unit, pose.front, r))
    img.paste(fill, (x0, y0), mask)


def _draw_arms(d, look, pose):
    """Arms swinging against the legs: sleeves of the upper garment's colour, or bare from the elbow."""
    unit, skin, upper = pose.unit, SKIN[look.skin], UPPER[look.upper]
    sh = 0.12 * unit * look.width
    arm_w = max(2, int(0.055 * unit * look.width))
    for s in (-1, 1):
        angle = np.deg2rad(6 + s * pose.phase * 22)
        shoulder = (pose.cx + s * (sh - 0.025 * unit), _at(pose, 0.175))
        length = 0.33 * unit
        hand = (shoulder[0] + s * length * np.sin(angle), shoulder[1] + length * np.cos(angle))
        if look.sleeves:   # long sleeves
            d.line([shoulder, hand], fill=upper, width=arm_w)
        else:
            d.line([shoulder, hand], fill=skin, width=max(2, int(arm_w * 0.85)))
            elbow = (shoulder[0] + 0.4 * (hand[0] - shoulder[0]), shoulder[1] + 0.4 * (hand[1] - shoulder[1]))
            d.line([shoulder, elbow], fill=upper, width=arm_w)
        d.ellipse([hand[0] - 0.022 * unit, hand[1] - 0.022 * unit, hand[0] + 0.022 * unit, hand[1] + 0.022 * unit],
                  fill=skin)


def _draw_head(d, look, pose):
    """Neck, hair, and the face (from the front) or the back of the head."""
    cx, unit, skin, hair = pose.cx, pose.unit, SKIN[look.skin], HAIR[look.hair]
    d.rectangle([cx - 0.02 * unit, _at(pose, 0.11), cx + 0.02 * unit, _at(pose, 0.165)], fill=skin)
    d.ellipse([cx - 0.05 * unit, _at(pose, -0.005), cx + 0.05 * unit, _at(pose, 0.085)], fill=hair)
    if pose.front:
        d.ellipse([cx - 0.042 * unit, _at(pose, 0.03), cx + 0.042 * unit, _at(pose, 0.128)], fill=skin)
    else:
        d.ellipse([cx - 0.046 * unit, _at(pose, 0.02), cx + 0.046 * unit, _at(pose, 0.125)], fill=hair)
        if look.long_hair:
            d.rectangle([cx - 0.05 * unit, _at(pose, 0.06), cx + 0.05 * unit, _at(pose, 0.24)], fill=hair)


def _draw_accessory(d, look, pose):
    """A hat, a backpack (straps from the front) or a shoulder bag."""
    cx, unit, bw, acc = pose.cx, pose.unit, look.width, UPPER[look.acc_colour]
    sh, wh = 0.12 * unit * bw, 0.095 * unit * bw
    acc_kind = ACCESSORIES[look.accessory]
    if acc_kind == 'hat':
        d.ellipse([cx - 0.053 * unit, _at(pose, -0.015), cx + 0.053 * unit, _at(pose, 0.06)], fill=acc)
        d.rectangle([cx - 0.06 * unit, _at(pose, 0.035), cx + 0.06 * unit, _at(pose, 0.05)], fill=acc)
    elif acc_kind == 'backpack':
        if pose.front:   # only the straps and the pack's edges show
            for s in (-1, 1):
                d.line([(cx + s * 0.07 * unit * bw, _at(pose, 0.16)), (cx + s * 0.075 * unit * bw, _at(pose, 0.40))],
                       fill=acc, width=max(2, int(0.02 * unit)))
            d.rectangle([cx + sh - 0.005 * unit, _at(pose, 0.19), cx + sh + 0.02 * unit, _at(pose, 0.42)], fill=acc)
            d.rectangle([cx - sh - 0.02 * unit, _at(pose, 0.19), cx - sh + 0.005 * unit, _at(pose, 0.42)], fill=acc)
        else:
            d.rounded_rectangle([cx - 0.1 * unit * bw, _at(pose, 0.19), cx + 0.1 * unit * bw, _at(pose, 0.45)],
                                radius=max(1, int(0.02 * unit)), fill=acc)
    elif acc_kind == 'bag':
        s = look.bag_side if pose.front else -look.bag_side
        d.line([(cx - s * 0.08 * unit * bw, _at(pose, 0.16)), (cx + s * 0.11 * unit * bw, _at(pose, 0.46))], fill=acc,
               width=max(2, int(0.018 * unit)))
        bx = cx + s * (wh + 0.02 * unit)
        d.rectangle([bx - 0.045 * unit, _at(pose, 0.44), bx + 0.045 * unit, _at(pose, 0.58)], fill=acc)


def _camera_view(seed, cam, r):
    """Background crop (PIL, drawing size) of camera `cam` at a random pan offset."""
    pano = camera_setup(seed, cam).background
    off = int(r.integers(0, pano.shape[1] - WIDTH * SCALE + 1))
    return Image.fromarray(pano[:, off:off + WIDTH * SCALE].copy())


def render_image(seed, spec):
    """Return the PIL image (128x64 RGB) described by an ImageSpec; pure function of (seed, spec)."""
    return _render(seed, spec)[0]


def render_image_and_box(seed, spec):
    """Return (the image render_image gives, the drawn person's box): (x0, y0, x1, y1) in pixels of the saved
    image (x1, y1 exclusive) around every pixel the person's drawing covers, before occluders (None when the
    person is wholly outside the frame)."""
    return _render(seed, spec, with_box=True)


def _person_box(size, look, pose, r):
    """Box (x0, y0, x1, y1) at drawing scale of the person drawn alone on a black canvas (no palette colour is
    black, and PIL draws without anti-aliasing), or None. `r` must be a copy: the drawing consumes it."""
    canvas = Image.new('RGB', size, (0, 0, 0))
    draw_person(canvas, look, pose, r)
    mask = np.asarray(canvas).any(axis=2)
    if not mask.any():
        return None
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _render(seed, spec, with_box=False):
    """(image, box or None) of render_image / render_image_and_box: one drawing, so the two never differ."""
    cam_set = camera_setup(seed, spec.cam)
    r = _rng(seed, 3, *spec.image_key)
    img = _camera_view(seed, spec.cam, r)
    H, W = HEIGHT * SCALE, WIDTH * SCALE
    look = identity_look(seed, *spec.look_key)
    scale = cam_set.scale * look.height * (1 + r.normal(0, 0.04))
    cx = W / 2 + (cam_set.x_shift + r.normal(0, 0.04)) * W
    foot = (cam_set.foot_y + r.normal(0, 0.015)) * H
    if spec.mode == 'distractor':   # a bad detection: person badly framed, too small or cut off
        scale *= r.uniform(0.45, 1.5)
        cx = W * r.uniform(0.1, 0.9)
        foot = H * r.uniform(0.6, 1.5)
    elif spec.mode == 'junk':       # mostly background, maybe a fragment of someone
        scale *= r.uniform(1.6, 3.0)
        cx = W * r.uniform(-0.3, 1.3)
        foot = H * r.uniform(1.2, 2.5)
    unit = scale * H
    front = bool(r.random() < cam_set.front_prob)
    phase = float(r.uniform(-1, 1))
    pose = Pose(cx, foot - unit, unit, phase, front)
    box = _person_box(img.size, look, pose, copy.deepcopy(r)) if with_box else None
    draw_person(img, look, pose, r)

    if r.random() < cam_set.occlusion:   # something in front: a pole or a car bonnet / bench
        d = ImageDraw.Draw(img)
        colour = tuple(int(c) for c in r.integers(20, 230, 3))
        if r.random() < 0.5:
            x = W * r.uniform(0.15, 0.85)
            d.rectangle([x - W * r.uniform(0.04, 0.1), 0, x + W * r.uniform(0.04, 0.1), H], fill=colour)
        else:
            d.rectangle([0, H * r.uniform(0.68, 0.85), W, H], fill=colour)

    img = img.resize((WIDTH, HEIGHT), Image.BILINEAR, reducing_gap=None)
    if box is not None:  # drawing scale -> saved pixels, rounded outwards
        box = (box[0] // SCALE, box[1] // SCALE, -(-box[2] // SCALE), -(-box[3] // SCALE))
    if r.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if box is not None:
            box = (WIDTH - box[2], box[1], WIDTH - box[0], box[3])
    radius = cam_set.blur + r.uniform(0, 0.3)
    if radius > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    pix = np.asarray(img, dtype=np.float32)
    gain = cam_set.gain * (1 + r.normal(0, 0.06))
    cast = np.array(cam_set.cast) * (1 + r.normal(0, 0.025, 3))
    pix = pix * gain * cast + r.normal(0, r.uniform(2, 6), pix.shape)
    return Image.fromarray(np.clip(pix + 0.5, 0, 255).astype(np.uint8)), box


def _split_total(r, total, n, lo, hi):
    """n integers in [lo, hi] that sum to `total`, spread unevenly (Dirichlet weights)."""
    if not n * lo <= total <= n * hi:
        raise ValueError(f'cannot split {total} into {n} parts of {lo}..{hi}')
    counts = np.full(n, lo, dtype=np.int64)
    rest = total - n * lo
    while rest:
        room = hi - counts
        idx = np.flatnonzero(room > 0)
        add = np.minimum(r.multinomial(rest, r.dirichlet(np.full(len(idx), 3.0))), room[idx])
        counts[idx] += add
        rest -= int(add.sum())
    return counts


def _market_name(pid, cam, seq, frame, box):
    return f'{"-1" if pid < 0 else f"{pid:04d}"}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg'


class _Namer:
    """Unique Market-style names: a track per (id, camera) with its own sequence and advancing frames."""

    def __init__(self, r):
        self.r, self.used, self.tracks = r, set(), {}

    def name(self, pid, cam):
        r = self.r
        if pid <= 0 or (pid, cam) not in self.tracks:
            start = [int(r.integers(1, 7)), int(r.integers(0, 150000))]
            if pid <= 0:
                seq, frame = start
                return self._unique(pid, cam, seq, frame)
            self.tracks[pid, cam] = start
        track = self.tracks[pid, cam]
        track[1] += int(r.integers(5, 60))
        return self._unique(pid, cam, track[0], track[1])

    def _unique(self, pid, cam, seq, frame):
        box = int(self.r.integers(1, 9))
        while True:
            name = _market_name(pid, cam, seq, frame % 1000000, box)
            if name not in self.used:
                self.used.add(name)
                return name
            box = (box + 1) % 100
            frame += box == 0


def plan_dataset(size='demo', seed=0, n_cameras=6):
    """Return the list of ImageSpec to render: which file, which identity, which camera. Deterministic."""
    if size not in PRESETS:
        raise ValueError(f'size={size!r}: expected one of {", ".join(PRESETS)}')
    if not 2 <= n_cameras <= 99:
        raise ValueError(f'n_cameras={n_cameras}: need 2..99 cameras (queries must match in another camera)')
    p = PRESETS[size]
    r = _rng(seed, 0)
    max_cams = min(p['max_cams'], n_cameras)
    all_ids = r.permutation(np.arange(1, int((p['train_ids'] + p['test_ids']) * 1.002) + 2))
    train_ids = sorted(int(i) for i in all_ids[:p['train_ids']])
    test_ids = sorted(int(i) for i in all_ids[p['train_ids']:p['train_ids'] + p['test_ids']])
    namer = _Namer(r)
    specs = []

    def add(folder, pid, cam, mode, look_key):
        specs.append(ImageSpec(folder, namer.name(pid, cam), cam, mode, look_key, (len(specs),)))

    def cams_of(k):
        return sorted(int(c) + 1 for c in r.choice(n_cameras, k, replace=False))

    per_id = _split_total(r, p['train_images'], len(train_ids), 2, 10 * p['train_images'] // len(train_ids))
    for pid, n in zip(train_ids, per_id):
        cams = cams_of(int(min(n, r.integers(2, max_cams + 1))))
        for cam, m in zip(cams, _split_total(r, int(n), len(cams), 1, int(n))):
            for _ in range(m):
                add('bounding_box_train', pid, cam, 'person', (1, pid))
        for cam in r.choice(cams, p['gt_train_per_id']):
            add('gt_bbox', pid, int(cam), 'person', (1, pid))

    n_queries = int(np.clip(p['queries'], 2 * len(test_ids), max_cams * len(test_ids)))
    cams_per_id = _split_total(r, n_queries, len(test_ids), 2, max_cams)
    pairs = [(pid, cam) for pid, k in zip(test_ids, cams_per_id) for cam in cams_of(int(k))]
    gallery_per_pair = _split_total(r, max(p['gallery_real'], len(pairs)), len(pairs), 1, 12)
    for (pid, cam), m in zip(pairs, gallery_per_pair):
        add('query', pid, cam, 'person', (1, pid))
        for _ in range(m):
            add('bounding_box_test', pid, cam, 'person', (1, pid))
        for _ in range(int(r.integers(p['gt_per_pair'][0], p['gt_per_pair'][1] + 1))):
            add('gt_bbox', pid, cam, 'person', (1, pid))
    for i in range(p['distractors']):
        add('bounding_box_test', 0, int(r.integers(1, n_cameras + 1)), 'distractor', (4, i))
    for i in range(p['junk']):
        add('bounding_box_test', -1, int(r.integers(1, n_cameras + 1)), 'junk', (5, i))
    return specs


FORMATS = {'.jpg': ('JPEG', dict(quality=90)), '.png': ('PNG', {}), '.bmp': ('BMP', {})}


def _write_one(job):
    """Render and save one image (an ImageSpec) or tracklet frame (a FrameSpec); return (its relative path, the
    person's box or None: boxes are recorded for images only)."""
    root, seed, rel, spec, with_box = job
    fmt, kwargs = FORMATS[Path(rel).suffix]
    img, box = (render_frame(seed, spec), None) if isinstance(spec, FrameSpec) else _render(seed, spec, with_box)
    img.save(os.path.join(root, rel), fmt, **kwargs)
    return rel, box


def read_person_boxes(root):
    """Return {relative path: (x0, y0, x1, y1)} from the BOXES_FILE of a set written with boxes=True."""
    import csv

    path = Path(root) / BOXES_FILE
    if not path.is_file():
        raise ValueError(f'{path}: no person boxes here (generate the set with prepare.py --make-demo DIR --boxes)')
    with open(path, newline='') as f:
        return {row['path']: tuple(int(row[k]) for k in ('x0', 'y0', 'x1', 'y1')) for row in csv.DictReader(f)}


def _write_boxes(root, boxes):
    import csv

    tmp = Path(root) / (BOXES_FILE + '.tmp')
    with open(tmp, 'w', newline='') as f:
        out = csv.writer(f)
        out.writerow(['path', 'x0', 'y0', 'x1', 'y1'])
        out.writerows([rel, *box] for rel, box in sorted(boxes.items()) if box is not None)
    os.replace(tmp, Path(root) / BOXES_FILE)


def dataset_counts(specs):
    """Counts of images per folder and of identities, as make_dataset reports them."""
    counts = {f: 0 for f in FOLDERS}
    for s in specs:
        counts[s.folder] += 1
    def n_ids(folder):
        return len({s.look_key[1] for s in specs if s.folder == folder and s.mode == 'person'})
    counts.update(train_ids=n_ids('bounding_box_train'), test_ids=n_ids('query'),
                  distractors=sum(s.mode == 'distractor' for s in specs), junk=sum(s.mode == 'junk' for s in specs),
                  cameras=len({s.cam for s in specs}))
    return counts


def read_marker(root, marker=MARKER):
    """The generator's marker of a generated set (dict), or None when `root` is not one (`marker`: the file
    name of the kind of generated folder: a set's, or a clip's)."""
    path = Path(root) / marker
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def claim_folder(root, marker, params, entries, what):
    """Make `root` a generated folder of ours and return it (a Path): refuse (ValueError) a non-empty folder
    without `marker`, write the marker (incomplete first, so an interrupted run leaves a folder the next run
    may replace) and remove the `entries` a previous run wrote; `what` names the kind in the refusal."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f'{root}: exists and is not a folder')
    if root.is_dir() and any(root.iterdir()) and read_marker(root, marker) is None:
        raise ValueError(f'{root}: folder is not empty and is not a {what} (no {marker}); '
                         'pick an empty or new folder')
    root.mkdir(parents=True, exist_ok=True)
    (root / marker).write_text(json.dumps(dict(params, complete=False), indent=1))
    for entry in entries:
        if (root / entry).is_dir():
            shutil.rmtree(root / entry)
        elif (root / entry).exists():
            (root / entry).unlink()
    return root


def _people(specs):
    """{id: [spec]} of the drawn people (no distractors or junk), train and test, in plan order."""
    out = {}
    for s in specs:
        if s.mode == 'person':
            out.setdefault(s.look_key[1], []).append(s)
    return out


def drawn_set(size='tiny', seed=0, n_cameras=6):
    """Return the Drawn set (reid.data.layouts.common) a layout's writer files: the plan and its people."""
    from reid.data.layouts.common import Drawn

    specs = plan_dataset(size, seed, n_cameras)
    train_ids = sorted({s.look_key[1] for s in specs if s.folder == 'bounding_box_train'})
    test_ids = sorted({s.look_key[1] for s in specs if s.folder == 'query'})
    return Drawn(size, specs, _people(specs), train_ids, test_ids)


def plan_layout(layout, size='tiny', seed=0, n_cameras=None):
    """Return ([(relative path, ImageSpec)], {relative path: text}) of a generated set in `layout`'s format
    (the layout's own writer, reid/data/layouts/<layout>.py, with its number of cameras unless given)."""
    from reid.data.layouts import GENERATED, LAYOUTS

    if layout not in GENERATED:
        raise ValueError(f'layout={layout!r}: expected one of {", ".join(GENERATED)}')
    unit = LAYOUTS[layout]
    return unit.generate(drawn_set(size, seed, n_cameras or unit.cameras))


def make_dataset(root, size='demo', seed=0, n_cameras=6, workers=None, progress=None, boxes=False):
    """Write a synthetic Market-1501-style raw set under `root`; return its counts (images per folder, ids).

    Refuses (ValueError) a non-empty `root` that is not a previous generated set; a previous set is replaced
    (its four raw folders only: a `pytorch/` folder made by prepare.py is left alone).
    `workers`: processes (default: 1 for small sets, else the CPU count); the output does not depend on it.
    `boxes`: also write BOXES_FILE, each drawn person's box (the images are the same either way).
    """
    from reid.data.layouts import LAYOUTS

    drawn = drawn_set(size, seed, n_cameras)
    files, texts = LAYOUTS['market'].generate(drawn)
    params = dict(generator='synthetic.py', version=FORMAT_VERSION, size=size, seed=seed, n_cameras=n_cameras)
    plan = SetPlan(seed, files, texts, FOLDERS, params, dataset_counts(drawn.specs), boxes)
    return _write_set(root, plan, workers, progress, f'generating {size} set')


def make_layout(root, layout, size='tiny', seed=0, workers=None, progress=None, boxes=False):
    """Write a generated raw set in `layout`'s format under `root`; return counts per top-level entry (and, for
    a video layout, the number of tracklets).

    Same rules as make_dataset: a non-empty folder that is not a generated set is refused; a previous
    generated set is replaced (only the entries this layout writes). Boxes are for image layouts only.
    """
    files, texts = plan_layout(layout, size, seed)
    video = any(isinstance(spec, FrameSpec) for _, spec in files)
    if boxes and video:
        raise ValueError(f'--boxes: person boxes are written for image layouts only, not for {layout}')
    tops = sorted({rel.split('/')[0] for rel, _ in files} | {rel.split('/')[0] for rel in texts})
    counts = {top: sum(rel.split('/')[0] == top for rel, _ in files) for top in tops if top not in texts}
    if video:
        counts['tracklets'] = len({spec.track_key for _, spec in files})
    params = dict(generator='synthetic.py', version=FORMAT_VERSION, layout=layout, size=size, seed=seed)
    plan = SetPlan(seed, files, texts, tops, params, counts, boxes)
    return _write_set(root, plan, workers, progress, f'generating {layout}')


# What a generated set is made of: the images to draw [(relative path, ImageSpec)] with the seed they are drawn
# from, the text files {relative path: text}, the top-level entries it replaces, the marker's parameters, the
# counts it reports, and whether each person's box is written too.
SetPlan = namedtuple('SetPlan', 'seed files texts tops params counts boxes')


def _write_set(root, plan, workers, progress, desc):
    """Write a SetPlan under `root`, replacing its entries `plan.tops`; return `plan.counts`.

    The marker goes first (incomplete), so an interrupted run leaves a folder the next run may overwrite.
    """
    # a box file of an earlier run would no longer describe the images
    root = claim_folder(root, MARKER, plan.params, list(plan.tops) + [BOXES_FILE], 'generated set')
    for folder in sorted({(root / rel).parent for rel, _ in plan.files}):
        folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), plan.seed, rel, spec, plan.boxes) for rel, spec in plan.files]
    drawn_boxes = _draw_all(jobs, workers, progress, desc)
    if plan.boxes:
        _write_boxes(root, drawn_boxes)
    for rel, data in plan.texts.items():   # text, or bytes (a video layout's MATLAB files)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            (root / rel).write_bytes(data)
        else:
            (root / rel).write_text(data)
    (root / MARKER).write_text(json.dumps(dict(plan.params, complete=True, counts=plan.counts), indent=1))
    return plan.counts


# Sets of this many images and more are drawn in parallel, with a progress bar (smaller ones take seconds).
PARALLEL_FROM = 2000


def _draw_all(jobs, workers, progress, desc):
    """Draw and save every job's image (in `workers` processes; default 1 for small sets, else the CPU count);
    return {relative path: the person's box}. The images do not depend on the number of workers."""
    if workers is None:
        workers = 1 if len(jobs) < PARALLEL_FROM else (os.cpu_count() or 1)
    from tqdm import tqdm
    show = len(jobs) >= PARALLEL_FROM if progress is None else progress
    bar = tqdm(total=len(jobs), desc=desc, unit='img', disable=not show)
    drawn_boxes = {}
    if workers <= 1:
        for job in jobs:
            rel, box = _write_one(job)
            drawn_boxes[rel] = box
            bar.update()
    else:
        import multiprocessing
        with multiprocessing.get_context().Pool(workers) as pool:
            for rel, box in pool.imap_unordered(_write_one, jobs, chunksize=64):
                drawn_boxes[rel] = box
                bar.update()
    bar.close()
    return drawn_boxes


# Generated video (the video layouts: MARS, DukeMTMC-VideoReID, iLIDS-VID, PRID-2011): tracklets of the drawn
# people, drawn frame by frame. A frame is a pure function of (seed, FrameSpec: reid.data.layouts.common), like an
# image of (seed, ImageSpec).
def _walk(seed, spec):
    """The tracklet's own draws (the same for every frame): framing, walk across the scene, view, flip, occluder,
    camera response. A dict; drawn in one fixed order from the tracklet's generator."""
    cam_set = camera_setup(seed, spec.cam)
    r = _rng(seed, 6, *spec.track_key)
    W, H = WIDTH * SCALE, HEIGHT * SCALE
    walk = dict(start=r.uniform(0, 1), direction=float(r.choice((-1.0, 1.0))), travel=r.uniform(0.2, 0.6),
                scale=cam_set.scale * identity_look(seed, *spec.look_key).height * (1 + r.normal(0, 0.04)),
                growth=r.uniform(-0.08, 0.08), cx=W / 2 + (cam_set.x_shift + r.normal(0, 0.03)) * W,
                drift=r.uniform(-0.06, 0.06) * W, foot=(cam_set.foot_y + r.normal(0, 0.01)) * H,
                front=bool(r.random() < cam_set.front_prob), flip=bool(r.random() < 0.5),
                cadence=r.uniform(0.2, 0.4), phase=r.uniform(0, 2 * np.pi),
                occluder=bool(r.random() < cam_set.occlusion + 0.25), pole=bool(r.random() < 0.6),
                pole_x=r.uniform(0.1, 0.9), pole_w=r.uniform(0.05, 0.1), bar_y=r.uniform(0.7, 0.85),
                bar_from=r.uniform(0, 0.6), colour=tuple(int(c) for c in r.integers(20, 230, 3)),
                blur=cam_set.blur + r.uniform(0, 0.3), gain=cam_set.gain * (1 + r.normal(0, 0.06)),
                cast=np.array(cam_set.cast) * (1 + r.normal(0, 0.025, 3)))
    if spec.mode == 'distractor':   # a bad detection, badly framed the whole tracklet long
        walk.update(scale=walk['scale'] * r.uniform(0.45, 1.5), cx=W * r.uniform(0.1, 0.9),
                    foot=H * r.uniform(0.6, 1.5))
    elif spec.mode == 'junk':       # mostly background
        walk.update(scale=walk['scale'] * r.uniform(1.6, 3.0), cx=W * r.uniform(-0.3, 1.3),
                    foot=H * r.uniform(1.2, 2.5))
    return walk


def render_frame(seed, spec):
    """Return the PIL image (128x64 RGB) of one frame of a tracklet; a pure function of (seed, spec).

    Along the tracklet the person walks across the camera's scene (the crop pans over its background), drifts,
    grows or shrinks a little and swings arms and legs in a walking cycle; a pole fixed in the scene passes in
    front of the person, or the lower body is hidden for part of the tracklet; noise is drawn per frame.
    """
    walk = _walk(seed, spec)
    W, H = WIDTH * SCALE, HEIGHT * SCALE
    t = spec.frame / max(1, spec.length - 1)   # 0 .. 1 along the tracklet
    pano = camera_setup(seed, spec.cam).background
    span = pano.shape[1] - W
    off = int(round(np.clip(walk['start'] + walk['direction'] * walk['travel'] * (t - 0.5), 0, 1) * span))
    img = Image.fromarray(pano[:, off:off + W].copy())
    unit = walk['scale'] * (1 + walk['growth'] * (2 * t - 1)) * H
    cx = walk['cx'] + walk['drift'] * (2 * t - 1)
    phase = float(np.sin(walk['phase'] + 2 * np.pi * walk['cadence'] * spec.frame))
    # the pattern's phase is drawn inside draw_person: one generator per tracklet keeps the garment steady
    draw_person(img, identity_look(seed, *spec.look_key), Pose(cx, walk['foot'] - unit, unit, phase, walk['front']),
                 _rng(seed, 7, *spec.track_key))
    if walk['occluder']:
        d = ImageDraw.Draw(img)
        if walk['pole']:   # fixed in the scene: it moves across the crop as the crop pans
            x = walk['pole_x'] * pano.shape[1] - off
            d.rectangle([x - walk['pole_w'] * W, 0, x + walk['pole_w'] * W, H], fill=walk['colour'])
        elif walk['bar_from'] <= t <= walk['bar_from'] + 0.4:
            d.rectangle([0, H * walk['bar_y'], W, H], fill=walk['colour'])
    img = img.resize((WIDTH, HEIGHT), Image.BILINEAR, reducing_gap=None)
    if walk['flip']:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if walk['blur'] > 0.15:
        img = img.filter(ImageFilter.GaussianBlur(walk['blur']))
    r = _rng(seed, 8, *spec.track_key, spec.frame)
    pix = np.asarray(img, dtype=np.float32) * walk['gain'] * walk['cast']
    pix = pix + r.normal(0, r.uniform(2, 6), pix.shape)
    return Image.fromarray(np.clip(pix + 0.5, 0, 255).astype(np.uint8))
