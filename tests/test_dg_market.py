"""DG-Market as --DG reads it: one sub-folder of images per id (as its download unzips), each item two independent
draws of the training transform on the same image, as the original's DGFolder does."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid.data.dg_market import dg_market


@pytest.fixture
def dg_folder(tiny_market, tmp_path):
    """DG-Market/<folder>/<image>.jpg: three folders, named out of numeric order, from the tiny set's images."""
    root = tmp_path / 'DG-Market'
    sources = sorted((tiny_market / 'bounding_box_train').iterdir())
    for k, folder in enumerate(('b07', 'a12', 'c01')):
        (root / folder).mkdir(parents=True)
        for j in range(2):
            shutil.copy(sources[3 * k + j], root / folder / f'{folder}_{j}.jpg')
    return root


def test_items_are_two_independent_draws_of_the_transform_on_one_image(dg_folder):
    draws = np.random.default_rng(0)

    def transform(img):   # a random shift of the pixels: two calls give two different views
        return np.asarray(img, dtype=np.float32) + draws.integers(1, 1000)
    data = dg_market(dg_folder, transform)
    # every image, in ImageFolder order: sorted folder names give the labels, sorted files within
    folders = sorted(os.listdir(dg_folder))
    want = [(str(dg_folder / f / name), label) for label, f in enumerate(folders)
            for name in sorted(os.listdir(dg_folder / f))]
    assert len(data) == len(want) == 6
    for index, (path, label) in enumerate(want):
        view1, view2, target = data[index]
        pixels = np.asarray(Image.open(path).convert('RGB'), dtype=np.float32)
        assert target == label
        shift1, shift2 = np.unique(view1 - pixels), np.unique(view2 - pixels)
        assert len(shift1) == len(shift2) == 1   # both views are this image, each with its own draw
        assert shift1[0] != shift2[0]


def test_a_missing_folder_names_it_and_where_dg_market_comes_from(tmp_path):
    with pytest.raises(ValueError) as err:
        dg_market(tmp_path / 'DG-Market', None)
    message = str(err.value)
    assert str(tmp_path / 'DG-Market') in message and '--dg_dir' in message and 'DG-Net' in message
