"""Running the tracklet network of video re-ID (reid.models.heads.TemporalReIDNet: frame features pooled over time
before the head): telling it from an image network, and feeding it frames of equal-length clips in a row.
"""
from torch import nn

from reid.models.heads import TemporalReIDNet, temporal_pool   # noqa: F401 (the tracklet network's names)


def is_temporal(model):
    """True when `model` takes clips [B, T, 3, h, w] (a TemporalReIDNet)."""
    return isinstance(model, TemporalReIDNet)


class ClipsOfFrames(nn.Module):
    """A TemporalReIDNet fed frames [B * length, 3, h, w] of B equal-length clips in a row: so flip_sum_features
    (which flips and rescales images) gives the feature of each clip, [B, D]."""

    def __init__(self, model, length):
        super().__init__()
        self.model, self.length = model, length

    def forward(self, frames, return_feature=False):
        return self.model(frames.reshape(-1, self.length, *frames.shape[1:]), return_feature=return_feature)
