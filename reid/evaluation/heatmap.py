"""Where the network looks: the activation map of its last feature map (CNNs) or token grid (ViT, Swin, DINO),
laid over the image (demo.py --heatmap, the results page's heatmap toggle).

The map is the channel-wise mean of the squared activations, upsampled to the image and scaled to [0, 1] per
image (torchreid's visualize_actmap; the original's visual_heatmap.py sums the channels of layer3 instead).
"""
import torch
import torch.nn.functional as F


def _last_output(module, run, keep):
    """Run `run()` and return the last output of `module` or of any of its submodules that `keep(output)` accepts,
    in the order the calls finish (so the outermost module wins over its children for the same tensor)."""
    seen = []

    def hook(_, __, output):
        if isinstance(output, torch.Tensor) and keep(output):
            seen.append(output)

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError(f'{type(module).__name__}: no spatial feature map in its forward pass')
    return seen[-1]


def _is_spatial_map(output):
    return output.dim() == 4 and output.shape[2] * output.shape[3] > 1   # a pooled [B, C, 1, 1] is not a map


def _vit_token_map(body, x):
    """[B, C, gh, gw] of a ViT's patch tokens after its last block: the final LayerNorm gives every token the
    same mean square, so it would show a flat map; class and register tokens are dropped."""
    tokens = _last_output(body.blocks, lambda: body(x), lambda o: o.dim() == 3)
    tokens = tokens[:, getattr(body, 'num_prefix_tokens', 1):]
    ph, pw = body.patch_embed.patch_size
    gh, gw = x.shape[2] // ph, x.shape[3] // pw
    if gh * gw != tokens.shape[1]:
        raise ValueError(f'{type(body).__name__}: {tokens.shape[1]} patch tokens do not form a {gh} x {gw} grid')
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)


def last_feature_map(model, images):
    """Return the [B, C, h, w] last feature map of `model`'s backbone (`model.body`) for a normalised batch.

    CNNs (torchvision or timm): the last spatial map before the global pool. ViT/DINO: the patch-token grid
    after the last block. Swin: its last stage's tokens (channels last in timm, turned to channels first).
    """
    body = getattr(model, 'body', model)
    with torch.no_grad():
        if hasattr(body, 'blocks') and hasattr(body, 'patch_embed'):
            return _vit_token_map(body, images)
        if getattr(body, 'output_fmt', 'NCHW') == 'NHWC':   # timm's Swin: stages give [B, h, w, C]
            stages = body.layers
            return _last_output(stages, lambda: body(images), lambda o: o.dim() == 4).permute(0, 3, 1, 2)
        return _last_output(body, lambda: body(images), _is_spatial_map)


def activation_maps(feature_map, size):
    """Return [B, H, W] maps in [0, 1]: the channel mean of squared activations, bilinearly upsampled to `size`
    (H, W), then min-max scaled per image (a constant map gives zeros)."""
    energy = feature_map.float().pow(2).mean(dim=1, keepdim=True)
    up = F.interpolate(energy, size=tuple(size), mode='bilinear', align_corners=False)[:, 0]
    low = up.flatten(1).min(dim=1).values[:, None, None]
    high = up.flatten(1).max(dim=1).values[:, None, None]
    return (up - low) / (high - low).clamp_min(1e-12)


def image_heatmaps(run, paths, batch_size=32):
    """Return one float32 numpy map in [0, 1] per image path, at that image's own (height, width), from a loaded
    reid.api.ReIDRun (the network test.py uses, with its resize and normalisation)."""
    from PIL import Image

    model = run.extractor.model
    out = []
    for start in range(0, len(paths), batch_size):
        chunk = list(paths[start:start + batch_size])
        fmap = last_feature_map(model, run.images_to_batch(chunk).to(run.device).float())
        for i, path in enumerate(chunk):
            with Image.open(path) as img:
                size = (img.height, img.width)
            out.append(activation_maps(fmap[i:i + 1], size)[0].cpu().numpy())
    return out


def mass_inside_box(heat, box):
    """Return the share of a map's total mass inside `box` (x0, y0, x1, y1: pixel edges, x1/y1 exclusive)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    total = float(heat.sum())
    return float(heat[max(y0, 0):y1, max(x0, 0):x1].sum()) / total if total > 0 else 0.0


def overlay(image, heat, alpha=0.5):
    """Return a uint8 RGB array: `image` (PIL) blended with the jet-coloured map `heat` ([0, 1], same size)."""
    import numpy as np
    from matplotlib import colormaps

    rgb = np.asarray(image.convert('RGB'), dtype=np.float32)
    coloured = colormaps['jet'](heat)[..., :3] * 255
    return np.clip((1 - alpha) * rgb + alpha * coloured, 0, 255).astype(np.uint8)


def people_with_boxes(test_dir, raw_dir):
    """Return [(image path, box)] of the query and gallery people (ids > 0) of a prepared generated set, with each
    one's box from raw_dir's person_boxes.csv (prepare.py --make-demo DIR --boxes)."""
    from pathlib import Path

    from reid.data.prepared import list_reid_images
    from reid.data.synthetic import read_person_boxes

    boxes = read_person_boxes(raw_dir)
    chosen = []
    for split, raw_folder in (('query', 'query'), ('gallery', 'bounding_box_test')):
        for path, pid, _ in list_reid_images(Path(test_dir) / split):
            key = f'{raw_folder}/{Path(path).name}'
            if pid > 0 and key in boxes:
                chosen.append((path, boxes[key]))
    return chosen


def person_box_figures(run, test_dir, raw_dir, every=1):
    """Return {'images', 'mass', 'area', 'lower'}: over the query and gallery people of a prepared generated set
    (ids > 0; every `every`-th image), the mean share of the heatmap's mass inside the person's box, the mean share
    of the image the box covers, and the mean share of the mass in the image's lower half (people_with_boxes)."""
    import numpy as np

    chosen = people_with_boxes(test_dir, raw_dir)[::every]
    if not chosen:
        raise ValueError(f'{test_dir}: no query or gallery person has a box in {raw_dir}')
    masses, areas, lower = [], [], []
    for (path, box), heat in zip(chosen, image_heatmaps(run, [p for p, _ in chosen])):
        masses.append(mass_inside_box(heat, box))
        areas.append((box[2] - box[0]) * (box[3] - box[1]) / heat.size)
        lower.append(mass_inside_box(heat, (0, heat.shape[0] // 2, heat.shape[1], heat.shape[0])))
    return {'images': len(chosen), 'mass': float(np.mean(masses)), 'area': float(np.mean(areas)),
            'lower': float(np.mean(lower))}
