"""A run's progress as one object: the network, its optimizer and schedule, the fp16 scaler, the losses' own
parameters and optimizer, --wa's average, the history and the epochs done — what resume.pth holds, and how it
comes back.
"""
from reid.runs import FORMAT_VERSION, load_weights, non_finite_entry, restore_rng_states, rng_states

WA_DECAY = 0.996   # --wa's exponential moving average, as the original


def weight_average(model):
    """Return --wa's averaged copy of `model`: an exponential moving average of its weights."""
    from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

    return AveragedModel(model, avg_fn=get_ema_avg_fn(WA_DECAY))


class TrainingState:
    """The objects training changes, and the run's progress.

    `losses`: the metric losses (an nn.ModuleDict; their centres and class weights are part of the run);
    `loss_optimizer`: the optimizer of the losses that own their learning rate (center), or None; `scaler`: the
    fp16 GradScaler or None; `classes`: the training id folders (a resume with other ids is refused);
    `loss_scale(step)`: the loss's factor at an optimizer step (the original's warm-up), or None.
    """

    def __init__(self, model, optimizer, scheduler, losses, loss_optimizer=None, scaler=None, classes=None):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.losses, self.loss_optimizer, self.scaler = losses, loss_optimizer, scaler
        self.classes = list(classes) if classes is not None else None
        self.loss_scale = None
        self.averaged = None
        self.epoch = 0   # completed epochs
        self.history = {'train_loss': [], 'train_err': [], 'val_loss': [], 'val_err': []}

    @property
    def optimizers(self):
        """The optimizers every step steps: the network's, then the losses' own."""
        return [self.optimizer] + ([self.loss_optimizer] if self.loss_optimizer is not None else [])

    def start_average(self):
        """Begin --wa's average from the weights as they are now."""
        self.averaged = weight_average(self.model)

    def state_dict(self, rng_per_rank=None):
        """Return what resume.pth holds: everything needed to continue after `epoch` completed epochs, with this
        process's RNG states (and, under torchrun, every rank's)."""
        state = {'format': FORMAT_VERSION, 'epoch': self.epoch, 'model': self.model.state_dict(),
                 'optimizer': self.optimizer.state_dict(), 'scheduler': self.scheduler.state_dict(),
                 'scaler': self.scaler.state_dict() if self.scaler else None, 'rng': rng_states(),
                 'history': self.history, 'losses': self.losses.state_dict(),
                 'loss_optimizer': self.loss_optimizer.state_dict() if self.loss_optimizer is not None else None,
                 'averaged': self.averaged.state_dict() if self.averaged is not None else None,
                 'classes': self.classes}
        if rng_per_rank is not None:
            state['rng_per_rank'] = rng_per_rank
        return state

    def load_state_dict(self, state, path, rank=0):
        """Put a checked resume.pth `state` (RunFolder.read_resume_state, read from `path`) back, with this
        rank's RNG states."""
        load_weights(self.model, state['model'], path)
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        if self.scaler is not None and state['scaler'] is not None:
            self.scaler.load_state_dict(state['scaler'])
        self.losses.load_state_dict(state.get('losses', {}))
        if self.loss_optimizer is not None:
            self.loss_optimizer.load_state_dict(state['loss_optimizer'])
        per_rank = state.get('rng_per_rank') or [state['rng']]  # torchrun: each rank its own RNG state
        restore_rng_states(per_rank[rank] if rank < len(per_rank) else state['rng'])
        if state.get('averaged') is not None:
            self.start_average()
            self.averaged.load_state_dict(state['averaged'])
        self.history, self.epoch = state['history'], state['epoch']

    def non_finite_entry(self):
        """The name of the first tensor resume.pth would hold with a NaN or an infinity, or None."""
        return non_finite_entry({'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(),
                                 'losses': self.losses.state_dict(),
                                 'averaged': self.averaged.state_dict() if self.averaged is not None else None})
