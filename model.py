"""The original's `model.py`, kept so `from model import ...` works: its classes and the toolkit's networks."""
from reid.models.backbones import IBN, USAM, PretrainedWeightsUnavailable, backbone_body  # noqa: F401
from reid.models.features import (FeatureExtractor, flip_sum_features, fuse_conv_bn,  # noqa: F401
                                  l2_normalize_features)
from reid.models.heads import (BNNeck, ReIDNet, build_model, cross_entropy_loss, parameter_groups,  # noqa: F401
                               predicted_classes)
from reid.models.original_modules import (PCB, PCB_test, ClassBlock, ft_net, ft_net_dense,  # noqa: F401
                                          ft_net_middle)
from reid.spec import NetworkSpec  # noqa: F401
