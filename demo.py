"""Show one query and its top-10 gallery images: green frame = same id, red = different; saves show.png.

Reads pytorch_result.mat (written by test.py) and the prepared test split to find the images (any layout:
with query = gallery, as CUB, the query's own image is left out like any junk).
    python demo.py --query_index 777 --test_dir ../Market/pytorch
    python demo.py --query_image me.jpg --name ft_ResNet50 --test_dir ../Market/pytorch   # any photo
    python demo.py --html results --test_dir ../Market/pytorch     # every query: results/index.html
    python demo.py --heatmap --name ft_ResNet50 --query_index 777  # + heatmap.png: where the network looks

    python demo.py --query_index 777 --rerank gnn --k1 26 --k2 7   # ranked by a re-ranking (as evaluate_gpu.py)

On a video layout (the result's rows are tracklets) a tracklet is drawn as a strip of a few of its frames.
--query_image extracts the feature of one photo with the run --name (same resize, normalisation, flip-sum) and
searches the gallery features already saved in --result, so the gallery is never extracted again; --backend and
--precision choose what computes it, as in test.py.
"""
import argparse
import os

from reid.backends import add_backend_flags
from reid.data.tracklets import split_entries
from reid.evaluation.report import draw_ranking, picture_path, ranked_gallery
from reid.cli import DATA_DIR, MODEL_DIR, RESULT_FILE, RUN_NAME, one_line_errors
from reid.evaluation.rerankers import RERANKERS, add_rerank_flags, chosen_rerank, rerank_title, reranked_distances


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Draw the top-10 ranking of one query (show.png).')
    p.add_argument('--query_index', default=777, type=int, help='index of the query in query order (0-based)')
    p.add_argument('--test_dir', default=DATA_DIR, type=str, help='prepared folder with query/ gallery/')
    p.add_argument('--result', default=RESULT_FILE, type=str, help='features written by test.py')
    p.add_argument('--output', default='show.png', type=str, help='where to save the picture')
    add_rerank_flags(p)
    p.add_argument('--top', default=10, type=int, help='number of gallery images to show')
    p.add_argument('--query_image', default=None, type=str,
                   help='search with this photo instead of a query of the set (needs the run: --name)')
    p.add_argument('--name', default=RUN_NAME, type=str, help='run whose network embeds --query_image')
    p.add_argument('--model_dir', default=MODEL_DIR, type=str, help='folder that holds the runs')
    p.add_argument('--which_epoch', default='last', type=str, help="checkpoint of --name: 'last' or a number")
    p.add_argument('--html', default=None, type=str,
                   help='write a static page of every query (top-10, AP, worst first) into this folder')
    p.add_argument('--heatmap', action='store_true',
                   help='also save heatmap.png beside --output: the activation map of the run --name over the query '
                        'and each shown image (with --html: a heatmap toggle per row)')
    add_backend_flags(p)   # what embeds --query_image (heatmaps always run the torch network)
    args = p.parse_args(argv)
    try:   # resolved here, once: None without --rerank
        args.rerank_params = chosen_rerank(args)
    except ValueError as e:
        p.error(str(e))
    return args


def load_run(args):
    """Return the reid.api.ReIDRun of --name (for --query_image and --heatmap), or a one-line SystemExit."""
    from reid.api import ReIDRun

    try:
        return ReIDRun(os.path.join(args.model_dir, args.name), args.which_epoch, device='cpu', backend='torch')
    except ValueError as e:
        raise ValueError(f'--name {args.name}: {e}') from None


def heatmap_path(args):
    """heatmap.png in the folder of --output (show.png's)."""
    return os.path.join(os.path.dirname(os.path.abspath(args.output)), 'heatmap.png')


def save_heatmaps(args, query, shown):
    """Draw show.png's panels again with the activation maps of --name laid over them, as heatmap.png."""
    from reid.evaluation.heatmap import image_heatmaps

    heats = image_heatmaps(load_run(args), [query[0]] + [path for path, _, _ in shown])
    draw_ranking(query, shown, heatmap_path(args), heats=heats)
    print(f'saved {heatmap_path(args)} (activation maps of {args.name})')


