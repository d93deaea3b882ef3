"""How much of a trained run's heatmap falls on the person: the mean share of the activation map's mass inside
each drawn person's box, against the share of the image the box covers (docs/pictures.md); and, for scale, the
share a map that is the box itself (pooled onto the run's grid, upsampled and scaled alike) puts inside it.

    bash quickstart.sh                                             # trains model/demo_demo on data/demo
    python3 prepare.py --make-demo data/demo --size demo --boxes   # same images, plus person_boxes.csv
    python3 -m bench.heatmap_box --name demo_demo --data data/demo
"""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from reid.api import ReIDRun
from reid.data.synthetic import HEIGHT, WIDTH
from reid.evaluation.heatmap import (activation_maps, last_feature_map, mass_inside_box, people_with_boxes,
                                    person_box_figures)


def box_as_map(test_dir, raw_dir, grid, size):
    """(mass, area): the mean share inside each query/gallery person's box of the box's own mask average-pooled
    onto `grid` (the run's feature map) and drawn like a heatmap, and the mean share of the image the box covers."""
    masses, areas = [], []
    for _, box in people_with_boxes(test_dir, raw_dir):
        mask = torch.zeros(1, 1, *size)
        mask[..., box[1]:box[3], box[0]:box[2]] = 1
        heat = activation_maps(F.adaptive_avg_pool2d(mask, grid).sqrt(), size)[0].numpy()  # squared back
        masses.append(mass_inside_box(heat, box))
        areas.append((box[2] - box[0]) * (box[3] - box[1]) / (size[0] * size[1]))
    return float(np.mean(masses)), float(np.mean(areas))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--name', default='demo_demo')
    p.add_argument('--model_dir', default='model')
    p.add_argument('--data', default='data/demo', help='the generated raw set (with --boxes); its pytorch/ is tested')
    p.add_argument('--which_epoch', default='last')
    args = p.parse_args(argv)
    start = time.perf_counter()
    for epoch in ('init', args.which_epoch):   # the untrained network first: what training changed
        run = ReIDRun(os.path.join(args.model_dir, args.name), epoch, device='cpu', backend='torch')
        f = person_box_figures(run, os.path.join(args.data, 'pytorch'), args.data)
        print(f'{args.name} epoch {epoch}: {f["images"]} images, heatmap mass inside the person box '
              f'{100 * f["mass"]:.1f}% vs box area {100 * f["area"]:.1f}% of the image '
              f'(ratio {f["mass"] / f["area"]:.2f}); lower half of the image {100 * f["lower"]:.1f}%')
    test_dir = os.path.join(args.data, 'pytorch')
    first = people_with_boxes(test_dir, args.data)[0][0]
    grid = tuple(last_feature_map(run.extractor.model, run.images_to_batch([first]).to(run.device).float()).shape[2:])
    mass, area = box_as_map(test_dir, args.data, grid, (HEIGHT, WIDTH))   # the generated images' own size
    print(f'a map that is the box itself, on the run\'s {grid[0]}x{grid[1]} grid: {100 * mass:.1f}% inside the box '
          f'(ratio {mass / area:.2f})')
    print(f'{time.perf_counter() - start:.0f}s')


if __name__ == '__main__':
    main()
