"""The tracklet network of video re-ID: every frame through the image network's body and pool, the frames' features
pooled over time (average, maximum or a learnt attention), then the image network's head as it is.
"""
from torch import nn

from reid.models.heads import ReIDNet


class TemporalAverage(nn.Module):
    """[B, T, D] -> [B, D]: the mean over the frames."""

    def forward(self, frames):
        return frames.mean(dim=1)


class TemporalMax(nn.Module):
    """[B, T, D] -> [B, D]: the maximum over the frames, per channel."""

    def forward(self, frames):
        return frames.amax(dim=1)


class TemporalAttention(nn.Module):
    """[B, T, D] -> [B, D]: sum_t a_t f_t with a = softmax over t of a learnt score w . f_t + b (the temporal
    attention of video re-ID, e.g. Gao & Nevatia 2018, on pooled frame features). The score starts at zero, so a
    new network starts as the average and learns which frames (sharp, unoccluded) to trust."""

    def __init__(self, dim):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, frames):
        weights = self.score(frames).float().softmax(dim=1).to(frames.dtype)   # [B, T, 1]
        return (weights * frames).sum(dim=1)


def temporal_pool(kind, dim):
    """Return the module that pools [B, T, dim] frame features into [B, dim] for --temporal `kind`."""
    if kind == 'avg':
        return TemporalAverage()
    if kind == 'max':
        return TemporalMax()
    if kind == 'attention':
        return TemporalAttention(dim)
    raise ValueError(f'--temporal {kind}: expected avg, max or attention')


class TemporalReIDNet(ReIDNet):
    """ReIDNet on tracklets: clips [B, T, 3, h, w] -> each frame through body + global pool -> [B, T, D] ->
    pooled over T (`temporal`: avg, max, attention) -> the same head (ClassBlock or BNNeck).

    forward takes ReIDNet's arguments and gives its outputs (logits, the retrieval feature, or (logits, metric
    feature)), one per clip; images [B, 3, h, w] are clips of one frame, so the same network gives single-frame
    features (every pooling is the identity on one frame). `avg` and `max` add no parameter: their state_dict
    is an image ReIDNet's.
    """

    def __init__(self, body, body_dim, num_classes, linear_num=512, droprate=0.5, bnneck=False, temporal='avg'):
        super().__init__(body, body_dim, num_classes, linear_num, droprate, bnneck)
        self.temporal = temporal_pool(temporal, body_dim)

    def clip_features(self, clips):
        """Return the pooled features [B, D] of clips [B, T, 3, h, w] (or images [B, 3, h, w]: T = 1)."""
        if clips.dim() == 4:
            clips = clips.unsqueeze(1)
        batch, length = clips.shape[:2]
        f = self.body(clips.flatten(0, 1))
        if f.dim() == 4:
            f = self.pool(f).flatten(1)
        return self.temporal(f.reshape(batch, length, -1))

    def forward(self, x, return_feature=False, return_metric_feature=False):
        f = self.clip_features(x)
        if return_metric_feature:
            return self.classifier.logits_and_feature(f)
        return self.classifier(f, return_feature)


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
