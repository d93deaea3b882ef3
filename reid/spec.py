"""The network spec: the options that define a re-ID network (their defaults, flags and the original's aliases),
read from and written to opts.yaml; and the input size a network is fed, resolved in this one place.

train.py's flags, --resume's architecture check, test.py's rebuild (and its checked flags), the loader of the
original repository's runs, the API and export all derive from NetworkSpec.
"""
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional



@dataclass(frozen=True)
class Backbone:
    """What the toolkit knows of one backbone: the original's flag for it; the input size that flag implies when
    --h/--w are not given; what its body gives ('map': a feature map, so --stride 1, --PCB and heatmaps work and,
    on a ResNet, --usam; 'tokens': a ViT/Swin token grid built for one input size; 'vector': a pooled vector);
    whether runs of the original repository with it are read; and, for a backbone built here rather than by
    torchvision or timm, its builder ('module:function', called with `pretrained`)."""
    flag: Optional[str] = None
    input_size: Optional[tuple] = None
    output: str = 'vector'
    original_runs: bool = False
    builder: Optional[str] = None


# One record per backbone the toolkit names (any other torchvision name or timm:<name> works with --backbone).
BACKBONES = {
    'resnet50': Backbone(output='map', original_runs=True),
    'densenet121': Backbone('use_dense', output='map', original_runs=True),
    'resnet50_ibn_a': Backbone('ibn', output='map', builder='reid.models.backbones:resnet50_ibn_a'),
    'timm:swin_base_patch4_window7_224': Backbone('use_swin', (224, 224), 'tokens'),
    'timm:swinv2_base_window8_256': Backbone('use_swinv2', (224, 224), 'tokens'),
    'timm:convnext_tiny': Backbone('use_convnext'),
    'timm:efficientnet_b4': Backbone('use_efficient'),
    'timm:hrnet_w18': Backbone('use_hr'),
    'timm:nasnetalarge': Backbone('use_NAS'),
    'timm:vit_small_patch16_224.dino': Backbone('use_dino', output='tokens'),
}
OLD_FLAGS = ('use_vit', 'use_ibn')   # flags of older versions of the original that this toolkit does not build
# The original's backbone flags as aliases onto registry names, with the input size each implies (from BACKBONES).
BACKBONE_ALIASES = {**{b.flag: (name, b.input_size) for name, b in BACKBONES.items() if b.flag},
                    **{flag: (None, None) for flag in OLD_FLAGS}}
DEFAULT_SIZE = (256, 128)   # the original's input for people (and what its runs without h/w were trained at)
PCB_SIZE = (384, 192)
# How a tracklet network (reid.models.temporal) pools its frames' features into one; None: an image network.
TEMPORAL_POOLS = ('avg', 'max', 'attention')


@dataclass(frozen=True)
class NetworkSpec:
    """What defines a network: everything build_model needs besides the number of classes.

    `backbone` is a registry name; the original's flags (--use_dense, --use_swin, ...) are aliases onto it
    (BACKBONE_ALIASES). `h`/`w` are the input size (None: not fixed yet, see input_size). `temporal`: a network
    of tracklets, its frames' features pooled over time by one of TEMPORAL_POOLS (None: an image network).
    """
    backbone: str = 'resnet50'
    PCB: bool = False
    stride: int = 2
    linear_num: int = 512
    droprate: float = 0.5
    bnneck: bool = False
    usam: bool = False
    h: Optional[int] = None
    w: Optional[int] = None
    temporal: Optional[str] = None

    @classmethod
    def from_opts(cls, opts):
        """Return the spec of a run's options (a dict such as a loaded opts.yaml, or an argparse Namespace).

        Missing keys take the original's defaults; an alias flag sets the backbone. ValueError when two backbone
        flags, or a flag and --backbone, disagree, or for an alias this toolkit does not build.
        """
        o = opts if isinstance(opts, dict) else vars(opts)
        defaults = cls()
        values = {f.name: o[f.name] if o.get(f.name) is not None else getattr(defaults, f.name) for f in fields(cls)}
        values['backbone'] = backbone_name(o)
        for key in ('stride', 'linear_num'):
            values[key] = int(values[key])
        values['droprate'] = float(values['droprate'])
        for key in ('PCB', 'bnneck', 'usam'):
            values[key] = bool(values[key])
        values['h'], values['w'] = (int(v) if v else None for v in (values['h'], values['w']))
        values['temporal'] = values['temporal'] or None
        if values['temporal'] not in (None, *TEMPORAL_POOLS):
            raise ValueError(f"--temporal {values['temporal']}: expected one of {', '.join(TEMPORAL_POOLS)}")
        return cls(**values)

    def to_opts(self):
        """Return the spec as opts.yaml keys (plain values)."""
        return asdict(self)

    def input_size(self, data_dir=None):
        """Return (h, w): the spec's h/w; else the backbone's own size (Swin 224x224); else PCB's 384x192; else,
        for a new run, the size of the layout prepared in `data_dir`; else the original's 256x128.

        A saved run is resolved without `data_dir`: the folder it is tested on never changes what it was
        trained at (a run of the original repository without h/w was trained at 256x128, on any data).
        """
        default = alias_input_size(self.backbone) or (PCB_SIZE if self.PCB else None)
        if default is None and data_dir is not None:
            from reid.data.prepared import prepared_info

            default = prepared_info(data_dir).get('input_size')
        default = tuple(default or DEFAULT_SIZE)
        return int(self.h or default[0]), int(self.w or default[1])

    def with_input_size(self, data_dir=None):
        """Return a copy with h and w fixed by input_size(data_dir)."""
        h, w = self.input_size(data_dir)
        return replace(self, h=h, w=w)

    def differences(self, other):
        """Return the names of the fields in which `other` differs from this spec."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def option_names():
    """Return every opts.yaml key that defines the network: the spec's fields and the alias flags."""
    return tuple(f.name for f in fields(NetworkSpec)) + tuple(BACKBONE_ALIASES)


