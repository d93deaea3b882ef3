"""train.py's recipe: its flags (the network's from reid.spec, the runtime's from reid.runtime), the presets as
flag defaults, the checks and resolved values recorded in opts.yaml, and what --resume takes from where.
"""
import argparse
import logging
from argparse import Namespace

from reid.cli import DATA_DIR, MODEL_DIR, RUN_NAME
from reid.data.transforms import ORIGINAL_PAD
from reid.runtime import add_runtime_flags
from reid.spec import NetworkSpec, add_network_flags, option_names
from reid.training.losses import active_loss_names, add_loss_flags
from reid.training.state import WA_DECAY

logger = logging.getLogger(__name__)

# On --resume these always come from the command line (where the data and runs are, which GPU, how many loaders)...
MACHINE_OPTIONS = ('gpu_ids', 'num_workers', 'data_dir', 'model_dir', 'cache_dir')
# ...these from the command line when given there (how this session runs), else from the run's opts.yaml; every
# other option is the run's recipe and comes from its opts.yaml.
SESSION_OPTIONS = ('cpu_bf16', 'channels_last', 'compile') + ('tensorboard',)   # a resume may turn it on

# Recipes as flag values, applied as parser defaults (explicit flags win; opts.yaml records what was resolved).
PRESETS = {
    # the original's softmax baseline (Market-1501: Rank@1 88.24%, mAP 70.68% with ResNet-50)
    'seed': dict(optimizer='sgd', lr=0.05, backbone_lr_mult=0.1, weight_decay=5e-4, total_epoch=60, steps=None,
                 warm_epoch=0, batchsize=32, h=256, w=128, stride=2, erasing_p=0.0, label_smoothing=0.0,
                 bnneck=False, triplet=False, center=False, droprate=0.5, linear_num=512),
    # Bag of Tricks strong baseline (Luo et al., CVPRW 2019; Market-1501: Rank@1 94.5%, mAP 85.9%)
    'bot': dict(optimizer='adam', lr=3.5e-4, backbone_lr_mult=1.0, weight_decay=5e-4, total_epoch=120,
                steps='40,70', warm_epoch=10, lr_warmup=True, batchsize=64, num_instances=4, sampler='pk', h=256, w=128, stride=1,
                erasing_p=0.5, label_smoothing=0.1, bnneck=True, triplet=True, triplet_mining='batch_hard',
                center=True),
    # the quick start's recipe for a CPU: ResNet-18 from scratch at the generated data's own 128x64 for 10 epochs.
    # The optimiser and tricks were chosen by bench/tricks.py at 64x32 (docs/benchmarks.md, "Tricks on the demo set"); 128x64
    # gives an 8x4 map whose heatmap lands on the person and more mAP for 2x the time (docs/pictures.md)
    'quick': dict(backbone='resnet18', scratch=True, h=128, w=64, optimizer='adam', lr=1e-3, backbone_lr_mult=1.0,
                  weight_decay=5e-4, total_epoch=10, cosine=True, steps=None, warm_epoch=0, batchsize=32, stride=1,
                  erasing_p=0.0, label_smoothing=0.1, bnneck=True, triplet=False, center=False, cache=True),
}


def build_parser():
    p = argparse.ArgumentParser(description='Train a re-ID network (softmax loss + optional metric losses).')
    p.add_argument('--preset', default=None, choices=sorted(PRESETS),
                   help='a recipe: seed (the original softmax baseline), bot (Bag of Tricks) or quick '
                        '(the quick start on a CPU); flags override it')
    p.add_argument('--name', default=RUN_NAME, type=str, help='run name: outputs go to <model_dir>/<name>')
    p.add_argument('--data_dir', default=DATA_DIR, type=str, help='prepare.py output folder')
    p.add_argument('--model_dir', default=MODEL_DIR, type=str, help='folder that holds the runs')
    p.add_argument('--train_all', action='store_true', help='train on train_all (train + val)')
    p.add_argument('--color_jitter', action='store_true', help='add colour jitter')
    p.add_argument('--batchsize', default=32, type=int)
    p.add_argument('--erasing_p', default=0.0, type=float, help='random erasing probability, in [0, 1]')
    p.add_argument('--scratch', action='store_true', help='random initialisation instead of ImageNet weights')
    p.add_argument('--warm_epoch', default=0, type=int, help='epochs of linear warm-up from 0.1 of the loss (see --lr_warmup)')
    p.add_argument('--lr_warmup', action='store_true',
                   help='--warm_epoch ramps up the learning rate (BoT, --preset bot) instead of the loss (the '
                        'original; with Adam, scaling the loss changes nearly nothing)')
    p.add_argument('--total_epoch', default=60, type=int)
    p.add_argument('--lr', default=0.05, type=float, help='learning rate of the new layers')
    p.add_argument('--backbone_lr_mult', default=0.1, type=float,
                   help='backbone lr = lr x this (0.1: the original, also with --scratch; bench/tricks.py)')
    p.add_argument('--weight_decay', default=5e-4, type=float)
    p.add_argument('--optimizer', default='sgd', choices=('sgd', 'adam'),
                   help='sgd (momentum 0.9, nesterov; the original) or adam (BoT)')
    p.add_argument('--steps', default=None, type=str,
                   help='epochs where the lr drops x0.1, e.g. 40,70 (default: one drop at 2/3 of training)')
    p.add_argument('--cosine', action='store_true', help='cosine learning-rate decay instead of the step')
    p.add_argument('--pad', default=None, type=int,
                   help='padding before the random crop (default 10 at width 128, scaled with --w; 0 with --PCB; 0: no crop)')
    p.add_argument('--seed', default=0, type=int)
    p.add_argument('--FSGD', action='store_true', help="changes nothing: the fused update (torch's fused=True) is always on; accepted so the "
                        "original's commands run")
    add_network_flags(p)
    g = p.add_argument_group('losses', 'extra terms added to the softmax loss (reid/training/losses.py)')
    add_loss_flags(g)
    g.add_argument('--label_smoothing', default=0.0, type=float, help='label smoothing of the softmax loss')
    add_original_extras(p)
    add_tracklet_flags(p)
    add_speed_flags(p)
    p.add_argument('--tensorboard', action='store_true',
                   help='write TensorBoard event files into <model_dir>/<name>/tb/ (loss, error, lr, img/s per step)')
    p.add_argument('--resume', action='store_true', help='continue <model_dir>/<name> from resume.pth')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing run of the same --name (its net_*.pth are deleted)')
    return p


