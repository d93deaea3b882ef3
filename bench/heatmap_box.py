"""How much of a trained run's heatmap falls on the person: the mean share of the activation map's mass inside
each drawn person's box, against the share of the image the box covers (README, "Pictures").

    bash quickstart.sh                                             # trains model/demo_demo on data/demo
    python3 prepare.py --make-demo data/demo --size demo --boxes   # same images, plus person_boxes.csv
    python3 -m bench.heatmap_box --name demo_demo --data data/demo
"""
import argparse
import os
import time

from reid.api import ReIDRun
from reid.evaluation.heatmap import person_box_figures


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--name', default='demo_demo')
    p.add_argument('--model_dir', default='model')
    p.add_argument('--data', default='data/demo', help='the generated raw set (with --boxes); its pytorch/ is tested')
    p.add_argument('--which_epoch', default='last')
    args = p.parse_args(argv)
    start = time.perf_counter()
    for epoch in ('init', args.which_epoch):   # the untrained network first: what training changed
        run = ReIDRun(os.path.join(args.model_dir, args.name), epoch, device='cpu')
        f = person_box_figures(run, os.path.join(args.data, 'pytorch'), args.data)
        print(f'{args.name} epoch {epoch}: {f["images"]} images, heatmap mass inside the person box '
              f'{100 * f["mass"]:.1f}% vs box area {100 * f["area"]:.1f}% of the image '
              f'(ratio {f["mass"] / f["area"]:.2f}); lower half of the image {100 * f["lower"]:.1f}%')
    print(f'{time.perf_counter() - start:.0f}s')


if __name__ == '__main__':
    main()