def backbone_name(opts):
    """Return the registry name `opts` (a dict) asks for: an alias flag (--use_dense, --use_swin, ...) or
    --backbone (default resnet50); ValueError for two that disagree or an alias this toolkit does not build."""
    flags = [f for f in BACKBONE_ALIASES if opts.get(f)]
    if len(flags) > 1:
        raise ValueError(f'--{flags[0]} and --{flags[1]}: pick one backbone')
    backbone = opts.get('backbone') or NetworkSpec.backbone
    if not flags:
        return backbone
    name = BACKBONE_ALIASES[flags[0]][0]
    if name is None:
        raise ValueError(f'--{flags[0]}: a backbone of older versions of the original that this toolkit does not '
                         'build')
    if backbone not in (NetworkSpec.backbone, name):
        raise ValueError(f'--{flags[0]} conflicts with --backbone {backbone}')
    return name


def backbone_record(name):
    """Return the Backbone record of registry name `name` (a plain one for names the table does not list)."""
    return BACKBONES.get(name, Backbone())


def builds_token_grid(name):
    """True when backbone `name` is a ViT/Swin whose position grid is built for one input size: its record says
    'tokens'; for a timm name the table does not list, its model family's name (vit, swin) says so."""
    if name in BACKBONES:
        return BACKBONES[name].output == 'tokens'
    family = name.split(':', 1)[-1]
    return 'vit' in family or 'swin' in family


def alias_flag(name):
    """Return the original's flag for backbone registry name `name` (e.g. 'use_dense'), or None."""
    return backbone_record(name).flag


def alias_input_size(name):
    """Return the (h, w) the alias flag of backbone `name` implies (224 x 224 for Swin), or None."""
    return backbone_record(name).input_size


HELP = {
    'backbone': 'any torchvision classification model name (resnet18, ...) or timm:<name>',
    'PCB': 'Part-based Convolutional Baseline (6 parts, 384x192)',
    'stride': 'stride of the last backbone stage',
    'linear_num': 'bottleneck width (<= 0: no Linear)',
    'droprate': 'dropout rate of the bottleneck',
    'bnneck': "BoT's head: pooled feature -> BN -> bias-free classifier (metric losses before BN)",
    'usam': 'USAM attention after the stem and layer1 (ResNet)',
    'h': "input height (default: the layout's, 256 for people; 384 with --PCB)",
    'w': "input width (default: the layout's, 128 for people; 192 with --PCB)",
    'temporal': 'a video layout: how the frames of a tracklet are pooled into one feature (default avg; '
                'attention: softmax-weighted by a learnt score per frame); not for image layouts',
}
CHOICES = {'stride': (1, 2), 'temporal': TEMPORAL_POOLS}


def add_network_flags(parser, checked=False):
    """Add a flag per network option (the spec's fields and the backbone aliases) to `parser`.

    checked=False (train.py): the flags with the spec's defaults. checked=True (test.py, which rebuilds the
    network from opts.yaml): every flag defaults to None, so only those given are compared with the run.
    """
    group = parser.add_argument_group('network', 'what defines the network (recorded in opts.yaml)')
    suffix = ' (from opts.yaml; checked)' if checked else ''
    for f in fields(NetworkSpec):
        kind = {bool: bool, str: str, Optional[str]: str, float: float}.get(f.type, int)
        if kind is bool:
            group.add_argument(f'--{f.name}', action='store_const', const=True, default=None if checked else False,
                               help=HELP[f.name] + suffix)
        else:
            group.add_argument(f'--{f.name}', type=kind, default=None if checked else f.default,
                               choices=CHOICES.get(f.name), help=HELP[f.name] + suffix)
    for flag, (name, size) in BACKBONE_ALIASES.items():
        if name is not None:
            group.add_argument(f'--{flag}', action='store_const', const=True, default=None if checked else False,
                               help=f'{name} backbone' + (f' ({size[0]}x{size[1]})' if size else '') + suffix)


def check_network_flags(given, run_opts, path):
    """Raise ValueError naming the flag when a network flag given to a command disagrees with the run's
    opts.yaml (`given`: the parsed flags, None where not given)."""
    for name in option_names():
        value = getattr(given, name, None)
        if value is not None and value != run_opts.get(name, getattr(NetworkSpec, name, False)):
            raise ValueError(f'--{name} {value}: the run was trained with {name}={run_opts.get(name)} ({path}); '
                             'drop the flag, the network is rebuilt from opts.yaml')
