"""Re-ID images: the Market-1501 file name, a split folder as a dataset, and the check that every image decodes.

Market-style names (`<id>_c<camera>...`) are parsed here only; a prepared folder's images.csv (reid.data.prepared)
records every image's id and camera, so nothing after prepare.py parses a name again.
"""
import logging
import os
import re
from pathlib import Path

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')

# id is digits or -1 (junk); the camera may have several digits (MSMT17 has 15, VeRi-776 has 20 cameras).
_NAME = re.compile(r'^(-1|\d+)_c(\d+)')


def parse_market_name(name):
    """Return (person_id, camera) of a Market-style file name such as `0002_c1s1_000451_03.jpg`.

    Works for Market-1501 (`c1s1`), DukeMTMC-reID (`c2_f...`), VeRi-776 (`c001_...`) and multi-digit cameras.
    Raises ValueError naming the file when the name does not follow the pattern.
    """
    base = Path(name).name
    m = _NAME.match(base)
    if m is None:
        raise ValueError(f'{name}: not a Market-style re-ID file name (expected e.g. 0002_c1s1_000451_03.jpg)')
    return int(m.group(1)), int(m.group(2))


def is_image_file(name):
    """True for the image extensions the toolkit reads (case-insensitive)."""
    return str(name).lower().endswith(IMG_EXTENSIONS)


class UnreadableImage(ValueError):
    """An image that could not be read while features were computed: the message names it. Raised in a
    DataLoader worker it reaches the main process with the worker's traceback prefixed, so only the original
    message is kept: the commands still print one line."""

    def __init__(self, message):
        # from a worker: 'Caught UnreadableImage in DataLoader worker ... reid.data.images.UnreadableImage: <message>'
        super().__init__(str(message).rsplit('UnreadableImage: ', 1)[-1].strip())


class ReIDImageFolder:
    """One prepared split (a folder per id) in torchvision ImageFolder order; items are (image, label).

    Labels are the index of the sorted folder names. With `class_to_idx` from another split (val against
    train) the labels follow that split's indices. Raises ValueError naming the folder when it is missing,
    holds no images, or (with `class_to_idx`) has an id the other split lacks. A file that cannot be read when
    its item is asked for is replaced by the next readable one (`substitute`, training) or raises UnreadableImage.
    """

    def __init__(self, root, transform=None, class_to_idx=None, substitute=True):
        root = Path(root)
        if not root.is_dir():
            raise ValueError(f'{root}: folder not found (run prepare.py first, or check --data_dir/--test_dir)')
        self.root, self.transform = root, transform
        self.classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
        if class_to_idx is None:
            class_to_idx = {c: i for i, c in enumerate(self.classes)}
        unknown = [c for c in self.classes if c not in class_to_idx]
        if unknown:
            raise ValueError(f'{root}: ids {unknown[:5]} are not in the training split')
        self.class_to_idx = {c: class_to_idx[c] for c in self.classes}
        # Same walk as torchvision's ImageFolder, so indices match anything built on it.
        self.samples = [(os.path.join(dirpath, f), self.class_to_idx[c])
                        for c in self.classes
                        for dirpath, _, files in sorted(os.walk(root / c, followlinks=True))
                        for f in sorted(files) if is_image_file(f)]
        if not self.samples:
            raise ValueError(f'{root}: no images found (expected one sub-folder of images per id)')
        empty = sorted(set(self.classes) - {Path(p).relative_to(root).parts[0] for p, _ in self.samples})
        if empty:  # it would become a class without a single image
            raise ValueError(f'{root / empty[0]}: id folder without images ({len(empty)} such); '
                             'remove it or re-run prepare.py')
        self.targets = [t for _, t in self.samples]
        self.skipped = {}  # path -> reason, for files that could not be read during this run (this process)
        # training substitutes an unreadable file; features may not (the row would hold another image's feature)
        self.substitute = substitute

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        # A file that goes bad during a run is skipped: the next readable sample takes its place (the batch keeps
        # its size), and the file is named once and recorded in self.skipped.
        for offset in range(len(self.samples)):
            path, target = self.samples[(index + offset) % len(self.samples)]
            try:
                img = load_rgb(path)
            except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for a damaged file
                if not self.substitute:
                    raise UnreadableImage(f'{path}: became unreadable during the run ({describe_error(err)}). '
                                          'Nothing was saved; replace it and run again') from None
                if path not in self.skipped:
                    self.skipped[path] = describe_error(err)
                    logging.getLogger(__name__).warning(f'warning: skipped unreadable image {path} '
                                                        f'({self.skipped[path]})')
                continue
            return (self.transform(img) if self.transform else img), target
        raise ValueError(f'{self.root}: no image of this split can be read any more')


def load_rgb(path):
    """Return the image at `path` fully decoded as RGB (a truncated file raises here, not later)."""
    from PIL import Image

    with Image.open(path) as img:
        return img.convert('RGB')


def describe_error(err):
    """Return the first line of an exception as 'Type: message'."""
    text = str(err).strip().splitlines()
    return f'{type(err).__name__}: {text[0]}' if text else type(err).__name__


def image_problem(path):
    """Return None when `path` decodes fully as an image, else a short reason (empty, truncated, not an image)."""
    try:
        if os.path.getsize(path) == 0:
            return 'empty file (0 bytes)'
        from PIL import Image

        with Image.open(path) as img:
            img.load()
    except Exception as err:
        return describe_error(err)
    return None


def unreadable_images(paths, desc='checking images', progress=True):
    """Return [(path, reason)] of the files in `paths` that do not decode, in the order given.

    A full decode, not PIL's verify(): a JPEG cut in half passes verify(). A thread pool, since PIL releases
    the GIL while decoding (3x faster than one thread on 2 cores: bench/bench_image_check.py).
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    paths = list(paths)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        reasons = list(tqdm(pool.map(image_problem, paths, chunksize=64), total=len(paths), desc=desc,
                            unit='img', leave=False, disable=not progress or len(paths) < 1000))
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]


def require_readable_images(paths, desc='checking images', progress=True):
    """Raise ValueError listing the files of `paths` that do not decode (one line; the first five named)."""
    bad = unreadable_images(paths, desc, progress)
    if bad:
        named = '; '.join(f'{p} ({r})' for p, r in bad[:5]) + (f'; and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise ValueError(f'{len(bad)} unreadable or corrupt image(s): {named}. Replace or remove them '
                         '(or re-run prepare.py from an intact download)')
