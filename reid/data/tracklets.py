"""Tracklets of a video layout's prepared split as a dataset: each item is seq_len frames of one tracklet drawn
evenly, at random or all of them, [T, 3, h, w], every frame under the same augmentation; and the test's chunks.

A prepared folder is a video one when its marker's layout is (reid.data.layouts: `tracklets`). Labels are
ReIDImageFolder's (the index of the sorted id folders), so P x K sampling over the items' targets counts
tracklets, and val is labelled with train's indices.
"""
import sys
from pathlib import Path

import torch

from reid.data.images import ReIDImageFolder, describe_error, load_rgb
from reid.data.prepared import list_reid_images, list_reid_tracklets, prepared_info

SAMPLES = ('evenly', 'random', 'all')
DEFAULT_SEQ_LEN = 4          # frames per tracklet in a training batch (the issue's, and common on MARS)
DEFAULT_SAMPLE = 'random'    # training: a new set of frames of each tracklet every epoch
SEED_RANGE = 2 ** 62


def video_layout(root):
    """Return the name of the video layout prepared in `root` (mars, dukev, ilidsvid, prid2011), or None for an
    image layout's folder (or one without prepare.py's marker)."""
    from reid.data.layouts import LAYOUTS

    name = prepared_info(root).get('layout')
    return name if name in LAYOUTS and LAYOUTS[name].tracklets else None


def frame_positions(count, seq_len, sample, generator=None):
    """Return the positions (0-based, ascending) of the frames a tracklet of `count` frames gives.

    evenly: seq_len frames at the centres of seq_len equal segments, floor((2k + 1) * count / (2 * seq_len)) for
    k = 0..seq_len-1 (a tracklet shorter than seq_len repeats frames, in order). random: seq_len distinct frames
    uniformly at random, sorted (shorter: every frame once and seq_len - count more drawn with replacement).
    all: every frame, 0..count-1. `generator`: torch's for the draws (None: the global one, seeded per worker).
    """
    if sample not in SAMPLES:
        raise ValueError(f'--sample {sample}: expected one of {", ".join(SAMPLES)}')
    if count < 1 or seq_len < 1:
        raise ValueError(f'--seq_len {seq_len}: a tracklet of {count} frames gives no frame')
    if sample == 'all':
        return list(range(count))
    if sample == 'evenly':
        return [(2 * k + 1) * count // (2 * seq_len) for k in range(seq_len)]
    if count >= seq_len:
        return sorted(torch.randperm(count, generator=generator)[:seq_len].tolist())
    extra = torch.randint(count, (seq_len - count,), generator=generator).tolist()
    return sorted(list(range(count)) + extra)


def tracklet_chunks(count, length):
    """Return the test's chunks of a tracklet of `count` frames: consecutive runs of `length` positions, the last
    one shorter when `length` does not divide `count`; `length` 0: every frame in one chunk."""
    length = length or count
    return [list(range(start, min(start + length, count))) for start in range(0, count, length)]


def same_draws(transform, seed):
    """Return `transform` applied under torch's RNG seeded with `seed` (and the RNG restored after), so every
    frame of a tracklet gets the same crop, flip, jitter and erasing."""
    def apply(img):
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)   # the CPU generator the transforms draw from (not CUDA's)
            return transform(img)
    return apply


class TrackletDataset:
    """The tracklets of one prepared split (list_reid_tracklets' order); item i is (frames [T, 3, h, w], label).

    T = seq_len frames drawn by `sample` (frame_positions; 'all': the whole tracklet, so T varies and a loader
    needs batch size 1). `transform` is applied to every frame under one seed per item. `samples`, `classes`,
    `class_to_idx` and `skipped` are the frames' ReIDImageFolder's (`targets`: one label per tracklet).
    """

    def __init__(self, root, transform=None, seq_len=DEFAULT_SEQ_LEN, sample=DEFAULT_SAMPLE, class_to_idx=None):
        frame_positions(1, seq_len, sample)   # a bad --seq_len or --sample fails here, not in a loader
        self.frames = ReIDImageFolder(root, None, class_to_idx)
        self.root, self.transform, self.seq_len, self.sample = Path(root), transform, seq_len, sample
        self.tracklets = list_reid_tracklets(root)
        self.targets = [self.frames.targets[t.indices[0]] for t in self.tracklets]
        # the frames' records: what the checks (require_readable_images) and the run's log read
        self.samples, self.skipped = self.frames.samples, self.frames.skipped
        self.classes, self.class_to_idx = self.frames.classes, self.frames.class_to_idx

    def __len__(self):
        return len(self.tracklets)

    def __getitem__(self, index):
        indices = self.tracklets[index].indices
        positions = frame_positions(len(indices), self.seq_len, self.sample)
        transform = self.transform
        if transform is not None:
            transform = same_draws(transform, int(torch.randint(SEED_RANGE, ())))
        frames = [self.frame(indices, p) for p in positions]
        if transform is not None:
            frames = torch.stack([transform(img) for img in frames])
        return frames, self.targets[index]

    def frame(self, indices, position):
        """The image of frame `position` of a tracklet (its frame `indices`); an unreadable frame is named once
        (self.skipped) and the next readable frame of the same tracklet takes its place."""
        for offset in range(len(indices)):
            path = self.samples[indices[(position + offset) % len(indices)]][0]
            try:
                return load_rgb(path)
            except Exception as err:  # PIL raises several types for a damaged file
                if path not in self.skipped:
                    self.skipped[path] = describe_error(err)
                    from tqdm import tqdm
                    tqdm.write(f'warning: skipped unreadable frame {path} ({self.skipped[path]})', file=sys.stderr)
        raise ValueError(f'{Path(self.samples[indices[0]][0]).parent}: no frame of this tracklet can be read')


def split_entries(folder, names=None):
    """Return the rows of a result file as [(path, id, camera)] of a prepared split: its images (`names` None), or
    its tracklets (path: the tuple of their frame paths), checked against a result's tracklet `names`."""
    if names is None:
        return list_reid_images(folder)
    images = list_reid_images(folder)
    tracklets = list_reid_tracklets(folder)
    if [t.name for t in tracklets] != list(names):
        raise ValueError(f'{folder}: its {len(tracklets)} tracklets are not the {len(names)} of the result file; '
                         'run test.py on the same --test_dir')
    return [(tuple(images[i][0] for i in t.indices), t.label, t.camera) for t in tracklets]