def query_keys(result, index, args):
    """Return the (G,) ranking keys of one query (smaller = better): -cosine, or the --rerank distance."""
    if args.rerank:
        return reranked_distances(args.rerank, result.query_f, result.gallery_f, args.rerank_params)[index]
    return -(result.gallery_f @ result.query_f[index])


def photo_keys(args, gallery_f):
    """Return the (G,) ranking keys (-cosine) of the photo --query_image against the saved gallery features."""
    from reid.api import ReIDRun

    if not os.path.isfile(args.query_image):
        raise ValueError(f'--query_image {args.query_image}: file not found')
    run = ReIDRun(os.path.join(args.model_dir, args.name), args.which_epoch, device='cpu', backend=args.backend,
                  precision=args.precision)
    print(f'--query_image embedded with {run.backend.describe()}')
    feature = run.features(args.query_image)[0].numpy()
    if feature.shape[0] != gallery_f.shape[1]:
        raise ValueError(f'--name {args.name}: its features have {feature.shape[0]} values but {args.result} holds '
                         f'{gallery_f.shape[1]}: run test.py with the same run first')
    return -(gallery_f @ feature)


def run_threshold(args):
    """Return the calibrated threshold entry of --name (threshold.yaml) or None, saying which on stdout."""
    from reid.runs import RunFolder

    run = RunFolder(os.path.join(args.model_dir, args.name))
    if not run.threshold_file.is_file():
        print(f'no calibrated threshold in {run.path} (test.py --calibrate): hits are not judged same or different')
        return None
    entry = run.read_threshold()
    print(f'threshold {entry["threshold"]:.4f} (false-accept rate {entry["far"]:g}, calibrated on '
          f'{entry.get("calibrated_on", "?")}): a hit scoring above it is the same identity')
    return entry['threshold']


def show_photo(args, result, gallery_images):
    """Rank the gallery for --query_image (junk id -1 left out; its id and camera are unknown) and draw it; with a
    calibrated run, say for each hit whether it passes the same-identity threshold."""
    keys = photo_keys(args, result.gallery_f)
    ranked = ranked_gallery(keys, None, None, result.gallery_label, result.gallery_cam)[:args.top]
    print(f'query image {args.query_image} (run {args.name})')
    threshold = run_threshold(args)
    shown = []
    for rank, g in enumerate(ranked, 1):
        path, gid, _ = gallery_images[g]
        score = float(-keys[g])
        verdict = '' if threshold is None else ('same' if score > threshold else 'different')
        # a passing hit gets a green frame, a failing one red; no frame colour without a threshold
        shown.append((path, None if threshold is None else score > threshold,
                      f'{rank}: id {gid}\nscore {score:.3f}' + (f' {verdict}' if verdict else '')))
        print(f'{rank:2d} id {gid} score {score:.4f}{" " + verdict if verdict else ""} {picture_path(path)}')
    draw_ranking((args.query_image, 'your photo'), shown, args.output)
    print(f'saved {args.output}')
    if args.heatmap:
        save_heatmaps(args, (args.query_image, 'your photo'), shown)


