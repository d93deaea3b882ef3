"""The original's `model.py`, kept so `from model import ...` still works: the networks live in reid.models."""
from reid.models.backbones import *  # noqa: F401,F403
