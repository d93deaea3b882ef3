"""DukeMTMC-reID: Market-1501's folders without gt_bbox/, names `0005_c2_f0046985.jpg` (read by Market's reader)."""
from reid.data.layouts.common import PERSON, Layout
from reid.data.layouts.market import read_market


def generate_duke(drawn):
    """0005_c2_f0046985.jpg in Market's folders, no gt_bbox."""
    return [(f'{s.folder}/{s.name.split("_")[0]}_c{s.cam}_f{k:07d}.jpg', s)
            for k, s in enumerate(drawn.specs) if s.folder != 'gt_bbox'], {}


# Same marker folders as Market-1501: detection answers 'market', whose reader is the same.
LAYOUT = Layout('duke', read_market, PERSON, ('bounding_box_train', 'bounding_box_test', 'query'),
                'single query; same id and camera is junk', generate_duke, cameras=8, detect=False)
