"""The re-ID toolkit's library: the commands at the repository root (prepare.py, train.py, test.py, ...) parse
flags and call it; `pip install -e .` makes it importable anywhere (reid.api for a tracker or a service).

Nothing runs on import. Layout: spec (the network options, input size), runtime (what the machine chose), runs
(a run folder), api, export; data/ (images, layouts, prepared folders, transforms, cache, samplers, generated
data), models/ (backbones, heads, features, the original's runs), training/ (recipe, trainer, loop, loss terms,
losses, distributed), evaluation/ (extraction, results, metrics, re-ranking, protocols, report).
"""
__version__ = '0.5.0'
