"""Runs trained by the original baseline repository: its net_XXX.pth parameter names and opts.yaml keys.

Converts them to this toolkit's layout so test.py, demo.py, export.py and reid.api give the features it would.
"""
import re
from dataclasses import replace


from reid.spec import NetworkSpec, alias_flag, backbone_record

# The original's classes and this toolkit's names for the same tensors (ft_net / ft_net_dense / PCB):
#   model.<resnet or densenet>.*       -> body.*             (model.fc.* / model.classifier.*: unused, dropped)
#   classifier.add_block.i.*            -> classifier.add_block.i.*
#   classifier.classifier.0.*           -> classifier.classifier.*
#   classifier<k>.add_block.i.*  (PCB)  -> classifiers.<k>.add_block.i.*
#   classifier<k>.classifier.0.* (PCB)  -> classifiers.<k>.classifier.*
#   usam_<k>.bn.*              (--usam) -> body.usam_<k>.bn.*    (usam_<k>.weight / weight2: its fixed 3x3 and 1x1
#                                                                  kernels, computed here, dropped)
_RENAMES = (
    (re.compile(r'^model\.'), 'body.'),
    (re.compile(r'^usam_(\d)\.bn\.'), r'body.usam_\1.bn.'),
    (re.compile(r'^classifier\.classifier\.0\.'), 'classifier.classifier.'),
    (re.compile(r'^classifier(\d+)\.classifier\.0\.'), r'classifiers.\1.classifier.'),
    (re.compile(r'^classifier(\d+)\.add_block\.'), r'classifiers.\1.add_block.'),
)
_UNUSED = re.compile(r'^model\.(fc|classifier)\.|^usam_\d\.weight2?$')
# Wrappers the original's runs may have saved through (DataParallel, torch.compile).
_WRAPPER_PREFIXES = ('module.', '_orig_mod.')
# The backbones whose module trees the original's runs share with this toolkit's (its ft_net, ft_net_dense, PCB).


def _strip_wrappers(key):
    for prefix in _WRAPPER_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def is_original_state_dict(state_dict):
    """True when `state_dict` uses the original repository's names (`model.*` backbone, `classifier*.add_block`)."""
    keys = [_strip_wrappers(k) for k in state_dict]
    return (any(k.startswith('model.') for k in keys) and not any(k.startswith('body.') for k in keys)
            and any(re.match(r'^classifier\d*\.add_block\.', k) for k in keys))


def convert_state_dict(state_dict):
    """Return a copy of an original-layout state_dict under this toolkit's parameter names (unused fc dropped)."""
    out = {}
    for key, value in state_dict.items():
        key = _strip_wrappers(key)
        if _UNUSED.match(key):
            continue
        for pattern, replacement in _RENAMES:
            key, n = pattern.subn(replacement, key)
            if n:
                break
        out[key] = value
    return out


def original_spec(opts, path='opts.yaml'):
    """Return the NetworkSpec of an original run's opts.yaml; ValueError naming the flag of its other backbones.

    The original's keys (`use_dense`, `PCB`, `stride`, `linear_num`, `droprate`, `h`, `w`) mean the same here;
    missing ones take the original's defaults. Its PCB is always a ResNet-50.
    """
    try:
        spec = NetworkSpec.from_opts(opts)
    except ValueError as e:
        raise ValueError(f'{path}: the original run uses {e}') from None
    if spec.PCB:
        return replace(spec, backbone='resnet50')
    if not backbone_record(spec.backbone).original_runs:
        flag = alias_flag(spec.backbone) or f'backbone {spec.backbone}'
        raise ValueError(f'{path}: the original run uses {flag}, a backbone this toolkit does not rebuild '
                         '(supported: ResNet-50, --use_dense, --PCB)')
    return spec
