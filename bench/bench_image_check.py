"""Cost of the start-up image check (data.unreadable_images) against PIL's header-only verify(), which misses
truncated files.

    python -m bench.bench_image_check [--data data/demo] [--size demo]
Generates the set at --data when it is not there, then times each way over every image and prints ratios.
"""
import argparse
import glob
import time
from pathlib import Path


from reid.data.images import image_problem, unreadable_images


def verify_only(paths):
    """The naive check: PIL's verify() reads headers and chunk checksums, not the compressed image data."""
    from PIL import Image
    for path in paths:
        with Image.open(path) as img:
            img.verify()


def timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', default='data/demo')
    p.add_argument('--size', default='demo', choices=('tiny', 'demo', 'market'))
    args = p.parse_args(argv)
    if not Path(args.data).is_dir():
        from reid.data import synthetic
        synthetic.make_dataset(args.data, size=args.size, seed=0)
    paths = sorted(glob.glob(str(Path(args.data) / '**' / '*.jpg'), recursive=True))
    verify_only(paths[:200])  # warm the page cache so the first variant is not charged for disk reads
    t_verify = timed(verify_only, paths)
    t_serial = timed(lambda ps: [image_problem(x) for x in ps], paths)
    t_threads = timed(lambda ps: unreadable_images(ps, progress=False), paths)
    n = len(paths)
    print(f'{n} images in {args.data}')
    print(f'verify() only (misses truncated files): {t_verify:.2f} s  ({1000 * t_verify / n:.3f} ms/image)')
    print(f'full decode, one thread:               {t_serial:.2f} s  ({1000 * t_serial / n:.3f} ms/image, '
          f'{t_serial / t_verify:.2f}x verify)')
    print(f'full decode, thread pool (shipped):    {t_threads:.2f} s  ({1000 * t_threads / n:.3f} ms/image, '
          f'{t_serial / t_threads:.2f}x faster than one thread)')


if __name__ == '__main__':
    main()
