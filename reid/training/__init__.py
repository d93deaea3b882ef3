"""Training: train.py's recipe (flags, presets, resume), the trainer that runs it, the epoch loop, the loss as a
list of terms, the metric losses, adversarial images, and several processes with torchrun.
"""
