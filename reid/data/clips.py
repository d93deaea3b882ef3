"""Generated tracking clips in the MOTChallenge layout (img1/, seqinfo.ini, gt/gt.txt, det/det.txt): drawn test
identities of the quick start's generated set walking across one street, for a tracker and its metrics.
"""
import json
from collections import namedtuple
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from reid.data import synthetic
from reid.data.synthetic import SCALE, _rng, draw_person, drawn_set, identity_look

WIDTH, HEIGHT = 640, 360           # frame size: moderate, so a CPU draws and tracks it quickly
FRAME_RATE = 15                    # nominal; walkers cross the frame in 5-9 s at 1.0-1.7 m/s
SOURCE = ('demo', 0)               # drawn_set(size, seed) of quickstart.sh: the clip walks its test identities
MARKER = '.synthetic_clip.json'    # written into the sequence folder: a re-run may replace what it finds there
FORMAT_VERSION = 1
WALL_BASE = 0.6 * HEIGHT           # where the facade meets the pavement
FAR, NEAR = 0.62 * HEIGHT, 0.96 * HEIGHT   # foot lines of the farthest and nearest walkers
TALL_FAR, TALL_NEAR = 112, 166     # pixel height there of a person of look.height 1 (looks scale it by 0.86-1)
PILLAR = 80                        # pillar width in pixels: wider than a person standing at the back
MARGIN = 90                        # walkers start and end this far outside the frame: fully out of view
PEDESTRIAN, STATIC_PERSON, DISTRACTOR = 1, 7, 8   # MOTChallenge classes (7 and 8 are ignored by the metrics)
DETECT_FROM = 0.3                  # visibility under which the simulated detector never fires
FALSE_RATE = 0.06                  # chance of a false positive in a frame
JITTER = (0.05, 0.02, 0.08, 0.04)  # detector noise (sd) of x, y, w, h in box widths, heights (capped at 2.5 sd)

# An actor: MOT track id, demo-set identity, MOTChallenge class, a fixed height in pixels (None: from the depth)
# and the passes it walks. A pass: facing the camera or not, and keys ((frame, x, foot y), ...) joined by straight
# lines at constant speed (two equal keys: standing still). Frames are MOT's, 1-based; x, y output pixels.
Actor = namedtuple('Actor', 'track_id pid cls unit passes')
Pass = namedtuple('Pass', 'front keys')
Pose = namedtuple('Pose', 'actor x y unit phase front')
Clip = namedtuple('Clip', 'seed frames actors pillar')   # pillar: (x0, x1, RGB) in output pixels


def tall_at(foot_y):
    """Pixel height of a person of look.height 1 whose feet are at `foot_y` (nearer = lower = taller)."""
    return TALL_FAR + (TALL_NEAR - TALL_FAR) * (foot_y - FAR) / (NEAR - FAR)


def _speed(r, foot_y):
    """A walking speed of 1.0-1.7 m/s in pixels per frame at depth `foot_y` (a person is 1.7 m tall)."""
    return r.uniform(1.0, 1.7) * tall_at(foot_y) / 1.7 / FRAME_RATE


@lru_cache(maxsize=1)
def _test_ids():
    """The test identities of the quick start's generated set (sorted)."""
    return tuple(drawn_set(*SOURCE).test_ids)


def plan_clip(seed=0, frames=150, people=6):
    """Return the Clip: who walks where and when, the standing and the poster figures, the pillar. Deterministic.

    Walker 1 stops behind the pillar, then walks on slower; walker 2 reaches the pillar from the other side while
    1 hides and turns back there (motion alone swaps them; they are dressed differently). Walkers 3 and 4 cross
    each other at different depths, dressed alike (motion tells them apart). Every further pair (7-8, 11-12, ...)
    is dressed alike too; the others walk at random, and everyone comes back after leaving while time is left.
    """
    test_ids = _test_ids()
    if int(seed) != seed or seed < 0:
        raise ValueError(f'seed={seed}: need a whole number, 0 or more')
    if int(frames) != frames or frames < 1:
        raise ValueError(f'frames={frames}: need a whole number of frames, at least 1')
    if int(people) != people or not 1 <= people < len(test_ids):
        raise ValueError(f'people={people}: need 1..{len(test_ids) - 1} walkers (the test identities of the '
                         f'{SOURCE[0]} set, less one for the standing figure)')
    r = _rng(seed, 30)
    pids = _cast(r, test_ids, people + 1)
    pillar_x = WIDTH * r.uniform(0.4, 0.6)
    firsts = [*_pillar_routes(r, frames, pillar_x), *_crossing_routes(r, frames, pillar_x)][:people]
    firsts += [_walk(r, frames, first=True) for _ in range(people - len(firsts))]
    actors = [Actor(i + 1, pid, PEDESTRIAN, None, _comebacks(r, first, frames))
              for i, (pid, first) in enumerate(zip(pids, firsts))]
    actors += _figures(r, frames, people, pids[-1], pillar_x)
    grey = tuple(int(c) for c in r.integers(95, 175) + r.integers(-12, 13, 3))
    return Clip(int(seed), int(frames), tuple(actors), (pillar_x - PILLAR / 2, pillar_x + PILLAR / 2, grey))


