"""Re-ID file names, datasets and transforms: the one place that knows how images are named and loaded.

Market-1501, DukeMTMC-reID, MSMT17 and VeRi-776 all name an image `<id>_c<camera>...`; parse it here only.
"""
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
