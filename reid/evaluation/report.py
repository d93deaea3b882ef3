"""Rankings for people: the ranked gallery of a query, its picture (show.png), and a static HTML page of every
query's top-10 that explains itself: CMC curve, AP histogram, per-camera tables, same-id / different-id scores.

The page (demo.py --html DIR) needs no server and keeps working when DIR is moved: thumbnails and the pictures
(matplotlib PNGs) are written into it. An entry's path may be a tracklet's frame paths (a tuple): it is drawn as a
strip of STRIP_FRAMES evenly spaced frames side by side.
"""
import html
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

THUMB_HEIGHT = 128
STRIP_FRAMES = 4   # frames of a tracklet shown side by side (evenly spaced over it)

PAGE_STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fafafa; }
#summary { font-size: 1.1em; margin-bottom: 0.8em; }
#summary span { margin-right: 1.2em; }
table { border-collapse: collapse; }
tr.query td { border-top: 1px solid #ccc; padding: 4px; vertical-align: top; }
figure { display: inline-block; margin: 2px; text-align: center; font-size: 10px; width: 72px;
         word-break: break-all; }
figure img { height: 128px; width: 64px; object-fit: contain; display: block; margin: auto; }
figure.tracklet { width: auto; }
figure.tracklet img { height: 80px; width: auto; }
figure.query-image { border: 4px solid #333; }
figure.hit { border: 4px solid #1a9c3a; }
figure.miss { border: 4px solid #d62728; }
td.info { font-size: 12px; width: 9em; }
#pictures img { height: 240px; margin-right: 8px; border: 1px solid #ddd; background: white; }
table.cameras { margin: 0.5em 2em 1em 0; display: inline-table; vertical-align: top; font-size: 13px; }
table.cameras td, table.cameras th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
#broken { color: #d62728; font-weight: bold; }
"""

# Count the pictures that failed to load: a broken picture says so on the page instead of staying a blank box.
BROKEN_IMAGE_SCRIPT = """
window.addEventListener('load', function () {
  var broken = 0, all = document.querySelectorAll('img');
  all.forEach(function (img) { broken += (img.complete && img.naturalWidth > 0) ? 0 : 1; });
  document.body.dataset.images = all.length;
  document.body.dataset.broken = broken;
  if (broken) { document.getElementById('broken').textContent = broken + ' picture(s) failed to load'; }
});
"""

# The heatmap toggle of each row: every thumbnail swaps to its heatmap version and back. #heatmaps in the link
# opens the page with every row switched.
HEATMAP_SCRIPT = """
function toggleHeat(row) {
  row.querySelectorAll('img[data-heat]').forEach(function (img) {
    var other = img.dataset.heat; img.dataset.heat = img.getAttribute('src'); img.setAttribute('src', other);
  });
  row.classList.toggle('heat');
}
document.querySelectorAll('button.heat').forEach(function (b) {
  b.addEventListener('click', function () { toggleHeat(b.closest('tr')); });
});
if (/heatmaps/.test(location.hash)) { document.querySelectorAll('tr.query').forEach(toggleHeat); }
"""

# Show only the rows whose query camera is the chosen one (all rows for '').
# A link ending in #camera=N opens the page filtered to camera N.
FILTER_SCRIPT = """
function showCamera(cam) {
  var shown = 0;
  document.querySelectorAll('tr.query').forEach(function (row) {
    var on = cam === '' || row.dataset.cam === cam;
    row.style.display = on ? '' : 'none';
    shown += on ? 1 : 0;
  });
  document.getElementById('shown').textContent = shown;
}
var select = document.getElementById('camera');
select.addEventListener('change', function () { showCamera(select.value); });
var fromLink = /camera=(\\d+)/.exec(location.hash);
if (fromLink) { select.value = fromLink[1]; showCamera(select.value); }
"""


def is_tracklet(path):
    """True when an entry's `path` is a tracklet's frame paths (a tuple or list) rather than one image's."""
    return isinstance(path, (tuple, list))


def picture_path(path):
    """Where a picture lies: the image's path, or the tracklet's folder."""
    return str(Path(path[0]).parent) if is_tracklet(path) else path


def picture_name(path):
    """What a picture is called on the page: the image's file name, or the tracklet's folder name."""
    return Path(picture_path(path)).name


def strip_frames(paths, frames=STRIP_FRAMES):
    """Return the frame paths a tracklet's strip shows: `frames` evenly spaced ones (reid.data.tracklets'
    'evenly'), each once, in order (all of them for a shorter tracklet)."""
    from reid.data.tracklets import frame_positions

    return [paths[p] for p in sorted(set(frame_positions(len(paths), min(frames, len(paths)), 'evenly')))]


def picture(path):
    """Return an RGB PIL image of an entry: the image at `path`, or a tracklet's strip (strip_frames side by
    side, each scaled to the first one's height)."""
    from PIL import Image

    if not is_tracklet(path):
        with Image.open(path) as img:
            return img.convert('RGB')
    frames = [picture(p) for p in strip_frames(path)]
    height = frames[0].height
    frames = [f if f.height == height else f.resize((max(1, round(f.width * height / f.height)), height))
              for f in frames]
    strip = Image.new('RGB', (sum(f.width for f in frames), height))
    for k, f in enumerate(frames):
        strip.paste(f, (sum(g.width for g in frames[:k]), 0))
    return strip


def ranked_gallery(keys, ql, qc, gl, gc):
    """Return gallery indices ranked by ascending key (stable), junk removed (same id+camera, or id -1).

    `ql`/`qc` None (a photo of unknown id and camera): only the id -1 images are removed.
    """
    from reid.evaluation.metrics import JUNK_ID, junk_mask

    order = np.argsort(keys, kind='stable')
    if ql is None:
        return order[np.asarray(gl)[order] != JUNK_ID]
    return order[~junk_mask(ql, qc, gl[order], gc[order])]


def draw_ranking(query, shown, path, heats=None):
    """Save a 1 x (1 + len(shown)) figure: the query, then (image, is_match, caption) with green/red frames.

    `heats`: one [0, 1] map per panel (query first, each at its image's size), laid over the images
    (reid.evaluation.heatmap.overlay): the picture demo.py --heatmap saves.
    """
    import matplotlib
    matplotlib.use('Agg')  # headless: never needs a display
    import matplotlib.pyplot as plt

    panels = [(query[0], None, query[1])] + list(shown)
    wide = 2 if any(is_tracklet(path) for path, _, _ in panels) else 1   # a tracklet's strip is wider than tall
    fig, axes = plt.subplots(1, len(panels), figsize=(1.6 * wide * len(panels), 3.6 / wide ** 0.5), squeeze=False)
    for k, (ax, (img_path, match, caption)) in enumerate(zip(axes[0], panels)):
        try:
            with picture(img_path) as img:
                if heats is None:
                    ax.imshow(img.convert('RGB'))
                else:
                    from reid.evaluation.heatmap import overlay
                    ax.imshow(overlay(img, heats[k]))
        except Exception as err:  # a damaged image gets an empty panel, named, instead of no picture at all
            logging.getLogger(__name__).warning(f'warning: {img_path}: unreadable image ({type(err).__name__}), '
                                                'left blank')
        ax.set_xticks([])
        ax.set_yticks([])
        colour = 'black' if match is None else ('green' if match else 'red')
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(4 if match is not None else 1)
        ax.set_xlabel(caption, fontsize=8, color=colour)  # id and score under each image
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def query_average_precisions(dist, ql, qc, gl, gc):
    """Return each query's AP (Market-1501 rule; NaN without a valid match) from a (Q, G) distance matrix."""
    from reid.evaluation.metrics import compute_cmc_map_from_dist

    return np.array([compute_cmc_map_from_dist(dist[i:i + 1], ql[i:i + 1], qc[i:i + 1], gl, gc, device='cpu')['mAP']
                     for i in range(len(ql))])


def _thumbnail(src, dst):
    """Write a small JPEG copy of image `src` (or a tracklet's strip: picture) at `dst` (height THUMB_HEIGHT)."""
    img = picture(src)
    width = max(1, round(img.width * THUMB_HEIGHT / img.height))
    img.resize((width, THUMB_HEIGHT)).save(dst, quality=85)


def pair_scores(scores, ql, qc, gl, gc):
    """Return (same-id scores, different-id scores) of every valid query-gallery pair (junk left out: id -1, and
    the same id in the same camera); distractors (id 0) count as different."""
    from reid.evaluation.metrics import junk_pairs

    scores, ql, qc, gl, gc = (np.asarray(a) for a in (scores, ql, qc, gl, gc))
    same_id = gl[None, :] == ql[:, None]
    junk = junk_pairs(ql, qc, gl, gc)
    return scores[same_id & ~junk], scores[~same_id & ~junk]


def camera_tables(top1, aps, ql, qc, gl, gc):
    """Return (per query camera, per gallery camera) rows for the page.

    `top1[i]`: gallery index of query i's first ranked image (junk removed), -1 without one; `aps[i]`: its AP
    (NaN without a valid match). Query camera rows: cam, queries, evaluated (with a valid match), Rank@1 and mAP
    over the evaluated ones. Gallery camera rows: cam, images, top1 (evaluated queries whose first image is
    there), wrong (of those, another person), share (wrong / all wrong top-1 hits of the set).
    """
    top1, aps = np.asarray(top1), np.asarray(aps)
    valid = ~np.isnan(aps)
    hit = np.array([t >= 0 and gl[t] == q for t, q in zip(top1, ql)], dtype=bool)
    wrong_at = top1[valid & ~hit]
    queries = []
    for cam in sorted(set(np.asarray(qc).tolist())):
        mine = (np.asarray(qc) == cam) & valid
        queries.append(dict(cam=cam, queries=int((np.asarray(qc) == cam).sum()), evaluated=int(mine.sum()),
                            rank1=float(hit[mine].mean()) if mine.any() else float('nan'),
                            mAP=float(aps[mine].mean()) if mine.any() else float('nan')))
    gallery = []
    for cam in sorted(set(np.asarray(gc).tolist())):
        there = top1[valid][gc[top1[valid]] == cam] if valid.any() else top1[:0]
        wrong = int((gc[wrong_at] == cam).sum()) if len(wrong_at) else 0
        gallery.append(dict(cam=cam, images=int((np.asarray(gc) == cam).sum()), top1=int(len(there)), wrong=wrong,
                            share=wrong / len(wrong_at) if len(wrong_at) else 0.0))
    return queries, gallery


def threshold_rates(same, different, threshold):
    """Return (share of same-id pairs accepted, share of different-id pairs rejected) at `threshold` (a pair is
    accepted when its score is above it)."""
    accept = float((np.asarray(same) > threshold).mean()) if len(same) else float('nan')
    reject = float((np.asarray(different) <= threshold).mean()) if len(different) else float('nan')
    return accept, reject


def draw_summary_pictures(out_dir, cmc, aps, same, different, threshold=None):
    """Write cmc.png (Rank@1..50), ap_histogram.png and scores.png (same-id / different-id histograms, with the
    verification threshold as a line when given) into out_dir; return their file names."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    names = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=80)
        plt.close(fig)
        names.append(name)

    fig, ax = plt.subplots(figsize=(4, 3))
    ranks = np.arange(1, min(50, len(cmc)) + 1)
    ax.plot(ranks, 100 * np.asarray(cmc)[:len(ranks)], marker='.', color='#1f77b4')
    ax.set(xlabel='rank k', ylabel='Rank@k (%)', title='CMC curve', ylim=(0, 100.5))
    ax.grid(alpha=0.3)
    save(fig, 'cmc.png')

    fig, ax = plt.subplots(figsize=(4, 3))
    valid = np.asarray(aps)[~np.isnan(aps)]
    ax.hist(100 * valid, bins=np.linspace(0, 100, 21), color='#ff7f0e', edgecolor='white')
    ax.set(xlabel='AP of a query (%)', ylabel='queries', title=f'AP histogram ({len(valid)} queries)')
    save(fig, 'ap_histogram.png')

    fig, ax = plt.subplots(figsize=(4, 3))
    bins = np.linspace(min(np.min(same, initial=1), np.min(different, initial=1), -0.0),
                       max(np.max(same, initial=0), np.max(different, initial=0), 1.0), 41)
    ax.hist(different, bins=bins, density=True, alpha=0.6, color='#d62728', label=f'different id ({len(different)})')
    ax.hist(same, bins=bins, density=True, alpha=0.6, color='#1a9c3a', label=f'same id ({len(same)})')
    if threshold is not None:
        ax.axvline(threshold, color='black', linestyle='--', linewidth=1.5, label=f'threshold {threshold:.3f}')
    ax.set(xlabel='score (cosine)', ylabel='density', title='scores of query-gallery pairs')
    ax.legend(fontsize=7)
    save(fig, 'scores.png')
    return names


def _camera_tables_html(queries, gallery):
    def pct(v):
        return '-' if math.isnan(v) else f'{100 * v:.2f}'

    qrows = ''.join(
        f'<tr data-cam="{r["cam"]}" data-queries="{r["queries"]}" data-evaluated="{r["evaluated"]}" '
        f'data-rank1="{r["rank1"]:.6f}" data-map="{r["mAP"]:.6f}"><td>{r["cam"]}</td><td>{r["queries"]}</td>'
        f'<td>{r["evaluated"]}</td><td>{pct(r["rank1"])}</td><td>{pct(r["mAP"])}</td></tr>' for r in queries)
    grows = ''.join(
        f'<tr data-cam="{r["cam"]}" data-images="{r["images"]}" data-top1="{r["top1"]}" data-wrong="{r["wrong"]}" '
        f'data-share="{r["share"]:.6f}"><td>{r["cam"]}</td><td>{r["images"]}</td><td>{r["top1"]}</td>'
        f'<td>{r["wrong"]}</td><td>{pct(r["share"])}</td></tr>' for r in gallery)
    return (
        '<table class="cameras" id="query-cameras"><caption>Per query camera</caption><tr><th>camera</th>'
        '<th>queries</th><th>evaluated</th><th>Rank@1 %</th><th>mAP %</th></tr>' + qrows + '</table>'
        '<table class="cameras" id="gallery-cameras"><caption>Per gallery camera: where the first hit lands'
        '</caption><tr><th>camera</th><th>images</th><th>top-1 hits</th><th>wrong</th>'
        '<th>% of all wrong top-1</th></tr>' + grows + '</table>')


@dataclass
class PageOptions:
    """How the results page is drawn: `top` images per row, its `title`, the verification `threshold` (a cosine
    score: a pair is accepted above it) drawn on the score histograms, the (Q, G) cosine `scores` of those
    histograms (default -dist) and `heatmaps`, a function from image paths to activation maps
    (reid.evaluation.heatmap.image_heatmaps) that gives each row a heatmap toggle."""
    top: int = 10
    title: str = 'Re-ID results'
    threshold: Optional[float] = None
    scores: object = None
    heatmaps: Optional[Callable] = None


def write_report(out_dir, dist, query_images, gallery_images, summary, options=None):
    """Write out_dir/index.html (+ out_dir/thumbs/ and the pictures) and return its path.

    `dist` (Q, G): smaller = better (e.g. -cosine, or re-ranked distances). `query_images`/`gallery_images`:
    [(path, id, camera)] in the order of dist's rows/columns. `summary`: the metrics dict of the whole set.
    On top: the CMC curve, the AP histogram, the same-id / different-id score histograms (with the threshold
    when given), and the per-camera tables. One row per query: its image, AP and top-`top` strip (green = same
    id, red = another), worst AP first (queries without a valid match last), and a filter by query camera.
    `options`: a PageOptions (default: its defaults).
    """
    options = options or PageOptions()
    out_dir = Path(out_dir)
    (out_dir / 'thumbs').mkdir(parents=True, exist_ok=True)  # files are overwritten by name, nothing else is touched
    dist = np.asarray(dist)
    (ql, qc), (gl, gc) = _ids_and_cameras(query_images), _ids_and_cameras(gallery_images)
    aps = query_average_precisions(dist, ql, qc, gl, gc)
    ranked = {i: ranked_gallery(dist[i], ql[i], qc[i], gl, gc)[:max(options.top, 1)] for i in range(len(ql))}
    heat = {}
    if options.heatmaps is not None:
        heat = _heat_thumbnails(out_dir, options.heatmaps, query_images, gallery_images, ranked, options.top)
    figures = _Figures(out_dir, heat)
    rows = _query_rows(figures, dist, query_images, gallery_images, aps, ranked, options.top)
    top1 = [int(ranked[i][0]) if len(ranked[i]) else -1 for i in range(len(ql))]
    same, different = pair_scores(-dist if options.scores is None else options.scores, ql, qc, gl, gc)
    pictures = draw_summary_pictures(out_dir, summary['cmc'], aps, same, different, options.threshold)
    top_html = _summary_html(summary, len(gl), pictures, _threshold_html(same, different, options.threshold),
                             _camera_tables_html(*camera_tables(top1, aps, ql, qc, gl, gc)))
    cams = ''.join(f'<option value="{c}">camera {c}</option>' for c in sorted(set(qc.tolist())))
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(options.title)}</title>'
        f'<style>{PAGE_STYLE}</style></head><body>\n<h1>{html.escape(options.title)}</h1>\n{top_html}'
        f'<p id="broken"></p>\n'
        f'<p>Worst queries first. Green frame = same person, red = someone else (junk removed). '
        f'<label>Query camera: <select id="camera"><option value="">all</option>{cams}</select></label> '
        f'showing <span id="shown">{len(rows)}</span> of {len(rows)} queries.</p>\n'
        f'<table id="results">\n' + '\n'.join(rows) + '\n</table>\n'
        f'<script>{FILTER_SCRIPT}{HEATMAP_SCRIPT if heat else ""}{BROKEN_IMAGE_SCRIPT}</script>\n</body></html>\n')
    path = out_dir / 'index.html'
    path.write_text(page, encoding='utf-8')
    return path


def _ids_and_cameras(images):
    """(ids, cameras) as numpy arrays of a [(path, id, camera)] list."""
    return np.array([i for _, i, _ in images]), np.array([c for _, _, c in images])


class _Figures:
    """The page's pictures: each image's thumbnail written once under thumbs/, as a <figure> (with its heatmap
    thumbnail as data-heat when there is one)."""

    def __init__(self, out_dir, heat):
        self.out_dir, self.heat, self.written = out_dir, heat, {}

    def thumb(self, kind, index, path):
        key = (kind, index)
        if key not in self.written:
            self.written[key] = f'thumbs/{kind}{index:06d}.jpg'
            _thumbnail(path, self.out_dir / self.written[key])
        return self.written[key]

    def figure(self, css, kind, index, path, caption, title):
        img = self.thumb(kind, index, path)
        extra = f' data-heat="{self.heat[kind, index]}"' if (kind, index) in self.heat else ''
        css += ' tracklet' if is_tracklet(path) else ''
        return (f'<figure class="{css}" title="{html.escape(title)}"><img src="{html.escape(img)}" alt=""{extra}>'
                f'<figcaption>{html.escape(caption)}</figcaption></figure>')


def _query_rows(figures, dist, query_images, gallery_images, aps, ranked, top):
    """The page's rows, worst AP first (queries without a valid match last): the query, its AP, its top-`top`."""
    from tqdm import tqdm

    order = sorted(range(len(query_images)), key=lambda i: (math.isnan(aps[i]), aps[i], i))
    rows = []
    for rank, i in enumerate(tqdm(order, desc='html', dynamic_ncols=True), 1):
        qpath, qid, qcam = query_images[i]
        strip = []
        for g in ranked[i][:top]:
            gpath, gid, gcam = gallery_images[g]
            strip.append(figures.figure('hit' if gid == qid else 'miss', 'g', g, gpath, picture_name(gpath),
                                        f'id {gid}, camera {gcam}, distance {dist[i, g]:.4f}'))
        ap = 'no valid match' if math.isnan(aps[i]) else f'AP {100 * aps[i]:.2f}%'
        toggle = '<br><button class="heat" type="button">heatmap</button>' if figures.heat else ''
        rows.append(
            f'<tr class="query" data-cam="{qcam}" data-ap="{aps[i]:.6f}" data-query="{i}">'
            f'<td class="info">#{rank} (query {i})<br>id {qid}, camera {qcam}<br><b>{ap}</b>{toggle}</td>'
            f'<td>{figures.figure("query-image", "q", i, qpath, picture_name(qpath), f"query id {qid}, camera {qcam}")}'
            f'</td><td class="strip">{"".join(strip)}</td></tr>')
    return rows


def _threshold_html(same, different, threshold):
    """The paragraph of the verification threshold's shares (empty without a threshold)."""
    if threshold is None:
        return ''
    accept, reject = threshold_rates(same, different, threshold)
    return (f'<p id="threshold" data-threshold="{threshold:.6f}" data-accept="{accept:.6f}" '
            f'data-reject="{reject:.6f}">Verification threshold {threshold:.3f} (a pair is "same person" '
            f'above it): accepts {100 * accept:.2f}% of same-id pairs, rejects {100 * reject:.2f}% of '
            f'different-id pairs.</p>')


def _summary_html(summary, n_gallery, pictures, threshold_html, cameras_html):
    """The top of the page: the metrics, the pictures and how to read them, the threshold, the camera tables."""
    from reid.evaluation.metrics import rank_at

    metrics_html = ''.join(f'<span>{name}: <b>{100 * value:.2f}%</b></span>' for name, value in (
        ('Rank@1', rank_at(summary, 1)), ('Rank@5', rank_at(summary, 5)), ('Rank@10', rank_at(summary, 10)),
        ('mAP', summary['mAP']), ('mAP(standard)', summary['mAP_standard']), ('mINP', summary['mINP'])))
    pictures_html = ''.join(f'<img src="{name}" alt="{name}">' for name in pictures)
    return (
        f'<div id="summary">{metrics_html}<span>{summary["n_valid"]} queries evaluated, '
        f'{summary["n_skipped"]} without a match; {n_gallery} gallery images</span></div>\n'
        f'<div id="pictures">{pictures_html}</div>\n'
        '<p>CMC: Rank@k = the share of queries whose first correct match is among the top k. AP histogram: how '
        'the queries spread between easy (right) and hard (left). Scores: cosine of every valid query-gallery '
        'pair; the less the green (same person) and red (someone else) overlap, the easier it is to tell '
        'them apart with one threshold.</p>\n'
        f'{threshold_html}<div id="cameras">{cameras_html}</div>\n')


def _heat_thumbnails(out_dir, heatmaps, query_images, gallery_images, ranked, top):
    """Write the heatmap version of every shown thumbnail; return {(kind, index): its relative path}."""
    from PIL import Image

    from reid.evaluation.heatmap import overlay

    shown = [('q', i, query_images[i][0]) for i in range(len(query_images))]
    shown += [('g', int(g), gallery_images[g][0]) for g in sorted({int(g) for r in ranked.values() for g in r[:top]})]
    out = {}
    for (kind, index, path), heat in zip(shown, heatmaps([p for _, _, p in shown])):
        rel = f'thumbs/h{kind}{index:06d}.jpg'
        with Image.open(path) as img:
            blended = Image.fromarray(overlay(img, heat))
        width = max(1, round(blended.width * THUMB_HEIGHT / blended.height))
        blended.resize((width, THUMB_HEIGHT)).save(out_dir / rel, quality=85)
        out[kind, index] = rel
    return out