def _similarity(a, b):
    """How alike two looks are: the upper garment's colour first, the lower one's next, then the other cues."""
    fields = ('pattern', 'lower_kind', 'sleeves', 'accessory', 'hair', 'skin')
    return 10 * (a.upper == b.upper) + 5 * (a.lower == b.lower) + sum(getattr(a, f) == getattr(b, f) for f in fields)


def _cast(r, test_ids, n):
    """`n` test identities: walker 2 dressed unlike walker 1, walkers 4, 8, 12... like the one before."""
    look = {pid: identity_look(SOURCE[1], 1, pid) for pid in test_ids}
    order = [int(p) for p in r.permutation(test_ids)]
    chosen = []
    for i in range(n):
        free = [p for p in order if p not in chosen]
        if i % 4 == 3:   # the partner of walker i (0-based i - 1): the closest look of the rest
            free.sort(key=lambda p: -_similarity(look[p], look[chosen[-1]]))   # stable: ties keep the draw
        elif i == 1:
            free = [p for p in free if look[p].upper != look[chosen[0]].upper
                    and look[p].lower != look[chosen[0]].lower] or free
        chosen.append(free[0])
    return chosen


def _mirrored(passes, flip):
    """The passes as they are, or mirrored left to right (so either walker may come from either side)."""
    if not flip:
        return passes
    return [Pass(p.front, tuple((t, WIDTH - x, y) for t, x, y in p.keys)) for p in passes]


def _pillar_routes(r, frames, pillar_x):
    """First passes of walkers 1 and 2: 1 stops behind the pillar for 10-18 frames and walks on slower; 2 comes
    from the other side while 1 hides, waits 2-5 frames behind the pillar and walks back out, faster."""
    flip = r.random() < 0.5
    pillar_x = WIDTH - pillar_x if flip else pillar_x   # drawn left to right, then mirrored back onto it
    y = FAR + (NEAR - FAR) * r.uniform(0.05, 0.3)   # far enough that the pillar hides a person standing there
    y2 = y + r.uniform(-10, 10)
    va, vb = _speed(r, y), _speed(r, y2)
    arrive, stop = frames * r.uniform(0.25, 0.35), r.uniform(10, 18)
    leave = arrive + stop
    a = (arrive - (pillar_x + MARGIN) / va, -MARGIN, y), (arrive, pillar_x, y), (leave, pillar_x, y), \
        (leave + (WIDTH + MARGIN - pillar_x) / (va * r.uniform(0.6, 0.8)), WIDTH + MARGIN, y)
    b_in = arrive + stop * r.uniform(0.2, 0.35)
    b_out = b_in + r.uniform(2, 5)
    bx = pillar_x + r.uniform(0, 6)
    b = (b_in - (WIDTH + MARGIN - bx) / vb, WIDTH + MARGIN, y2), (b_in, bx, y2), (b_out, bx, y2), \
        (b_out + (WIDTH + MARGIN - bx) / (vb * r.uniform(1.15, 1.35)), WIDTH + MARGIN, y2)
    return _mirrored([Pass(bool(r.random() < 0.5), a), Pass(bool(r.random() < 0.5), b)], flip)