def write_html(args, result, query_images, gallery_images):
    """Write the static results page of every query into --html; print its path."""
    from reid.evaluation import metrics
    from reid.evaluation.report import PageOptions, write_report
    from reid.evaluation.verification import threshold_of

    if args.rerank:
        dist = reranked_distances(args.rerank, result.query_f, result.gallery_f, args.rerank_params)
    else:
        dist = -(result.query_f @ result.gallery_f.T)
    summary = metrics.compute_cmc_map_from_dist(dist, result.query_label, result.query_cam, result.gallery_label,
                                                result.gallery_cam)
    how = f' ({rerank_title(args.rerank, args.rerank_params)})' if args.rerank else ''
    title = f'{os.path.basename(args.result)}{how}: top-{args.top} of every query'
    heatmaps = None
    if args.heatmap:
        from reid.evaluation.heatmap import image_heatmaps

        run = load_run(args)
        heatmaps = lambda paths: image_heatmaps(run, paths)  # noqa: E731
    # the score histograms show cosine scores (what a verification threshold compares), re-ranked or not; the
    # threshold is the run's (--name: test.py --calibrate) or the one evaluate_gpu.py --verify saved beside --result
    threshold = threshold_of(os.path.join(args.model_dir, args.name), args.result)
    options = PageOptions(top=args.top, title=title, threshold=threshold,
                          scores=result.query_f @ result.gallery_f.T, heatmaps=heatmaps)
    path = write_report(args.html, dist, query_images, gallery_images, summary, options)
    print(f'saved {path} ({len(query_images)} queries; open it in a browser, no server needed)')


def main(argv=None):
    args = parse_args(argv)
    with one_line_errors('demo.py'):   # a missing or malformed --test_dir, an unwritable --output
        show_ranking(args)


def show_ranking(args):
    """Print the top --top gallery images of one query and save the picture (the work of main)."""
    from reid.evaluation.results import load_result, load_tracklet_names
    from reid.runs import ensure_writable_folder

    result = load_result(args.result)
    tracklets = load_tracklet_names(args.result) or (None, None)   # a video layout's result: rows are tracklets
    if tracklets[0] is not None and args.heatmap:
        raise ValueError(f'--heatmap: draws single images, and {args.result} holds tracklets')
    query_images = split_entries(os.path.join(args.test_dir, 'query'), tracklets[0])
    gallery_images = split_entries(os.path.join(args.test_dir, 'gallery'), tracklets[1])
    if len(query_images) != len(result.query_label) or len(gallery_images) != len(result.gallery_label):
        raise ValueError(f'{args.result}: {len(result.query_label)} queries and {len(result.gallery_label)} '
                         f'gallery images, but --test_dir {args.test_dir} has {len(query_images)} and '
                         f'{len(gallery_images)}: run test.py on the same --test_dir')
    if args.query_image:
        return show_photo(args, result, gallery_images)
    if args.html:
        return write_html(args, result, query_images, gallery_images)
    if not 0 <= args.query_index < len(query_images):
        raise ValueError(f'--query_index {args.query_index}: out of range, there are {len(query_images)} queries '
                         f'(0 to {len(query_images) - 1})')
    if args.top < 1:
        raise ValueError(f'--top {args.top}: must be at least 1')
    ensure_writable_folder(os.path.dirname(os.path.abspath(args.output)), '--output')

    i = args.query_index
    ql, qc = int(result.query_label[i]), int(result.query_cam[i])
    keys = query_keys(result, i, args)
    ranked = ranked_gallery(keys, ql, qc, result.gallery_label, result.gallery_cam)[:args.top]
    camera = f', camera {qc}' if qc >= 0 else ''   # a negative camera is prepare.py's 'no camera'
    print(f'query {i}: {picture_path(query_images[i][0])} (id {ql}{camera})')
    # cosine and GNN rank by minus a score: the picture shows the score; k-reciprocal ranks by a distance
    as_score = not args.rerank or RERANKERS[args.rerank].negated_score
    shown = []
    for rank, g in enumerate(ranked, 1):
        path, gid, _ = gallery_images[g]
        caption = f'{rank}: id {gid}\n' + (f'score {-keys[g]:.3f}' if as_score else f'dist {keys[g]:.3f}')
        shown.append((path, gid == ql, caption))
        print(f'{rank:2d} {"match" if gid == ql else "wrong"} {picture_path(path)}')
    draw_ranking((query_images[i][0], f'query\nid {ql}'), shown, args.output)
    print(f'saved {args.output}')
    if args.heatmap:
        save_heatmaps(args, (query_images[i][0], f'query\nid {ql}'), shown)


if __name__ == '__main__':
    main()
