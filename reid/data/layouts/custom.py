"""Your own photos in folders: train/, query/, gallery/ (sub-folders allowed), the id and camera found in each
path by --pattern's named groups `id` and (optionally) `cam`.
"""
import re

from reid.data.layouts.common import PERSON, Item, Layout, Option, image_files, parse_all, require_folders


def read_custom(root, options):
    """The user's own photos: train/, query/, gallery/ (sub-folders allowed), id and camera from --pattern.

    The pattern is searched in each path relative to its split folder (`/` separators); its named group
    `id` gives the id and the optional group `cam` the camera.
    """
    pattern = options.get('pattern')
    if not pattern:
        raise ValueError('--custom needs --pattern REGEX with a named group id (and optionally cam), '
                         r"e.g. --pattern '(?P<id>\d+)_c(?P<cam>\d+)'")
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f'--pattern {pattern}: not a regular expression ({err})') from None
    if 'id' not in regex.groupindex:
        raise ValueError(f'--pattern {pattern}: needs a named group id, e.g. (?P<id>\\d+)')
    root = require_folders(root, 'train', 'query', 'gallery', what='a --custom folder')

    def reader(folder):
        def parse(path):
            match = regex.search(path.relative_to(folder).as_posix())
            if match is None or not match.group('id'):
                raise ValueError(path)
            cam = match.group('cam') if 'cam' in regex.groupindex else None
            return Item(path, match.group('id'), cam or None)
        return parse_all(image_files(folder, recursive=True), parse, f'--pattern {pattern}')
    return {'train_all': reader(root / 'train'), 'query': reader(root / 'query'), 'gallery': reader(root / 'gallery')}


LAYOUT = Layout('custom', read_custom, PERSON, ('train', 'query', 'gallery'),
                'single query; same id and camera is junk (no camera: only the query itself)',
                options=(Option('--custom', dict(default=None, metavar='DIR',
                                                 help='your photos: DIR/{train,query,gallery}'),
                                selects=True, source=True),
                         Option('--pattern', dict(default=None, metavar='REGEX',
                                                  help='with --custom: named groups id and (optionally) cam, '
                                                       'searched in each relative path'))))
