"""The original's `random_erasing.py`, kept so `from random_erasing import ...` still works (reid.data.transforms)."""
from reid.data.transforms import random_erasing  # noqa: F401