def add_original_extras(p):
    """The original's weight averaging, DG-Market and adversarial flags, and the batch sampler's."""
    g = p.add_argument_group('more of the original', 'weight averaging, DG-Market, adversarial training')
    g.add_argument('--wa', action='store_true',
                   help=f'weight averaging (EMA {WA_DECAY}) from --wa_start of training on -> net_average.pth')
    g.add_argument('--wa_start', default=0.8, type=float, help='fraction of training where --wa starts')
    g.add_argument('--DG', action='store_true',
                   help='DG-Market images for a consistency term after --wa_start (turns --wa on)')
    g.add_argument('--dg_dir', default='../DG-Market', type=str, help='the unzipped DG-Market folder')
    g.add_argument('--adv', default=0.0, type=float,
                   help='weight of the softmax loss on opposite-direction (ODFA) images; 0: off')
    g.add_argument('--aiter', default=10, type=int, help='craft --adv images every this many steps')
    p.add_argument('--sampler', default=None, choices=('random', 'pk'),
                   help='random (shuffle) or pk (P ids x K images per batch; the default with a metric loss)')
    p.add_argument('--num_instances', default=4, type=int, help='K: images per id in a P x K batch')


def add_tracklet_flags(p):
    """The video layouts' flags: frames per tracklet and how they are drawn (the pooling is --temporal)."""
    from reid.data.tracklets import DEFAULT_SAMPLE, DEFAULT_SEQ_LEN, SAMPLES

    g = p.add_argument_group('tracklets', 'a video layout (mars, dukev, ilidsvid, prid2011) trains on tracklets: '
                                          'batches of [B, seq_len, 3, h, w]; not for image layouts')
    g.add_argument('--seq_len', default=None, type=int,
                   help=f'frames drawn per tracklet (default {DEFAULT_SEQ_LEN}); test.py chunks tracklets by it')
    g.add_argument('--sample', default=None, choices=[s for s in SAMPLES if s != 'all'],
                   help=f'evenly (spaced over the tracklet) or random (distinct frames, sorted; default '
                        f'{DEFAULT_SAMPLE}); test.py takes every frame')


def add_speed_flags(p):
    """What this machine runs the recipe with (reid.runtime), and the cache, compile and torchrun options."""
    add_runtime_flags(p)
    g = p.add_argument_group('speed', 'compile, image cache, several processes')
    g.add_argument('--compile', action='store_true', help='torch.compile the network for training (PyTorch 2)')
    g.add_argument('--cache', action='store_true',
                   help='decode every training image once into a uint8 cache and augment whole batches on the device')
    g.add_argument('--cache_dir', default=None, type=str, help='where --cache writes (default <data_dir>/cache)')
    g.add_argument('--sync_bn', action='store_true', help='with torchrun on CUDA: BatchNorm statistics over all GPUs')


def parse_options(argv=None):
    """Return the parsed flags with --preset's values as defaults, so every explicit flag still wins."""
    parser = build_parser()
    preset = parser.parse_known_args(argv)[0].preset
    if preset:
        parser.set_defaults(**PRESETS[preset])
    return parser.parse_args(argv)


