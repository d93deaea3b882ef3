"""The original's `utils.py`, kept so `from utils import ...` still works: run folders live in reid.runs."""
from reid.runs import *  # noqa: F401,F403
