"""CUHK03-NP (the 767/700 protocol): detected/ and labeled/, each a Market layout; --cuhk03 picks one."""
from pathlib import Path

from reid.data.layouts.common import PERSON, Layout, Option, require_folders
from reid.data.layouts.market import read_market


def read_cuhk03(root, options):
    """CUHK03-NP (767/700 protocol): detected/ and labeled/, each a Market layout; --cuhk03 picks one."""
    kind = options.get('cuhk03') or 'detected'
    require_folders(root, kind, what='a CUHK03-NP download')
    return read_market(Path(root) / kind, options)


def generate_cuhk03(drawn):
    """detected/ and labeled/ in Market layout, 0001_c1_1.png (the same images in both)."""
    return [(f'{kind}/{s.folder}/{s.look_key[1]:04d}_c{s.cam}_{k}.png', s) for kind in ('detected', 'labeled')
            for k, s in enumerate(drawn.specs) if s.mode == 'person' and s.folder != 'gt_bbox'], {}


LAYOUT = Layout('cuhk03', read_cuhk03, PERSON, ('detected', 'labeled'),
                'CUHK03-NP 767/700 ids; single query; same id and camera is junk', generate_cuhk03,
                options=(Option('--cuhk03', dict(default=None, choices=('detected', 'labeled'),
                                                 help='CUHK03-NP: which boxes (detected by default)'), selects=True),),
                cameras=2)
