"""train.py --tensorboard: the run's curves as TensorBoard event files in model/<name>/tb/ (rank 0 only).

Imported only with the flag, so `tensorboard` stays an optional dependency (pinned in requirements.txt).
Tags: train/loss, train/top1_err, train/lr, train/lr_backbone, train/img_per_s per optimizer step;
epoch/train_loss, epoch/train_err, epoch/val_loss, epoch/val_err, epoch/lr per epoch; final/* when the run ends;
and test.py, on a run with tb/, adds the retrieval figures: final/Rank@1, Rank@5, Rank@10, mAP, mINP (multi_* too).
"""
import time


def _writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError('--tensorboard: the tensorboard package is not installed '
                         '(python3 -m pip install tensorboard, the version in requirements.txt)') from None
    return SummaryWriter


class TrainingBoard:
    """One run's SummaryWriter. `first_step`: the global step this session starts at; a resumed run drops what an
    interrupted session wrote past it (purge_step), so the curves have no duplicated steps."""

    def __init__(self, log_dir, first_step=0):
        self.writer = _writer_class()(str(log_dir), purge_step=first_step or None)
        self.last = time.perf_counter()

    def step_logger(self, first_step, optimizer):
        """Return the per-step callback of reid.training.loop.train_one_epoch for an epoch that starts at global
        step `first_step`: it logs the batch's loss, top-1 error, learning rates and images per second."""
        self.last = time.perf_counter()

        def log_step(step, loss, err, n_images):
            now = time.perf_counter()
            global_step = first_step + step
            self.writer.add_scalar('train/loss', loss, global_step)
            self.writer.add_scalar('train/top1_err', err, global_step)
            self.writer.add_scalar('train/lr', optimizer.param_groups[-1]['lr'], global_step)   # the new layers
            self.writer.add_scalar('train/lr_backbone', optimizer.param_groups[0]['lr'], global_step)
            self.writer.add_scalar('train/img_per_s', n_images / max(now - self.last, 1e-9), global_step)
            self.last = now
        return log_step

    def epoch(self, epoch, history, lr):
        """Log epoch `epoch`'s (1-based) train and val loss / error from the history dict, and its learning rate."""
        for key in ('train_loss', 'train_err', 'val_loss', 'val_err'):
            if len(history[key]) >= epoch:
                self.writer.add_scalar(f'epoch/{key}', history[key][epoch - 1], epoch)
        self.writer.add_scalar('epoch/lr', lr, epoch)
        self.writer.flush()   # an interrupted run keeps every finished epoch

    def close(self, history, epochs):
        """Close the files; with the `history` of a finished run, first log its last figures under final/ (at step
        `epochs`)."""
        for key, values in (history or {}).items():
            if values:
                self.writer.add_scalar(f'final/{key}', values[-1], epochs)
        self.writer.close()


def log_test_metrics(log_dir, results, step):
    """Add test.py's figures to a run's TensorBoard folder at `step` (the tested epoch): final/Rank@1, Rank@5,
    Rank@10, mAP, mINP of the single query, and final/multi_<same> of the multi-query pooling when tested."""
    writer = _writer_class()(str(log_dir))
    for mode, prefix in (('single', ''), ('multi', 'multi_')):
        if mode not in results:
            continue
        figures = results[mode]
        for rank in (1, 5, 10):
            if len(figures['cmc']) >= rank:
                writer.add_scalar(f'final/{prefix}Rank@{rank}', float(figures['cmc'][rank - 1]), step)
        for key in ('mAP', 'mINP'):
            writer.add_scalar(f'final/{prefix}{key}', figures[key], step)
    writer.close()
