"""Tests of prepare.py: output layout, the val rule, idempotence, never touching the download, clear errors.

Uses the session fixtures `tiny_market` (raw) and `tiny_prepared` (its ImageFolder tree) from conftest.py.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import prepare
from conftest import expect_prepare_exit as expect_exit
from reid.data import prepared
from reid.data.layouts.common import split_train_val
from reid.data.prepared import PREPARED_MARKER
from reid.spec import NetworkSpec

REPO = Path(__file__).resolve().parents[1]


def tree(root):
    """{relative path: sha256 of the content} of every file under root (links are followed)."""
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def folder_of_ids(split_dir):
    """{id folder: sorted file names} of an ImageFolder split."""
    return {d.name: sorted(f.name for f in d.iterdir()) for d in sorted(Path(split_dir).iterdir())}


def raw_by_id(folder):
    """{id string: sorted file names}, computed independently of prepare.py from the raw folder."""
    out = defaultdict(list)
    for name in sorted(os.listdir(folder)):
        out[name[:name.index('_')]].append(name)
    return dict(out)


@pytest.fixture
def market_copy(tiny_market, tmp_path):
    """A private copy of the raw tiny set, free to damage."""
    return Path(shutil.copytree(tiny_market, tmp_path / 'Market'))


def test_layout_matches_the_raw_folders(tiny_market, tiny_prepared):
    assert {p.name for p in tiny_prepared.iterdir() if p.is_dir()} == set(prepared.SPLITS)
    assert folder_of_ids(tiny_prepared / 'train_all') == raw_by_id(tiny_market / 'bounding_box_train')
    assert folder_of_ids(tiny_prepared / 'query') == raw_by_id(tiny_market / 'query')
    gallery = folder_of_ids(tiny_prepared / 'gallery')
    assert gallery == raw_by_id(tiny_market / 'bounding_box_test')
    assert {'0000', '-1'} <= set(gallery)
    # multi-query: the gt_bbox images of the query ids only
    query_ids = set(raw_by_id(tiny_market / 'query'))
    gt = {pid: names for pid, names in raw_by_id(tiny_market / 'gt_bbox').items() if pid in query_ids}
    assert folder_of_ids(tiny_prepared / 'multi-query') == gt
    assert set(raw_by_id(tiny_market / 'gt_bbox')) - query_ids   # the filter removed something
    # the copies are byte-identical to the sources
    raw = tree(tiny_market)
    for rel, digest in tree(tiny_prepared / 'gallery').items():
        assert raw['bounding_box_test/' + Path(rel).name] == digest


def test_val_holds_the_first_sorted_name_of_each_training_id(tiny_market, tiny_prepared):
    raw = raw_by_id(tiny_market / 'bounding_box_train')
    val = folder_of_ids(tiny_prepared / 'val')
    train = folder_of_ids(tiny_prepared / 'train')
    assert val == {pid: [min(names)] for pid, names in raw.items()}
    assert train == {pid: sorted(names)[1:] for pid, names in raw.items()}


def test_val_rule_ignores_listing_order_and_keeps_single_image_ids_in_train():
    names = ('0002_c2s1_000100_01.jpg', '0002_c1s1_000300_01.jpg', '0007_c3s1_000001_01.jpg', '0002_c1s1_000200_01.jpg')
    items = [(Path(f'/x/{n}'), n[:4]) for n in names]
    train, val = split_train_val(items)
    assert [p.name for p, _ in val] == ['0002_c1s1_000200_01.jpg']
    assert sorted(p.name for p, _ in train) == ['0002_c1s1_000300_01.jpg', '0002_c2s1_000100_01.jpg',
                                                 '0007_c3s1_000001_01.jpg']
    assert split_train_val(list(reversed(items))) == (train, val)


def test_rerun_gives_the_same_tree_and_drops_stray_files(tiny_market, tiny_prepared, tmp_path):
    out = tmp_path / 'out'
    prepare.main(['--download_path', str(tiny_market), '--save_path', str(out)])
    first = tree(out)
    assert first == tree(tiny_prepared)
    (out / 'train' / '0000').mkdir()
    (out / 'train' / '0000' / 'stray.jpg').write_bytes(b'not from the download')
    prepare.main(['--download_path', str(tiny_market), '--save_path', str(out)])
    assert tree(out) == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]   # no build folders left behind


@pytest.mark.parametrize('link', [False, True])
def test_download_is_left_untouched(market_copy, link):
    def snapshot():
        return {str(p.relative_to(market_copy)): (p.stat().st_mtime_ns, p.stat().st_size)
                for p in market_copy.rglob('*') if 'pytorch' not in p.parts}
    before, digests = snapshot(), tree(market_copy)
    prepare.main(['--download_path', str(market_copy)] + (['--link'] if link else []))
    prepare.main(['--download_path', str(market_copy)] + (['--link'] if link else []))   # replaces the output
    after = tree(market_copy)
    assert {k: v for k, v in after.items() if not k.startswith('pytorch')} == digests
    assert snapshot() == before
    out = market_copy / 'pytorch' / 'query'
    some = next(out.rglob('*.jpg'))
    src = market_copy / 'query' / some.name
    if link:
        assert os.path.samefile(some, src)
    else:
        assert not os.path.samefile(some, src)


def test_link_falls_back_to_symlinks(market_copy, monkeypatch):
    def no_hard_links(src, dst):
        raise OSError(18, 'Invalid cross-device link')
    monkeypatch.setattr(prepared.os, 'link', no_hard_links)
    prepare.main(['--download_path', str(market_copy), '--link'])
    linked = list((market_copy / 'pytorch' / 'gallery').rglob('*.jpg'))
    assert linked and all(p.is_symlink() for p in linked)
    assert all(os.path.samefile(p, market_copy / 'bounding_box_test' / p.name) for p in linked)
    prepare.main(['--download_path', str(market_copy)])   # replacing a symlinked tree keeps the targets
    assert all((market_copy / 'bounding_box_test' / p.name).is_file() for p in linked)


def test_non_image_files_are_skipped(market_copy):
    (market_copy / 'bounding_box_train' / 'Thumbs.db').write_bytes(b'\0')
    (market_copy / 'query' / 'readme.txt').write_text('not an image')
    (market_copy / 'query' / 'sub').mkdir()
    prepare.main(['--download_path', str(market_copy)])
    names = {p.name for p in (market_copy / 'pytorch').rglob('*') if p.is_file()}
    assert not names & {'Thumbs.db', 'readme.txt'}
    # ... while every image beside them is still prepared
    for split, sub in (('train_all', 'bounding_box_train'), ('query', 'query')):
        assert sorted(p.name for p in (market_copy / 'pytorch' / split).rglob('*')
                      if p.is_file()) == sorted(n for n in os.listdir(market_copy / sub) if n.endswith('.jpg'))


def test_duke_layout_without_gt_bbox(market_copy, tmp_path, capsys):
    duke = tmp_path / 'Duke'
    for sub in ('bounding_box_train', 'bounding_box_test', 'query'):
        (duke / sub).mkdir(parents=True)
        for i, src in enumerate(sorted((market_copy / sub).iterdir())):
            pid, cam = src.name.split('_')[:2]
            shutil.copy(src, duke / sub / f'{pid}_{cam[:cam.index("s")]}_f{i:07d}.jpg')   # 0005_c2_f0046985.jpg
    prepare.main(['--download_path', str(duke)])
    out = capsys.readouterr().out
    assert 'multi-query' in out and 'gt_bbox' in out
    assert not (duke / 'pytorch' / 'multi-query').exists()
    assert folder_of_ids(duke / 'pytorch' / 'query') == raw_by_id(duke / 'query')


def test_missing_download_folder(tmp_path):
    expect_exit(['--download_path', str(tmp_path / 'nope')], tmp_path / 'nope', '--download_path')


def test_missing_required_subfolder(market_copy):
    shutil.rmtree(market_copy / 'query')
    expect_exit(['--download_path', str(market_copy)], market_copy / 'query', 'missing')
    assert not (market_copy / 'pytorch').exists()


def test_name_that_does_not_parse(market_copy):
    bad = market_copy / 'bounding_box_test' / 'IMG_0001.jpg'
    shutil.copy(next((market_copy / 'query').iterdir()), bad)
    expect_exit(['--download_path', str(market_copy)], bad)


def test_empty_training_folder(market_copy):
    for p in (market_copy / 'bounding_box_train').iterdir():
        p.unlink()
    expect_exit(['--download_path', str(market_copy)], market_copy / 'bounding_box_train', 'no images')


def test_gt_bbox_without_query_ids_is_an_empty_multi_query_error(market_copy):
    for p in (market_copy / 'gt_bbox').iterdir():
        p.unlink()
    train_image = sorted((market_copy / 'bounding_box_train').iterdir())[0]  # train ids are never query ids
    shutil.copy(train_image, market_copy / 'gt_bbox' / train_image.name)
    expect_exit(['--download_path', str(market_copy)], market_copy / 'gt_bbox', 'multi-query would be empty')


def test_corrupt_image(market_copy):
    bad = sorted((market_copy / 'bounding_box_test').iterdir())[3]
    bad.write_bytes(b'this is not a jpeg at all')
    expect_exit(['--download_path', str(market_copy)], bad, 'corrupt')
    assert not (market_copy / 'pytorch').exists()
    assert not [p for p in market_copy.iterdir() if p.name.startswith('.pytorch')]


def test_refuses_to_replace_a_folder_it_did_not_write(tiny_market, tmp_path):
    mine = tmp_path / 'precious'
    mine.mkdir()
    (mine / 'notes.txt').write_text('keep me')
    expect_exit(['--download_path', str(tiny_market), '--save_path', str(mine)], mine, '--save_path')
    assert (mine / 'notes.txt').read_text() == 'keep me'
    expect_exit(['--download_path', str(tiny_market), '--save_path', str(tiny_market)], tiny_market)
    link = tmp_path / 'link'
    link.symlink_to(mine)
    expect_exit(['--download_path', str(tiny_market), '--save_path', str(link)], link, 'symbolic link')


def test_make_demo_refuses_a_foreign_folder_and_flag_mixes(tmp_path, capsys):
    mine = tmp_path / 'photos'
    mine.mkdir()
    (mine / 'cat.jpg').write_bytes(b'meow')
    expect_exit(['--make-demo', str(mine), '--size', 'tiny'], mine)
    assert (mine / 'cat.jpg').read_bytes() == b'meow'
    with pytest.raises(SystemExit):
        prepare.main(['--make-demo', str(tmp_path / 'd'), '--download_path', str(tmp_path)])
    assert '--make-demo' in capsys.readouterr().err


def test_command_line_two_step_use(tmp_path):
    demo = tmp_path / 'demo'
    run = [sys.executable, 'prepare.py']
    made = subprocess.run(run + ['--make-demo', str(demo), '--size', 'tiny', '--cameras', '15'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    assert 'bounding_box_train' in made.stdout
    done = subprocess.run(run + ['--download_path', str(demo)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert set(prepared.SPLITS) <= {p.name for p in (demo / 'pytorch').iterdir()}
    cams = {int(p.name.split('_')[1][1:p.name.split('_')[1].index('s')]) for p in (demo / 'pytorch').rglob('*.jpg')}
    assert max(cams) > 9
    failed = subprocess.run(run + ['--download_path', str(tmp_path / 'missing')], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert failed.returncode != 0 and str(tmp_path / 'missing') in failed.stderr
    assert 'Traceback' not in failed.stderr


def test_make_demo_of_another_layout_then_prepare_detects_it(tmp_path, capsys):
    demo = tmp_path / 'veri'
    prepare.main(['--make-demo', str(demo), '--layout', 'veri', '--size', 'tiny'])
    assert 'next: python prepare.py --dataset veri' in capsys.readouterr().out
    prepare.main(['--download_path', str(demo)])
    out = capsys.readouterr().out
    assert '(veri)' in out and '256x256' in out
    info = json.loads((demo / 'pytorch' / PREPARED_MARKER).read_text())
    assert info['layout'] == 'veri' and info['input_size'] == [256, 256]

    # a new run trains at the layout's size unless its flags say otherwise (NetworkSpec.input_size)
    assert NetworkSpec().input_size(demo / 'pytorch') == (256, 256)
    assert NetworkSpec(h=64).input_size(demo / 'pytorch') == (64, 256)
    assert NetworkSpec(PCB=True).input_size(demo / 'pytorch') == (384, 192)
    assert NetworkSpec().input_size(tmp_path) == NetworkSpec().input_size() == (256, 128)


def test_flags_that_name_the_data_twice_are_refused(tmp_path, capsys):
    for argv in (['--custom', str(tmp_path), '--csv', str(tmp_path / 'a.csv')],
                 ['--download_path', str(tmp_path), '--custom', str(tmp_path)],
                 ['--pattern', '(?P<id>.+)']):
        with pytest.raises(SystemExit):
            prepare.main(argv)
        assert '--' in capsys.readouterr().err


# Market-1501's naming, written out from the dataset's definition (not the toolkit's parser): a 4-digit person id
# (0000 = distractor) or -1 (junk), `c` + camera 1-6, `s` + sequence, a 6-digit frame, a 2-digit box index.
MARKET_NAME = r'^(?P<id>-1|\d{4})_c(?P<cam>[1-6])s\d_\d{6}_\d{2}\.jpg$'


def test_images_csv_records_id_label_and_camera_of_every_market_name(tiny_market, tiny_prepared):
    import csv
    import re

    def parsed(sub):
        out = []
        for name in sorted(os.listdir(tiny_market / sub)):
            m = re.match(MARKET_NAME, name)
            assert m, name
            out.append((name, m['id'], m['cam']))
        return out
    query = parsed('query')
    query_ids = {pid for _, pid, _ in query}
    want = {'train_all': parsed('bounding_box_train'), 'query': query, 'gallery': parsed('bounding_box_test'),
            'multi-query': [x for x in parsed('gt_bbox') if x[1] in query_ids]}
    # val: per id the first name in sorted order (the original's "first image of each id"), train the rest
    seen = set()
    want['val'], want['train'] = [], []
    for x in want['train_all']:
        want['train' if x[1] in seen else 'val'].append(x)
        seen.add(x[1])
    # every id is numeric here, so its label is its value: -1 stays junk and 0000 stays the distractor 0
    want = sorted((split, f'{split}/{pid}/{name}', pid, str(int(pid)), str(int(cam)))
                  for split, items in want.items() for name, pid, cam in items)
    with open(tiny_prepared / 'images.csv', newline='') as f:
        rows = list(csv.reader(f))
    assert rows[0] == ['split', 'path', 'id', 'label', 'camera']
    assert sorted(tuple(r) for r in rows[1:]) == want
    assert {'-1', '0'} <= {r[3] for r in rows[1:] if r[0] == 'gallery'}
    # ... and the files are there: one folder per id holding exactly the rows' images
    written = sorted(str(p.relative_to(tiny_prepared)) for p in tiny_prepared.rglob('*.jpg'))
    assert written == sorted(w[1] for w in want)


def test_a_flag_of_another_layout_is_refused_not_ignored(tiny_market, tmp_path):
    """--split K is VIPeR's split; on a Market download (or CUHK03's fixed protocol) it would change nothing, so a
    user who gives it is told, before anything is written."""
    expect_exit(['--download_path', str(tiny_market), '--save_path', str(tmp_path / 'p'), '--split', '3'],
                '--split is a flag of the viper layout', 'market does not use it')
    expect_exit(['--download_path', str(tiny_market), '--save_path', str(tmp_path / 'p'), '--test_size', '1600'],
                '--test_size is a flag of the vehicleid layout')
    assert not (tmp_path / 'p').exists()
