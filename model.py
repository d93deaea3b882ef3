"""The original's `model.py`, kept so `from model import ...` still works; the networks live in reid.models."""
from reid.models.backbones import IBN, USAM, PretrainedWeightsUnavailable, backbone_body  # noqa: F401
from reid.models.features import (FeatureExtractor, flip_sum_features, fuse_conv_bn,  # noqa: F401
                                  l2_normalize_features)
from reid.models.heads import (PCB, BNNeck, ClassBlock, ReIDNet, build_model, cross_entropy_loss,  # noqa: F401
                               parameter_groups, predicted_classes)
from reid.spec import NetworkSpec  # noqa: F401