def _crossing_routes(r, frames, pillar_x):
    """First passes of walkers 3 and 4: opposite ways at different depths, crossing away from the pillar."""
    flip = r.random() < 0.5
    pillar_x = WIDTH - pillar_x if flip else pillar_x
    y_far = FAR + (NEAR - FAR) * r.uniform(0.0, 0.3)
    y_near = NEAR - r.uniform(0, 20)
    left, right = r.uniform(0.12 * WIDTH, pillar_x - 140), r.uniform(pillar_x + 140, 0.88 * WIDTH)
    xm = left if r.random() < 0.5 else right
    tm = frames * r.uniform(0.5, 0.65)
    vc, vd = _speed(r, y_far), _speed(r, y_near)
    c = (tm - (xm + MARGIN) / vc, -MARGIN, y_far), (tm + (WIDTH + MARGIN - xm) / vc, WIDTH + MARGIN, y_far)
    d = (tm - (WIDTH + MARGIN - xm) / vd, WIDTH + MARGIN, y_near), (tm + (xm + MARGIN) / vd, -MARGIN, y_near)
    return _mirrored([Pass(bool(r.random() < 0.5), c), Pass(bool(r.random() < 0.5), d)], flip)


def _walk(r, start, first=False):
    """A pass across the frame from a random side, maybe slanting in depth, maybe changing speed half-way;
    it starts at frame `start`, or for a walker's first pass (`start` = the clip's length) at a random time
    that shows it within the clip, possibly already in view at frame 1."""
    y0, y1 = r.uniform(FAR, NEAR, 2)
    x0, x1 = (-MARGIN, WIDTH + MARGIN) if r.random() < 0.5 else (WIDTH + MARGIN, -MARGIN)
    v = _speed(r, (y0 + y1) / 2)
    f = r.uniform(0.3, 0.7)
    xm, ym = x0 + f * (x1 - x0), y0 + f * (y1 - y0)
    t_mid = np.hypot(xm - x0, ym - y0) / v
    end = t_mid + np.hypot(x1 - xm, y1 - ym) / (v * (r.uniform(0.6, 1.4) if r.random() < 0.4 else 1.0))
    t0 = r.uniform(1 - 0.7 * end, 0.6 * start) if first else start
    return Pass(bool(r.random() < 0.5), ((t0, x0, y0), (t0 + t_mid, xm, ym), (t0 + end, x1, y1)))


def _comebacks(r, first, frames):
    """The walker's passes: `first`, then after each 15-60 frames away another walk, while the clip lasts."""
    passes = [first]
    while True:
        start = passes[-1].keys[-1][0] + r.uniform(15, 60)
        if start > frames:
            return tuple(passes)
        passes.append(_walk(r, start))


def _figures(r, frames, people, pid, pillar_x):
    """The ignored figures: a person standing by the wall all along (class 7) and a person on a poster on the
    wall (class 8); a detector fires on both, and MOTChallenge's metrics ignore them."""
    def away_from(*xs):
        while True:
            x = r.uniform(0.08, 0.92) * WIDTH
            if all(abs(x - other) > 110 for other in xs):
                return x

    x_stand = away_from(pillar_x)
    x_poster = away_from(pillar_x, x_stand)
    stand = ((1, x_stand, WALL_BASE + 2), (frames, x_stand, WALL_BASE + 2))
    poster = ((1, x_poster, 0.5 * HEIGHT), (frames, x_poster, 0.5 * HEIGHT))
    return [Actor(people + 1, pid, STATIC_PERSON, None, (Pass(True, stand),)),
            Actor(people + 2, int(r.choice(_test_ids())), DISTRACTOR, 64.0, (Pass(True, poster),))]


def _look(actor):
    return identity_look(SOURCE[1], 1, actor.pid)


def _pose(actor, frame):
    """Where `actor` is at `frame` (Pose), or None between its passes."""
    for p in actor.passes:
        keys = p.keys
        if not keys[0][0] <= frame <= keys[-1][0]:
            continue
        walked = 0.0
        for (t0, x0, y0), (t1, x1, y1) in zip(keys, keys[1:]):
            step = float(np.hypot(x1 - x0, y1 - y0))
            if frame <= t1:
                f = (frame - t0) / (t1 - t0) if t1 > t0 else 0.0
                x, y = x0 + f * (x1 - x0), y0 + f * (y1 - y0)
                unit = actor.unit or tall_at(y) * _look(actor).height
                # one stride (two steps) per 0.75 of the height walked; legs together when standing
                phase = float(np.sin(2 * np.pi * (walked + f * step) / (0.75 * unit))) if step else 0.0
                return Pose(actor, x, y, unit, phase, p.front)
            walked += step
    return None


