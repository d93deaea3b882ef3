"""Shared pytest fixtures: a tiny synthetic Market-1501 set, raw and prepared, built once per test session.

Tests must treat both trees as read-only (copy them to tmp_path before changing anything).
"""
import importlib.util
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import pytest


@pytest.fixture(scope='session')
def tiny_market(tmp_path_factory):
    """Path of a raw tiny synthetic Market-style set (bounding_box_train, bounding_box_test, query, gt_bbox)."""
    from reid.data import synthetic
    root = tmp_path_factory.mktemp('tiny_market') / 'Market'
    synthetic.make_dataset(root, size='tiny', seed=0)
    return root


@pytest.fixture(scope='session')
def tiny_prepared(tiny_market, tmp_path_factory):
    """Path of the tree prepare.py makes from `tiny_market`: {train,val,train_all,query,gallery,multi-query}/<id>/."""
    import prepare
    out = tmp_path_factory.mktemp('tiny_prepared') / 'pytorch'
    prepare.main(['--download_path', str(tiny_market), '--save_path', str(out)])
    return out


def build(opts, num_classes, pretrained=None):
    """Return the network of a dict of train.py options, as train.py builds it: NetworkSpec.from_opts, ImageNet
    weights unless 'scratch' (or `pretrained` says otherwise)."""
    from reid.models.heads import build_model
    from reid.spec import NetworkSpec

    values = opts if isinstance(opts, dict) else vars(opts)
    pretrained = not values.get('scratch') if pretrained is None else pretrained
    return build_model(NetworkSpec.from_opts(opts), num_classes, pretrained=pretrained)


def train_tiny_run(data_dir, model_dir, size, epochs):
    """Train the tests' small run: ResNet-18 from scratch at `size` (h, w) for `epochs` on the prepared tiny set;
    return (model_dir, its name)."""
    from reid.training import recipe, trainer

    opts = recipe.build_parser().parse_args(
        ['--name', 'tiny', '--data_dir', str(data_dir), '--model_dir', str(model_dir), '--backbone', 'resnet18',
         '--scratch', '--h', str(size[0]), '--w', str(size[1]), '--batchsize', '16', '--num_workers', '0',
         '--total_epoch', str(epochs), '--lr', '0.01'])
    trainer.run_training(opts)
    return model_dir, 'tiny'


def load_repo_module(relative_path, name):
    """Return the repository's file `relative_path` as a module named `name`, loaded by path (for scripts that a
    plain import would miss or mistake: test.py shadows Python's own `test` package, bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_test_cli():
    """Return the repository's test.py as a module."""
    return load_repo_module('test.py', 'reid_test_cli')


def expect_prepare_exit(argv, *fragments):
    """Run prepare.main(argv), expect SystemExit with a one-line message holding every fragment; return it."""
    import prepare
    with pytest.raises(SystemExit) as err:
        prepare.main(argv)
    message = str(err.value.code)
    assert '\n' not in message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


# torchvision's ImageNet statistics, written out here rather than read from the code under test
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def hand_transform(h, w):
    """test.py's preprocessing rebuilt without the toolkit or torchvision: PIL's bicubic resize to (h, w),
    / 255, then (x - mean) / std per channel, as a [3, h, w] tensor. Feature tests feed this."""
    import torch
    from PIL import Image

    def transform(img):
        pixels = np.asarray(img.convert('RGB').resize((w, h), Image.BICUBIC), dtype=np.float32) / 255
        return torch.from_numpy(((pixels - _MEAN) / _STD).transpose(2, 0, 1).copy())
    return transform


@contextmanager
def library_messages():
    """Collect what the library logs (the lines the commands print) while the block runs; yields the list."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger('reid')
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# test.py in a child process whose start-up check passes, after which `bad` stops being an image: DataLoader workers
# are started there, not in the pytest process (torch leaves a handler of ending child processes behind, which
# crashed later tests that kill their own subprocesses)
BREAK_THEN_TEST = '''
import runpy, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from reid.evaluation import extract
checked, bad = extract.require_readable_images, Path(sys.argv[2])
def check_then_break(paths, *args, **kwargs):
    checked(paths, *args, **kwargs)
    bad.write_bytes(b'not an image')
extract.require_readable_images = check_then_break
sys.argv = ['test.py', *sys.argv[3:]]
runpy.run_path(str(Path(sys.path[0]) / 'test.py'), run_name='__main__')
'''


def test_py_breaking(bad, argv):
    """Run test.py `argv` in a child process where `bad` becomes unreadable once the start-up check passed; return
    the CompletedProcess (stdout, stderr as text)."""
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])
    return subprocess.run([sys.executable, '-c', BREAK_THEN_TEST, root, str(bad), *map(str, argv)],
                          capture_output=True, text=True, timeout=600)
