"""Shared pytest fixtures: a tiny synthetic Market-1501 set, raw and prepared, built once per test session.

Tests must treat both trees as read-only (copy them to tmp_path before changing anything).
"""
import sys
from pathlib import Path

import pytest

# the toolkit is a flat set of modules at the repository root
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope='session')
def tiny_market(tmp_path_factory):
    """Path of a raw tiny synthetic Market-style set (bounding_box_train, bounding_box_test, query, gt_bbox)."""
    import synthetic
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
