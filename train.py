"""Train a re-ID network with softmax (ID) loss, plus any metric losses, on a prepared split; writes model/<name>/.

    python train.py --name ft_ResNet50 --data_dir ../Market/pytorch --train_all        # the original recipe
    python train.py --name bot --data_dir ../Market/pytorch --preset bot               # Bag of Tricks
    python train.py --name tri --data_dir ../Market/pytorch --triplet --circle --bnneck   # any combination
    python train.py --name demo --data_dir data/demo/pytorch --train_all --backbone resnet18 --scratch \
        --h 64 --w 32 --total_epoch 30 --warm_epoch 1                                   # ~3 min on 2 CPU cores
    python train.py --name ft_ResNet50 --resume                                           # continue a run
    torchrun --nproc_per_node 4 train.py --name ft_ResNet50 --data_dir ../Market/pytorch --train_all --sync_bn
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 \
        train.py ...                                      # two machines: the same line on each, --node_rank 1 there

Outputs in model/<name>/: opts.yaml (every flag), net_init.pth (the network before training),
net_XXX.pth (every 10 epochs, XXX = the epochs done: 010, 020, ...), net_last.pth, net_average.pth (--wa), resume.pth (optimizer,
scheduler, scaler, RNG states, curves, the losses' parameters and their optimizer, --wa's average; written before
the first epoch too), train.jpg (loss / top-1 error curves) and a copy of the code.
Structure (reid/training/trainer.py): flags (presets as defaults) -> runtime -> data -> model + loss terms ->
optimizers -> epoch loop -> save. opts.yaml holds the recipe (every flag) and, under `runtime`, what each session
ran on (device, precision, threads). --resume takes the recipe from opts.yaml, --gpu_ids, --num_workers,
--data_dir, --model_dir, --cache_dir from the command line, and --cpu_bf16, --channels_last, --compile from the
command line when given there; the runtime is chosen anew. Ctrl-C prints the command that continues it. With
torchrun --batchsize is the global batch, split over the processes; rank 0 alone logs and writes.
"""
import sys

from reid.models.backbones import PretrainedWeightsUnavailable
from reid.cli import one_line_errors
from reid.training import distributed
from reid.training.recipe import parse_options
from reid.training.trainer import interrupted_message, run_training


def main(argv=None):
    opts = parse_options(argv)
    try:
        # Ctrl-C: checkpoints are atomic, so resume.pth is whole and the message gives the command that continues
        with one_line_errors('train.py', lambda: interrupted_message(opts), also=(PretrainedWeightsUnavailable,)):
            run_training(opts)
    finally:
        distributed.shutdown()


if __name__ == '__main__':
    main(sys.argv[1:])
