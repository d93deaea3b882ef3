"""train.jpg: the loss and top-1 error curves of a run, per epoch, drawn headless (matplotlib's Agg canvas,
no pyplot backend switch).
"""


def draw_curves(history, path):
    """Save the loss and top-1 error curves (train and, when present, val) per epoch as an image.

    `history` maps 'train_loss', 'train_err', 'val_loss', 'val_err' to per-epoch lists (val lists may be empty).
    """
    # Figure without pyplot: no global backend switch, works headless (Agg canvas).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))
    FigureCanvasAgg(fig)
    for i, (key, title) in enumerate((('loss', 'loss'), ('err', 'top1err'))):
        ax = fig.add_subplot(1, 2, i + 1, title=title)
        for phase, style in (('train', 'bo-'), ('val', 'ro-')):
            values = history.get(f'{phase}_{key}', [])
            if values:
                ax.plot(range(1, len(values) + 1), values, style, label=phase, markersize=3)
        if key == 'loss':
            ax.set_yscale('log')  # a scratch network's first val loss can be 100x the rest
        ax.set_xlabel('epoch')
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
