"""The original's `random_erasing.py`: `from random_erasing import RandomErasing` as there (reid.data.transforms)."""
from reid.data.transforms import RandomErasing, random_erasing  # noqa: F401
