"""VeRi-776: image_train/, image_query/, image_test/ (gallery), names `0001_c001_00016450_0.jpg`, 20 cameras."""
from reid.data.layouts.common import VEHICLE, Layout, market_folder, require_folders


def read_veri(root, options):
    """VeRi-776: image_train/, image_query/, image_test/ (gallery), names `0001_c001_00016450_0.jpg`."""
    root = require_folders(root, 'image_train', 'image_query', 'image_test', what='a VeRi-776 download')
    return {'train_all': market_folder(root / 'image_train'), 'query': market_folder(root / 'image_query'),
            'gallery': market_folder(root / 'image_test')}


def generate_veri(drawn):
    """image_train/, image_query/, image_test/, 0001_c001_00016450_0.jpg (no distractors or junk)."""
    folder = {'bounding_box_train': 'image_train', 'query': 'image_query', 'bounding_box_test': 'image_test'}
    return [(f'{folder[s.folder]}/{s.look_key[1]:04d}_c{s.cam:03d}_{k:08d}_0.jpg', s)
            for k, s in enumerate(drawn.specs) if s.mode == 'person' and s.folder in folder], {}


LAYOUT = Layout('veri', read_veri, VEHICLE, ('image_train', 'image_query', 'image_test'),
                'single query; same id and camera is junk', generate_veri, cameras=20)