@lru_cache(maxsize=4)
def _plate(clip):
    """The empty street at drawing scale (PIL): a facade, the pavement, the poster's board. Callers copy it."""
    r = _rng(clip.seed, 31)
    h, w, base = HEIGHT * SCALE, WIDTH * SCALE, int(WALL_BASE * SCALE)
    wall, ground, accent = (np.clip(r.uniform(70, 190) + r.uniform(-30, 30, 3), 0, 255) for _ in range(3))
    img = np.empty((h, w, 3))
    img[:base] = wall * (1 + 0.15 * (np.linspace(0, 1, base)[:, None, None] - 0.5))
    img[base:] = ground * (0.9 + 0.2 * np.linspace(0, 1, h - base)[:, None, None])
    period = int(r.integers(60, 120))
    if r.random() < 0.5:   # windows in rows
        for top in range(int(0.08 * h), base - period, int(1.3 * period)):
            for left in range(int(r.integers(0, period)), w - period // 2, period):
                img[top:top + int(0.8 * period), left:left + period // 2] = 0.45 * accent
    else:                  # shop fronts
        x = 0
        while x < w:
            bw = int(r.integers(120, 320))
            img[int(r.uniform(0.15, 0.35) * h):base, x:x + bw] = np.clip(r.uniform(60, 200, 3), 0, 255)
            x += bw + int(r.integers(8, 30))
    joints = base + (h - base) * np.linspace(0, 1, 9) ** 1.6   # paving joints, wider apart nearer the camera
    for y in joints.astype(int)[1:-1]:
        img[y:y + 2] *= 0.8
    img[base:base + 4] = 0.6 * ground   # the kerb of the facade
    img += r.normal(0, 4, img.shape)
    plate = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    for actor in clip.actors:
        if actor.cls == DISTRACTOR:   # the poster's board behind its figure
            x, y = actor.passes[0].keys[0][1:]
            box = [(x - 0.5 * actor.unit) * SCALE, (y - 1.15 * actor.unit) * SCALE, (x + 0.5 * actor.unit) * SCALE,
                   (y + 0.1 * actor.unit) * SCALE]
            ImageDraw.Draw(plate).rectangle(box, fill=(236, 232, 220), outline=(60, 60, 60), width=2 * SCALE)
    return plate


def _figure(pose, seed):
    """(RGB canvas, its mask, its top-left corner) of one person drawn alone on black at drawing scale; the
    palettes have no pure black, and PIL draws without anti-aliasing, so the mask is exact."""
    u = pose.unit * SCALE
    ox, oy = int(np.floor(pose.x * SCALE - 0.45 * u)), int(np.floor(pose.y * SCALE - 1.06 * u))
    canvas = Image.new('RGB', (int(0.9 * u) + 3, int(1.1 * u) + 3), (0, 0, 0))
    # a fresh generator per frame: the garment's pattern keeps its phase from frame to frame
    drawn = synthetic.Pose(pose.x * SCALE - ox, pose.y * SCALE - u - oy, u, pose.phase, pose.front)
    draw_person(canvas, _look(pose.actor), drawn, _rng(seed, 40, pose.actor.track_id))
    return canvas, np.asarray(canvas).any(axis=2), (ox, oy)


def _window(shape, mask, corner):
    """(frame slice, mask slice) where a mask placed at `corner` (x, y) meets a frame of `shape`, or None."""
    (ox, oy), (h, w), (mh, mw) = corner, shape, mask.shape
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + mw, w), min(oy + mh, h)
    if x0 >= x1 or y0 >= y1:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))


