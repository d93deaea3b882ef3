"""What BoxMOT's own crop resize changes in a run's features: bilinear from the frame (OpenCV) against test.py's
bicubic resize of the crop (PIL), both through the same ONNX export and the same normalisation.

    python -m bench.track_crops [--name demo_demo] [--sequence DIR] [--data data/demo/pytorch] [--scales 0.5,1,2,3]

1. Every detection of a sequence (default: a 60-frame generated clip, written to a temporary folder): the cosine
   between the feature BoxMOT's ReID backend computes from the frame and test.py's feature of the same crop (the
   box rounded as BoxMOT rounds it), by box height against the network's input height.
2. Retrieval on --data's query x gallery with each image resized to s times its size first (PIL Lanczos: a person
   seen larger or smaller than the network's input): Rank@1 and mAP with test.py's features and with BoxMOT's.
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np


def backends(run_dir):
    """Return (BoxMOT's ReID backend, test.py's features as a ReIDRun) on the run's ONNX export."""
    from reid.api import ReIDRun
    from reid.export import ensure_export
    from reid.runs import RunFolder
    from reid.tracking.trackers import boxmot_without_installs, reid_backend

    weights = ensure_export(RunFolder(run_dir), 'last', 'onnx', 'fp32')
    with boxmot_without_installs():
        boxmot = reid_backend(weights)
    return boxmot, ReIDRun(run_dir, backend='onnxruntime')


def crop_cosines(boxmot, api, sequence_dir):
    """Return (cosines, box heights) of every detection of the sequence: BoxMOT's feature from the frame against
    test.py's feature of the PIL crop at the box BoxMOT rounds to."""
    import cv2
    from PIL import Image

    from reid.tracking.mot import read_detections, read_sequence

    sequence = read_sequence(sequence_dir)
    cosines, heights = [], []
    for frame, dets in read_detections(sequence).items():
        bgr = cv2.imread(str(sequence.frame_path(frame)))
        rgb = Image.fromarray(bgr[:, :, ::-1])
        boxes = dets[:, :4]
        ours = boxmot.get_features(boxes, bgr)
        clipped = [(max(0, x1), max(0, y1), min(bgr.shape[1], x2), min(bgr.shape[0], y2))
                   for x1, y1, x2, y2 in boxes.round().astype(int)]
        theirs = api.features([rgb.crop(box) for box in clipped]).numpy()
        cosines += list((ours * theirs).sum(1))
        heights += [y2 - y1 for _, y1, _, y2 in clipped]
    return np.array(cosines), np.array(heights)


def scaled_retrieval(boxmot, api, data, scale):
    """Return {'test.py': (Rank@1, mAP), 'BoxMOT': (Rank@1, mAP)} of query x gallery with images scaled by `scale`."""
    from PIL import Image

    from reid.data.prepared import list_reid_images
    from reid.evaluation.metrics import compute_cmc_map, rank_at

    sets = {}
    for split in ('query', 'gallery'):
        items = list_reid_images(Path(data) / split)
        images = []
        for path, _, _ in items:
            with Image.open(path) as img:
                img = img.convert('RGB')
                size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
                images.append(img.resize(size, Image.LANCZOS) if scale != 1 else img)
        boxmot_features = np.concatenate([boxmot.get_features(np.array([[0, 0, im.width, im.height]], np.float32),
                                                              np.asarray(im)[:, :, ::-1].copy()) for im in images])
        sets[split] = ({'test.py': api.features(images).numpy(), 'BoxMOT': boxmot_features},
                       np.array([x[1] for x in items]), np.array([x[2] for x in items]))
    out = {}
    for name in ('test.py', 'BoxMOT'):
        (qf, ql, qc), (gf, gl, gc) = ((s[0][name], s[1], s[2]) for s in (sets['query'], sets['gallery']))
        res = compute_cmc_map(qf, ql, qc, gf, gl, gc)
        out[name] = (100 * rank_at(res, 1), 100 * res['mAP'])
    return out


def print_crop_table(cosines, heights, input_height):
    print(f'| crops (box height vs the input {input_height} px) | crops | mean cosine | 1st percentile | min |')
    print('|---|---|---|---|---|')
    groups = (('all', heights > 0), (f'< {input_height} px (enlarged)', heights < input_height),
              (f'{input_height}-{2 * input_height - 1} px', (heights >= input_height) & (heights < 2 * input_height)),
              (f'>= {2 * input_height} px (shrunk 2x or more)', heights >= 2 * input_height))
    for label, mask in groups:
        if mask.any():
            c = cosines[mask]
            print(f'| {label} | {mask.sum()} | {c.mean():.4f} | {np.percentile(c, 1):.4f} | {c.min():.4f} |')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--name', default='demo_demo')
    p.add_argument('--model_dir', default='model')
    p.add_argument('--sequence', default=None, help='MOTChallenge sequence folder (default: a generated clip)')
    p.add_argument('--frames', default=60, type=int, help='frames of the generated clip')
    p.add_argument('--data', default='data/demo/pytorch', help='prepared folder whose query/gallery are scaled')
    p.add_argument('--scales', default='0.5,1,2,3', help='comma-separated scales of the retrieval images')
    args = p.parse_args(argv)
    run_dir = Path(args.model_dir) / args.name
    boxmot, api = backends(run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        sequence = args.sequence
        if sequence is None:
            from reid.data.clips import make_clip

            sequence = Path(tmp) / 'CLIP-01'
            make_clip(sequence, frames=args.frames, progress=False)
        cosines, heights = crop_cosines(boxmot, api, sequence)
    where = args.sequence or f'a generated clip of {args.frames} frames'
    print(f'{run_dir}: BoxMOT crops (bilinear from the frame) vs test.py (bicubic of the crop), {where}')
    print_crop_table(cosines, heights, api.size[0])
    print('\n| images scaled by | Rank@1 test.py | Rank@1 BoxMOT | mAP test.py | mAP BoxMOT |\n|---|---|---|---|---|')
    for scale in (float(s) for s in args.scales.split(',')):
        r = scaled_retrieval(boxmot, api, args.data, scale)
        print(f'| {scale:g} | {r["test.py"][0]:.2f} | {r["BoxMOT"][0]:.2f} | {r["test.py"][1]:.2f} | '
              f'{r["BoxMOT"][1]:.2f} |', flush=True)


if __name__ == '__main__':
    main()
