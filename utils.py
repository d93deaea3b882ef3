"""The original's `utils.py`, kept so `from utils import ...` works: its helpers and the toolkit's run folders."""
from reid.models.original_modules import fuse_all_conv_bn, save_network  # noqa: F401
from reid.runs import (RunFolder, load_checkpoint, load_opts, load_weights, save_atomic,  # noqa: F401
                       save_opts, seed_everything)
from reid.runtime import loader_workers, select_device  # noqa: F401
