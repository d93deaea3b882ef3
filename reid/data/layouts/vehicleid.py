"""VehicleID: image/ + train_test_split/{train_list, test_list_800|1600|2400}.txt, no cameras; per test id one
random image in the gallery, the rest queries (evaluate_gpu.py --trials re-draws it).
"""
from reid.data.images import is_image_file
from reid.data.layouts.common import VEHICLE, Item, Layout, Option, gallery_draw, require_folders


def read_vehicleid(root, options):
    """VehicleID: image/ + train_test_split/{train_list, test_list_800|1600|2400}.txt (`image_name vehicle_id`).

    No cameras. Query/gallery = trial 0 of gallery_draw (per test id one random image in the gallery, the rest
    queries); evaluate_gpu.py --trials N re-draws them from the features.
    """
    root = require_folders(root, 'image', 'train_test_split', what='a VehicleID download')
    size = int(options.get('test_size') or 800)
    train = _vehicleid_list(root, 'train_list.txt')
    test = _vehicleid_list(root, f'test_list_{size}.txt')
    in_gallery = gallery_draw([int(item.id) for item in test], seed=0)   # test is sorted by path: canonical
    return {'train_all': train, 'query': [t for t, g in zip(test, in_gallery) if not g],
            'gallery': [t for t, g in zip(test, in_gallery) if g]}


def _vehicleid_list(root, name):
    list_file = root / 'train_test_split' / name
    if not list_file.is_file():
        raise ValueError(f'{list_file}: list file missing (check --test_size: 800, 1600 or 2400)')
    items = []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f'{list_file}: line {number}: expected `image_name vehicle_id`, got {line.strip()!r}')
        path = root / 'image' / (parts[0] if is_image_file(parts[0]) else parts[0] + '.jpg')
        if not path.is_file():
            raise ValueError(f'{path}: listed in {list_file} (line {number}) but not found')
        items.append(Item(path, parts[1], None))
    if not items:
        raise ValueError(f'{list_file}: no images listed')
    return sorted(items)


def generate_vehicleid(drawn):
    """image/NNNNNNN.jpg + train_test_split/ lists, no cameras; the three test lists nested, as the real ones."""
    files, train_lines, test_lines = [], [], []
    for k, s in enumerate(s for s in drawn.specs if s.mode == 'person' and s.folder != 'gt_bbox'):
        files.append((f'image/{k:07d}.jpg', s))
        (train_lines if s.folder == 'bounding_box_train' else test_lines).append((f'{k:07d}', s.look_key[1]))
    texts = {'train_test_split/train_list.txt': ''.join(f'{n} {pid}\n' for n, pid in train_lines)}
    for i, size_name in enumerate((800, 1600, 2400), 1):
        keep = set(drawn.test_ids[:len(drawn.test_ids) * i // 3])
        texts[f'train_test_split/test_list_{size_name}.txt'] = ''.join(
            f'{n} {pid}\n' for n, pid in test_lines if pid in keep)
    return files, texts


LAYOUT = Layout('vehicleid', read_vehicleid, VEHICLE, ('image', 'train_test_split'),
                'per test id one random image in the gallery, the rest queries; mean and std over '
                'evaluate_gpu.py --trials 10', generate_vehicleid,
                options=(Option('--test_size', dict(default=800, type=int, choices=(800, 1600, 2400),
                                                    help='VehicleID test list')),),
                trials='gallery')
