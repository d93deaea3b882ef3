"""Market-1501: bounding_box_train/, bounding_box_test/ (gallery), query/, gt_bbox/ (multi-query), names
`0002_c1s1_000451_03.jpg`; the generated stand-in is drawn in exactly this layout.
"""
from reid.data.layouts.common import PERSON, Layout, market_folder, require_folders


def read_market(root, options):
    """Market-1501 and DukeMTMC-reID: bounding_box_train/, bounding_box_test/ (gallery), query/, gt_bbox/."""
    root = require_folders(root, 'bounding_box_train', 'bounding_box_test', 'query',
                           what='a Market-1501 / DukeMTMC-reID download')
    splits = {'train_all': market_folder(root / 'bounding_box_train'), 'query': market_folder(root / 'query'),
              'gallery': market_folder(root / 'bounding_box_test')}
    if (root / 'gt_bbox').is_dir():
        query_ids = {item.id for item in splits['query']}
        splits['multi-query'] = [item for item in market_folder(root / 'gt_bbox') if item.id in query_ids]
        if not splits['multi-query']:
            raise ValueError(f'{root / "gt_bbox"}: no image of a query id, so multi-query would be empty')
    return splits


def generate_market(drawn):
    """The drawn set as it is planned: Market-1501's folders and names, distractors and junk included."""
    return [(f'{s.folder}/{s.name}', s) for s in drawn.specs], {}


LAYOUT = Layout('market', read_market, PERSON, ('bounding_box_train', 'bounding_box_test', 'query'),
                'single query (and multi-query from gt_bbox); same id and camera is junk', generate_market)
