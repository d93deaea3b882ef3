"""track.py's work: one MOTChallenge sequence through a BoxMOT tracker with the run's export as its appearance
model, the results file, the picture (or video) of the tracks, and the metrics when the sequence has gt/gt.txt.
"""
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reid.tracking.mot import read_detections, read_sequence, results_line, write_results
from reid.tracking.trackers import boxmot_without_installs, build_tracker, check_backend, check_resize, \
    check_tracker, require_boxmot

logger = logging.getLogger(__name__)


@dataclass
class Followed:
    """What one pass over a sequence gave: the results lines, the strip's drawn frames, seconds in the tracker."""
    lines: list
    drawn: list
    seconds: float = 0.0


def read_frame(sequence, frame):
    """Return frame `frame` of the sequence as OpenCV's BGR uint8 array; ValueError naming a missing image."""
    import cv2

    path = sequence.frame_path(frame)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'{path}: cannot read frame {frame} of {sequence.length} (seqinfo.ini names it)')
    return image


def follow(tracker, sequence, detections, strip, video=None):
    """Run `tracker` over every frame; return Followed: a results line per tracked box (ids from 1, as
    MOTChallenge numbers them), the frames of `strip` drawn, and every frame drawn into `video` if given."""
    from tqdm import tqdm

    from reid.tracking.picture import draw_tracks

    followed = Followed([], [])
    for frame in tqdm(range(1, sequence.length + 1), desc=f'tracking {sequence.name}', unit='frame',
                      dynamic_ncols=True):
        image = read_frame(sequence, frame)
        dets = detections.get(frame, np.zeros((0, 5), np.float32))
        rows = np.column_stack([dets, np.zeros(len(dets), np.float32)])   # x1, y1, x2, y2, score, class 0
        start = time.perf_counter()
        tracks = tracker.update(rows, image)   # [M, 8]: x1, y1, x2, y2, id (from 0), score, class, detection
        followed.seconds += time.perf_counter() - start
        boxes = [(int(t[4]) + 1, *t[:4]) for t in tracks]
        followed.lines += [results_line(frame, track_id, box, t[5]) for (track_id, *box), t in zip(boxes, tracks)]
        if frame in strip or video is not None:
            drawn = draw_tracks(image, boxes)
            if frame in strip:
                followed.drawn.append(drawn)
            if video is not None:
                video.add(drawn)
    return followed


def appearance_weights(opts, entry):
    """Return the export BoxMOT's ReID loads for the run at --which_epoch (written on first use), or None for a
    tracker of motion only (no run needed)."""
    from reid.export import ensure_export
    from reid.runs import RunFolder

    fmt = check_backend(opts.backend)
    if not entry.appearance:
        return None
    run = RunFolder(Path(opts.model_dir) / opts.name)
    run.read_opts()   # a missing run is named before any export
    return ensure_export(run, opts.which_epoch, fmt, 'fp32')


def track_sequence(opts):
    """track.py: write OUT/<sequence>.txt and OUT/<sequence>.jpg (or .mp4 with --video), log the metrics
    against gt/gt.txt when it exists; return {'results': path, 'picture': path, 'metrics': dict or None,
    'ms_per_frame': the tracker's time (re-ID included) per frame}."""
    from reid.tracking.picture import VideoOut, strip_frames, write_strip

    sequence = read_sequence(opts.sequence)
    entry = check_tracker(opts.tracker)
    check_resize(opts.resize)
    require_boxmot()
    weights = appearance_weights(opts, entry)
    detections = read_detections(sequence)
    out = Path(opts.output)
    out.mkdir(parents=True, exist_ok=True)
    results, picture = out / f'{sequence.name}.txt', out / f'{sequence.name}.{"mp4" if opts.video else "jpg"}'
    first = read_frame(sequence, 1)
    video = VideoOut(picture, sequence.frame_rate, (first.shape[1], first.shape[0])) if opts.video else None
    try:
        with boxmot_without_installs():
            tracker = build_tracker(entry, weights, sequence.frame_rate, opts.resize)
            followed = follow(tracker, sequence, detections, strip_frames(sequence.length), video)
    finally:
        if video is not None:
            video.close()
    write_results(results, followed.lines)
    if not opts.video:
        write_strip(picture, followed.drawn)
    ids = len({line.split(',')[1] for line in followed.lines})
    ms = 1000 * followed.seconds / sequence.length
    model = f'appearance from {weights.name}, {opts.resize} crops' if weights else 'motion only'
    logger.info(f'{results}: {len(followed.lines)} boxes of {ids} tracks over {sequence.length} frames '
                f'({entry.name}, {model}; {ms:.1f} ms per frame); {picture}')
    metrics = None
    if sequence.gt_file.is_file():
        from reid.tracking.metrics import metrics_line, mot_metrics

        metrics = mot_metrics(sequence, results)
        logger.info(metrics_line(metrics))
    return {'results': results, 'picture': picture, 'metrics': metrics, 'ms_per_frame': ms}
