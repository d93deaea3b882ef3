"""The dataset layouts, one unit each (a module: its reader, its generated-data writer, its prepare.py flags),
gathered in one table; detecting a download's layout, and planning its prepared splits.

Adding a layout: one file here with a LAYOUT record (reid.data.layouts.common.Layout), its name in LAYOUTS,
and its test.
"""
from pathlib import Path

from reid.data.layouts import (csv_list, cub, cuhk03, custom, duke, dukev, ilids_vid, market, mars, msmt17,
                               prid2011, vehicleid, veri, viper)
from reid.data.layouts.common import check_splits, split_train_val, with_labels_and_cameras
from reid.data.prepared import SPLITS

LAYOUTS = {unit.LAYOUT.name: unit.LAYOUT
           for unit in (market, duke, msmt17, cuhk03, veri, vehicleid, cub, viper, mars, dukev, ilids_vid, prid2011,
                        custom, csv_list)}
GENERATED = tuple(name for name, layout in LAYOUTS.items() if layout.generate)   # prepare.py --make-demo --layout


def detect_layout(folder):
    """Return the name of the one layout whose marker folders/files `folder` holds; ValueError otherwise.

    Market-1501 and DukeMTMC-reID share a layout (and an adapter): 'market' is returned for both.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f'{folder}: download folder not found (set --download_path)')
    candidates = {name: sum((folder / m).exists() for m in layout.markers) / len(layout.markers)
                  for name, layout in LAYOUTS.items() if layout.markers and layout.detect}
    found = [name for name, score in candidates.items() if score == 1]
    if not found:   # a download with a folder missing: the closest layout's adapter names what is missing
        best = max(candidates.values())
        found = [name for name, score in candidates.items() if score == best and best > 0]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f'{folder}: no known dataset layout here (expected one of: '
                         + '; '.join(f'{n} ({", ".join(l.markers)})' for n, l in LAYOUTS.items()
                                     if l.markers and l.detect) + '); pick one with --dataset')
    raise ValueError(f'{folder}: looks like several layouts ({", ".join(found)}); pick one with --dataset')


def plan_splits(name, source, options=None):
    """Return {split: [Record]} for `source` read with layout `name`: train, val, train_all, query, gallery
    and multi-query (where the layout has them), checked. ValueError names the file or folder at fault."""
    if name not in LAYOUTS:
        raise ValueError(f'--dataset {name}: expected one of {", ".join(LAYOUTS)}')
    layout = LAYOUTS[name]
    splits = layout.read(source, dict(options or {}))
    check_splits(splits, source, layout.ids_reused)
    if 'val' not in splits:
        splits['train'], splits['val'] = split_train_val(splits['train_all'])
    splits = with_labels_and_cameras(splits)
    if not splits['val']:
        del splits['val']
    return {split: splits[split] for split in SPLITS if split in splits}