def milestones(steps):
    """Return the 0-based epochs of --steps ('40,70') as a tuple of ints; ValueError naming the flag."""
    try:
        values = tuple(int(s) for s in str(steps).split(',') if s.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ValueError(f"--steps {steps}: expected positive epoch numbers separated by commas, e.g. '40,70'")
    return values


class Options(Namespace):
    """The options a run trains with, resolved once (resolved_opts) and then only read: a change raises."""

    def __init__(self, **values):
        vars(self).update(values)

    def __setattr__(self, name, value):
        raise AttributeError(f'options are resolved once (reid.training.recipe.resolved_opts); --{name} cannot '
                             'change afterwards')

    def __delattr__(self, name):
        self.__setattr__(name, None)


def resolved_opts(opts):
    """Return the Options of parsed options: sizes filled in, implied flags set and combinations checked
    (ValueError naming the flag otherwise)."""
    o = Namespace(**vars(opts))
    resolve_tracklet_options(o)
    # explicit --h/--w win, then the backbone's size, then PCB's, then the prepared layout's (NetworkSpec.input_size)
    vars(o).update(NetworkSpec.from_opts(o).with_input_size(o.data_dir).to_opts())
    if o.pad is None:  # the original PCB recipe has no pad + crop
        o.pad = 0 if o.PCB else round(ORIGINAL_PAD * o.w / 128)
    if o.total_epoch < 1:
        raise ValueError(f'--total_epoch {o.total_epoch}: must be at least 1')
    if o.batchsize < 2:
        raise ValueError(f'--batchsize {o.batchsize}: BatchNorm needs at least 2 images per batch')
    if not 0.0 <= o.erasing_p <= 1.0:
        raise ValueError(f'--erasing_p {o.erasing_p}: must be between 0 and 1')
    if not 0.0 <= o.label_smoothing < 1.0:
        raise ValueError(f'--label_smoothing {o.label_smoothing}: must be in [0, 1)')
    metric = active_loss_names(vars(o))
    if o.steps is not None:
        milestones(o.steps)
    if o.DG:
        o.wa = True  # the original: the averaged model is DG's teacher
    if o.aiter < 1:
        raise ValueError(f'--aiter {o.aiter}: must be at least 1')
    if o.sampler is None:
        o.sampler = 'pk' if metric else 'random'
    if o.PCB and (metric or o.bnneck):
        raise ValueError(f'--PCB does not combine with --{(metric or ["bnneck"])[0]}')
    return Options(**vars(o))


def resolve_tracklet_options(o):
    """Fill in (in place) --temporal, --seq_len and --sample for a video layout's --data_dir, with the checks;
    ValueError naming the flag when one is given for an image layout's folder."""
    from reid.data.tracklets import DEFAULT_SAMPLE, DEFAULT_SEQ_LEN, video_layout

    names = ('temporal', 'seq_len', 'sample')
    if video_layout(o.data_dir) is None:
        given = [name for name in names if getattr(o, name, None) is not None]
        if given:
            raise ValueError(f'--{given[0]} {getattr(o, given[0])}: tracklet training needs the prepared folder of '
                             f'a video layout (mars, dukev, ilidsvid, prid2011); {o.data_dir} is not one')
        return
    o.temporal, o.sample = o.temporal or 'avg', o.sample or DEFAULT_SAMPLE
    o.seq_len = DEFAULT_SEQ_LEN if o.seq_len is None else o.seq_len
    if o.seq_len < 1:
        raise ValueError(f'--seq_len {o.seq_len}: must be at least 1')
    if o.PCB:
        raise ValueError(f'--PCB: not for tracklets ({o.data_dir} is a video layout)')
    if o.cache:   # the cache holds single images, augmented per image: the tracklets read their frames instead
        logger.info(f'--cache: not for tracklets ({o.data_dir} is a video layout); frames are read per tracklet')
        o.cache = False


def resumed_options(opts, run):
    """Return the options to continue `run` (a RunFolder) with: its recipe (RunFolder.recipe()), the machine
    options of the command line `opts`, and the session options given there.

    ValueError naming the flag when the command line asks for another network; other recipe flags that differ
    are named as ignored.
    """
    saved = run.recipe()
    defaults = vars(build_parser().parse_args([]))
    given = {k for k, v in vars(opts).items() if k in defaults and v != defaults[k]}
    ignored = [k for k in sorted(given) if k in saved and k not in MACHINE_OPTIONS + SESSION_OPTIONS
               + ('resume', 'overwrite') and getattr(opts, k) != saved[k]]
    other_network = [k for k in ignored if k in option_names()]
    if other_network:  # silently training the saved network instead would surprise; say so and stop
        k = other_network[0]
        raise ValueError(f'--resume with --{k} {getattr(opts, k)}: the run in {run.path} is a {k}={saved[k]} '
                         f'network; drop --{k} to continue it, or train the new network under another --name')
    if ignored:
        logger.info(f'--resume keeps the options of {run.opts_file}; ignoring --' + ', --'.join(ignored))
    return Namespace(**{**defaults, **saved, **{k: getattr(opts, k) for k in MACHINE_OPTIONS},
                        **{k: getattr(opts, k) for k in SESSION_OPTIONS if k in given}, 'resume': True})