def _compose(clip, frame, only=None, occluder=True):
    """(the frame at output size, [(actor, box, visibility)] of the people in view). Far people are drawn first,
    so nearer ones cover them; `owner` keeps who shows at each pixel. box: (x0, y0, x1, y1) output pixels, x1 and
    y1 exclusive, around all the person's drawn pixels (occluded or off-frame ones too); visibility: the share of
    them that shows in the frame."""
    img = _plate(clip).copy()
    owner = np.full((HEIGHT * SCALE, WIDTH * SCALE), -1, np.int16)
    poses = [p for p in (_pose(a, frame) for a in clip.actors) if p is not None]
    drawn = []
    for pose in sorted(poses, key=lambda p: (p.y, p.actor.track_id)):
        if only is not None and pose.actor.track_id not in only:
            continue
        canvas, mask, corner = _figure(pose, clip.seed)
        img.paste(canvas, corner, Image.fromarray(mask.astype(np.uint8) * 255))
        window = _window(owner.shape, mask, corner)
        if window is not None:
            owner[window[0]][mask[window[1]]] = len(drawn)
        drawn.append((pose.actor, mask, corner, window))
    if occluder:
        x0, x1, grey = clip.pillar
        draw = ImageDraw.Draw(img)
        draw.rectangle([x0 * SCALE, 0, x1 * SCALE - 1, HEIGHT * SCALE], fill=grey)
        draw.rectangle([(x1 - 0.15 * PILLAR) * SCALE, 0, x1 * SCALE - 1, HEIGHT * SCALE],
                       fill=tuple(int(0.75 * c) for c in grey))   # the pillar's shaded side
        owner[:, int(x0 * SCALE):int(x1 * SCALE)] = -2
    rows = [_row(owner, i, *d) for i, d in enumerate(drawn) if d[3] is not None]
    return img.resize((WIDTH, HEIGHT), Image.BILINEAR, reducing_gap=None), [row for row in rows if row]


