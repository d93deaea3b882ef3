"""Raw-pixel retrieval on the synthetic demo set: the floor any learned feature must beat clearly.

    python -m bench.raw_pixels [--data data/demo] [--size demo] [--seed 0] [--resize 64x32]
Generates the set at --data when it is not there, then prints Rank@k / mAP of raw pixels next to random features.
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np


from reid.data.images import is_image_file, parse_market_name


def load_pixel_features(folder, size):
    """(features (N, D) float32, labels, cameras) of the images of `folder`, resized to size=(H, W) and flattened."""
    from PIL import Image
    names = sorted(n for n in os.listdir(folder) if is_image_file(n))
    def pixel_row(name):
        with Image.open(Path(folder) / name) as img:
            return np.asarray(img.convert('RGB').resize(size[::-1], Image.BILINEAR), dtype=np.float32).reshape(-1)

    pixels = np.stack([pixel_row(n) for n in names])
    labels, cams = zip(*(parse_market_name(n) for n in names))
    return pixels, np.array(labels), np.array(cams)


def centred_unit_rows(query, gallery):
    """Subtract the mean image of both sets (so the average scene does not dominate), then L2-normalise rows."""
    mean = np.concatenate([query, gallery]).mean(0)
    q, g = query - mean, gallery - mean
    return q / np.linalg.norm(q, axis=1, keepdims=True), g / np.linalg.norm(g, axis=1, keepdims=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default='data/demo', help='raw synthetic set (made here when missing)')
    parser.add_argument('--size', default='demo', choices=('tiny', 'demo', 'market'))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--resize', default='64x32', help='HxW the images are resized to before flattening')
    args = parser.parse_args(argv)
    parts = args.resize.lower().split('x')
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f'--resize {args.resize}: expected HxW, e.g. 64x32')
    size = (int(parts[0]), int(parts[1]))
    from reid.evaluation import metrics
    from reid.data import synthetic

    root = Path(args.data)
    if not (root / 'query').is_dir():
        start = time.perf_counter()
        try:
            synthetic.make_dataset(root, size=args.size, seed=args.seed)
        except ValueError as err:
            raise SystemExit(f'raw_pixels.py: {err}') from None
        print(f'generated the {args.size} set at {root} in {time.perf_counter() - start:.1f} s')
    marker = synthetic.read_marker(root)
    print(f'data: {root} ({"synthetic " + str(marker.get("size")) if marker else "not a generated set"})')

    start = time.perf_counter()
    qf, ql, qc = load_pixel_features(root / 'query', size)
    gf, gl, gc = load_pixel_features(root / 'bounding_box_test', size)
    qf, gf = centred_unit_rows(qf, gf)
    pixels = metrics.compute_cmc_map(qf, ql, qc, gf, gl, gc)
    seconds = time.perf_counter() - start
    # the naive reference: random features rank the gallery at random
    rng = np.random.default_rng(0)
    rq, rg = rng.standard_normal((len(qf), 64)), rng.standard_normal((len(gf), 64))
    rq, rg = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (rq, rg))
    random = metrics.compute_cmc_map(rq, ql, qc, rg, gl, gc)

    print(f'{len(qf)} queries, {len(gf)} gallery images, pixels resized to {size[0]}x{size[1]} '
          f'({qf.shape[1]} dims), {seconds:.1f} s')
    print(f'{"features":14s} {"Rank@1":>7s} {"Rank@5":>7s} {"Rank@10":>7s} {"mAP":>7s}')
    for name, res in (('raw pixels', pixels), ('random', random)):
        cmc = res['cmc']
        print(f'{name:14s} ' + ' '.join(f'{100 * cmc[min(k, len(cmc)) - 1]:7.2f}' for k in (1, 5, 10))
              + f' {100 * res["mAP"]:7.2f}')
    print(f'raw pixels / random: Rank@1 x{pixels["cmc"][0] / max(random["cmc"][0], 1e-12):.2f}, '
          f'mAP x{pixels["mAP"] / max(random["mAP"], 1e-12):.2f}')


if __name__ == '__main__':
    main()
