"""The original's `utils.py`, kept so `from utils import ...` still works; run folders live in reid.runs."""
from reid.runs import (RunFolder, load_checkpoint, load_opts, load_weights, save_atomic,  # noqa: F401
                       save_opts, seed_everything)
from reid.runtime import loader_workers, select_device  # noqa: F401