def _row(owner, index, actor, mask, corner, window):
    """(actor, box, visibility) of a drawn person (see _compose), or None when its box misses the frame."""
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x0, y0 = corner[0] + xs[0], corner[1] + ys[0]
    x1, y1 = corner[0] + xs[-1] + 1, corner[1] + ys[-1] + 1
    box = (x0 // SCALE, y0 // SCALE, -(-x1 // SCALE), -(-y1 // SCALE))   # drawing scale -> pixels, rounded outwards
    if box[2] <= 0 or box[3] <= 0 or box[0] >= WIDTH or box[1] >= HEIGHT:
        return None
    shown = int(np.count_nonzero(owner[window[0]] == index))
    return actor, box, shown / int(np.count_nonzero(mask))


def render_frame(clip, frame, only=None, occluder=True):
    """The PIL image (WIDTH x HEIGHT) of `frame` (1-based) before JPEG: everyone, or only the track ids in `only`
    (the figures of classes 7 and 8 are tracks too), with or without the pillar."""
    return _compose(clip, frame, only, occluder)[0]


def _in_frame(box):
    x0, y0, x1, y1 = box
    return max(x0, 0), max(y0, 0), min(x1, WIDTH), min(y1, HEIGHT)


def _iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def detect_chance(visibility, cls):
    """The simulated detector's chance of firing on a person of this visibility (the poster's less often)."""
    if visibility < DETECT_FROM:
        return 0.0
    return 0.95 * min(1.0, (visibility - DETECT_FROM) / 0.4) * (0.6 if cls == DISTRACTOR else 1.0)


def _detections(clip, frame, rows):
    """[(x0, y0, x1, y1, score, class)] of the simulated detector in `frame`: the in-frame part of each box with
    Gaussian noise (misses more likely when less is visible), and now and then a box on the background (class 0)."""
    r = _rng(clip.seed, 50, frame)
    out = []
    for actor, box, visibility in sorted(rows, key=lambda row: row[0].track_id):
        hit, noise, luck = r.random(), np.clip(r.normal(0, 1, 4), -2.5, 2.5), r.normal(0, 0.1)
        if hit >= detect_chance(visibility, actor.cls):
            continue
        x0, y0, x1, y1 = _in_frame(box)
        dx, dy, dw, dh = noise * np.array(JITTER) * (x1 - x0, y1 - y0, x1 - x0, y1 - y0)
        score = float(np.clip(0.45 + 0.5 * visibility + luck, 0.3, 1.0))
        out.append((x0 + dx, y0 + dy, x1 + dx + dw, y1 + dy + dh, score, actor.cls))
    if r.random() < FALSE_RATE:
        for _ in range(5):   # somewhere no one is
            foot = r.uniform(FAR, NEAR)
            h = tall_at(foot) * r.uniform(0.8, 1.05)
            w = h * r.uniform(0.3, 0.45)
            x = r.uniform(0, WIDTH - w)
            box = (x, foot - h, x + w, foot)
            if all(_iou(box, _in_frame(row[1])) < 0.2 for row in rows):
                out.append((*box, float(r.uniform(0.1, 0.5)), 0))
                break
    return out


def gt_line(frame, actor, box, visibility):
    """One gt.txt row: frame,id,left,top,width,height,consider,class,visibility (MOT17's 1-based pixels: the
    leftmost pixel column is `left`, counting from 1)."""
    x0, y0, x1, y1 = box
    return f'{frame},{actor.track_id},{x0 + 1},{y0 + 1},{x1 - x0},{y1 - y0},{int(actor.cls == PEDESTRIAN)},' \
           f'{actor.cls},{visibility:.3f}'


def det_line(frame, det):
    """One det.txt row: frame,-1,left,top,width,height,score,-1,-1,-1 (the same 1-based pixels as gt.txt)."""
    x0, y0, x1, y1, score = det[:5]
    return f'{frame},-1,{x0 + 1:.2f},{y0 + 1:.2f},{x1 - x0:.2f},{y1 - y0:.2f},{score:.3f},-1,-1,-1'


def seqinfo_text(name, frames):
    """seqinfo.ini of a clip, as MOTChallenge writes it."""
    return (f'[Sequence]\nname={name}\nimDir=img1\nframeRate={FRAME_RATE}\nseqLength={frames}\n'
            f'imWidth={WIDTH}\nimHeight={HEIGHT}\nimExt=.jpg\n')


def read_clip_marker(root):
    """The marker of a generated clip (dict), or None when `root` is not one."""
    return synthetic.read_marker(root, MARKER)


def _claim(root, params):
    """Make `root` ours (synthetic.claim_folder: a previous clip's files removed, the marker written first) and
    ready the sequence's folders."""
    root = synthetic.claim_folder(root, MARKER, params, ('img1', 'gt', 'det', 'seqinfo.ini'), 'generated clip')
    for name in ('img1', 'gt', 'det'):
        (root / name).mkdir()
    return root


def make_clip(root, seed=0, frames=150, people=6, progress=None):
    """Write a generated tracking clip in the MOTChallenge layout under `root`; return its counts.

    Refuses (ValueError) a non-empty `root` that is not a previous generated clip; a previous clip is replaced.
    `progress`: show a bar (default: for 50 frames or more). The files depend on (seed, frames, people) and the
    folder's name (seqinfo.ini's name) only.
    """
    from tqdm import tqdm

    clip = plan_clip(seed, frames, people)
    params = dict(generator='clips.py', version=FORMAT_VERSION, seed=int(seed), frames=int(frames),
                  people=int(people), source=dict(size=SOURCE[0], seed=SOURCE[1]))
    root = _claim(root, params)
    gt, det, counts = [], [], dict(frames=clip.frames, people=people, gt_rows=0, ignored_rows=0, detections=0,
                                   false_positives=0, missed=0)
    show = frames >= 50 if progress is None else progress
    for frame in tqdm(range(1, clip.frames + 1), desc=f'drawing {root.name}', unit='frame', disable=not show):
        img, rows = _compose(clip, frame)
        img.save(root / 'img1' / f'{frame:06d}.jpg', 'JPEG', quality=90)
        dets = _detections(clip, frame, rows)
        gt += [gt_line(frame, *row) for row in sorted(rows, key=lambda row: row[0].track_id)]
        det += [det_line(frame, d) for d in dets]
        counts['gt_rows'] += sum(row[0].cls == PEDESTRIAN for row in rows)
        counts['ignored_rows'] += sum(row[0].cls != PEDESTRIAN for row in rows)
        counts['detections'] += len(dets)
        counts['false_positives'] += sum(d[5] == 0 for d in dets)
        counts['missed'] += sum(row[0].cls == PEDESTRIAN for row in rows) - sum(d[5] == PEDESTRIAN for d in dets)
    (root / 'gt' / 'gt.txt').write_text(''.join(line + '\n' for line in gt))
    (root / 'det' / 'det.txt').write_text(''.join(line + '\n' for line in det))
    (root / 'seqinfo.ini').write_text(seqinfo_text(root.resolve().name, clip.frames))
    people_map = {str(a.track_id): dict(pid=a.pid, cls=a.cls) for a in clip.actors}
    (root / MARKER).write_text(json.dumps(dict(params, complete=True, counts=counts, tracks=people_map), indent=1))
    return counts
