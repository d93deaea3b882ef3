"""Rankings for people: the ranked gallery of a query, its picture (show.png), and a static HTML page of every
query's top-10.

The page (demo.py --html DIR) needs no server and keeps working when DIR is moved: thumbnails are copied into it.
"""
import html
import math
from pathlib import Path

import numpy as np

THUMB_HEIGHT = 128

PAGE_STYLE = """
body { font-family: sans-serif; margin: 1em; background: #fafafa; }
#summary { font-size: 1.1em; margin-bottom: 0.8em; }
#summary span { margin-right: 1.2em; }
table { border-collapse: collapse; }
tr.query td { border-top: 1px solid #ccc; padding: 4px; vertical-align: top; }
figure { display: inline-block; margin: 2px; text-align: center; font-size: 10px; width: 72px;
         word-break: break-all; }
figure img { height: 128px; width: 64px; object-fit: contain; display: block; margin: auto; }
figure.query-image { border: 4px solid #333; }
figure.hit { border: 4px solid #1a9c3a; }
figure.miss { border: 4px solid #d62728; }
td.info { font-size: 12px; width: 9em; }
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


def ranked_gallery(keys, ql, qc, gl, gc):
    """Return gallery indices ranked by ascending key (stable), junk removed (same id+camera, or id -1).

    `ql`/`qc` None (a photo of unknown id and camera): only the id -1 images are removed.
    """
    from reid.evaluation.metrics import JUNK_ID, junk_mask

    order = np.argsort(keys, kind='stable')
    if ql is None:
        return order[np.asarray(gl)[order] != JUNK_ID]
    return order[~junk_mask(ql, qc, gl[order], gc[order])]


def draw_ranking(query, shown, path):
    """Save a 1 x (1 + len(shown)) figure: the query, then (image, is_match, caption) with green/red frames."""
    import matplotlib
    matplotlib.use('Agg')  # headless: never needs a display
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(1, 1 + len(shown), figsize=(1.6 * (1 + len(shown)), 3.6), squeeze=False)
    panels = [(query[0], None, query[1])] + list(shown)
    for ax, (img_path, match, caption) in zip(axes[0], panels):
        try:
            with Image.open(img_path) as img:
                ax.imshow(img.convert('RGB'))
        except Exception as err:  # a damaged image gets an empty panel, named, instead of no picture at all
            print(f'warning: {img_path}: unreadable image ({type(err).__name__}), left blank')
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
    """Write a small JPEG copy of image `src` at `dst` (height THUMB_HEIGHT)."""
    from PIL import Image

    with Image.open(src) as img:
        img = img.convert('RGB')
        width = max(1, round(img.width * THUMB_HEIGHT / img.height))
        img.resize((width, THUMB_HEIGHT)).save(dst, quality=85)


def _figure(css, src, caption, title):
    return (f'<figure class="{css}" title="{html.escape(title)}"><img src="{html.escape(src)}" alt="">'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>')


def write_report(out_dir, dist, query_images, gallery_images, summary, top=10, title='Re-ID results'):
    """Write out_dir/index.html (+ out_dir/thumbs/) and return its path.

    `dist` (Q, G): smaller = better (e.g. -cosine, or re-ranked distances). `query_images`/`gallery_images`:
    [(path, id, camera)] in the order of dist's rows/columns. `summary`: the metrics dict of the whole set.
    One row per query: its image, AP and top-`top` strip (green = same id, red = another), worst AP first
    (queries without a valid match last), and a filter by query camera.
    """
    from tqdm import tqdm

    from reid.evaluation.metrics import rank_at

    out_dir = Path(out_dir)
    thumbs = out_dir / 'thumbs'
    thumbs.mkdir(parents=True, exist_ok=True)  # files are overwritten by name, nothing else is touched
    dist = np.asarray(dist)
    ql = np.array([p for _, p, _ in query_images])
    qc = np.array([c for _, _, c in query_images])
    gl = np.array([p for _, p, _ in gallery_images])
    gc = np.array([c for _, _, c in gallery_images])
    aps = query_average_precisions(dist, ql, qc, gl, gc)
    order = sorted(range(len(ql)), key=lambda i: (math.isnan(aps[i]), aps[i], i))

    written = {}

    def thumb(kind, index, path):
        key = (kind, index)
        if key not in written:
            written[key] = f'thumbs/{kind}{index:06d}.jpg'
            _thumbnail(path, out_dir / written[key])
        return written[key]

    rows = []
    for rank, i in enumerate(tqdm(order, desc='html', dynamic_ncols=True), 1):
        qpath = query_images[i][0]
        strip = []
        for g in ranked_gallery(dist[i], ql[i], qc[i], gl, gc)[:top]:
            gpath, gid, gcam = gallery_images[g]
            hit = gid == ql[i]
            strip.append(_figure('hit' if hit else 'miss', thumb('g', g, gpath), Path(gpath).name,
                                 f'id {gid}, camera {gcam}, distance {dist[i, g]:.4f}'))
        ap = 'no valid match' if math.isnan(aps[i]) else f'AP {100 * aps[i]:.2f}%'
        rows.append(
            f'<tr class="query" data-cam="{qc[i]}" data-ap="{aps[i]:.6f}" data-query="{i}">'
            f'<td class="info">#{rank} (query {i})<br>id {ql[i]}, camera {qc[i]}<br><b>{ap}</b></td>'
            f'<td>{_figure("query-image", thumb("q", i, qpath), Path(qpath).name, f"query id {ql[i]}, camera {qc[i]}")}'
            f'</td><td class="strip">{"".join(strip)}</td></tr>')

    cams = ''.join(f'<option value="{c}">camera {c}</option>' for c in sorted(set(qc.tolist())))
    metrics_html = ''.join(f'<span>{name}: <b>{100 * value:.2f}%</b></span>' for name, value in (
        ('Rank@1', rank_at(summary, 1)), ('Rank@5', rank_at(summary, 5)), ('Rank@10', rank_at(summary, 10)),
        ('mAP', summary['mAP']), ('mAP(standard)', summary['mAP_standard']), ('mINP', summary['mINP'])))
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<style>{PAGE_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n'
        f'<div id="summary">{metrics_html}<span>{summary["n_valid"]} queries evaluated, '
        f'{summary["n_skipped"]} without a match; {len(gl)} gallery images</span></div>\n'
        f'<p>Worst queries first. Green frame = same person, red = someone else (junk removed). '
        f'<label>Query camera: <select id="camera"><option value="">all</option>{cams}</select></label> '
        f'showing <span id="shown">{len(rows)}</span> of {len(rows)} queries.</p>\n'
        f'<table id="results">\n' + '\n'.join(rows) + '\n</table>\n'
        f'<script>{FILTER_SCRIPT}</script>\n</body></html>\n')
    path = out_dir / 'index.html'
    path.write_text(page, encoding='utf-8')
    return path
