"""The mutations tried against the suite: each removes one behaviour with a one-line edit, and the tests named with
it must then fail. A test covers a behaviour only if it does.

    python tests/mutations.py                 # every mutation, each in a fresh copy of the repository
    python tests/mutations.py --only resume   # those whose name contains 'resume'
    python tests/mutations.py --list
    python tests/mutations.py --suite         # each against the whole default suite (-x) instead of its tests

Each run copies the working tree (not .git, data/, model/) to a temporary folder, applies the edit there, runs
the named tests with pytest and prints CAUGHT (the tests failed, as they must) or SURVIVED; the exit status is
the number that survived. A mutation with a `reason` is one the suite cannot catch for that reason: it is run
and reported as EXPECTED when it survives, and not counted. The working tree itself is never changed.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# `reason`: set on a mutation the suite cannot catch for a good reason (reported as EXPECTED, not counted).
Mutation = namedtuple('Mutation', 'name file old new tests reason', defaults=(None,))

MUTATIONS = [
    # issue 17: one input-size resolver; the runtime apart from the recipe
    Mutation('a saved run takes the test folder\'s layout size', 'reid/evaluation/extract.py',
             "size = spec.input_size()   # what the run was trained at",
             "size = spec.input_size(test_dir)   # what the run was trained at",
             ['tests/test_original.py::test_a_run_without_h_w_is_fed_256x128_on_a_vehicle_layout_by_every_command']),
    Mutation('the API ignores the run\'s own h/w', 'reid/api.py',
             "self.size = self.spec.input_size()", "self.size = (256, 128)",
             ['tests/test_api.py']),
    Mutation('the machine\'s bf16 choice is written into the recipe', 'reid/training/trainer.py',
             "    scaler = torch.amp.GradScaler('cuda') if runtime.amp_dtype == torch.float16 else None",
             "    scaler = torch.amp.GradScaler('cuda') if runtime.amp_dtype == torch.float16 else None\n"
             "    opts.bf16 = opts.bf16 or runtime.amp_dtype == torch.bfloat16",
             ['tests/test_train.py::test_the_machines_choice_is_recorded_apart_and_never_carried_over_by_resume']),
    Mutation('--resume ignores --cpu_bf16 given on its command line', 'reid/training/recipe.py',
             "SESSION_OPTIONS = ('cpu_bf16', 'channels_last', 'compile')", "SESSION_OPTIONS = ('compile',)",
             ['tests/test_train.py::test_the_machines_choice_is_recorded_apart_and_never_carried_over_by_resume']),
    Mutation('a resumed session is not recorded', 'reid/runs.py',
             "        save_opts({**values, RUNTIME_KEY: list(values.get(RUNTIME_KEY) or []) + [entry]}, self.opts_file)",
             "        pass",
             ['tests/test_train.py::test_the_machines_choice_is_recorded_apart_and_never_carried_over_by_resume']),
    Mutation('an old run\'s machine-chosen bf16 is read back', 'reid/runs.py',
             "        if reason.startswith('auto') and values.get('bf16'):",
             "        if False:",
             ['tests/test_train.py::test_a_run_of_the_previous_format_resumes_without_the_machines_bf16']),
    Mutation('REID_NATIVE_BF16 is not read', 'reid/runtime.py',
             "    forced = os.environ.get(FORCE_NATIVE_BF16, '').strip() if flags is None else ''",
             "    forced = ''",
             ['tests/test_runtime.py']),
    Mutation('the code copy leaves the package out', 'reid/runs.py',
             "    for src in sorted(src_dir.glob('*.py')) + sorted((src_dir / 'reid').rglob('*.py')):",
             "    for src in sorted(src_dir.glob('*.py')):",
             ['tests/test_train.py::test_one_epoch_run_writes_every_output']),
    Mutation('test.py drops a network flag of the spec', 'reid/spec.py',
             "    for name in option_names():\n        value = getattr(given, name, None)",
             "    for name in option_names()[1:]:\n        value = getattr(given, name, None)",
             ['tests/test_test.py::test_original_model_flags_are_accepted_and_checked']),
    # issue 21: bf16 by measurement per job, non-finite weights, torchrun with one process, the GPU check
    Mutation('training takes bf16 where the CPU has it', 'reid/runtime.py',
             "AUTO_BF16 = {'train': False, 'extract': True}", "AUTO_BF16 = {'train': True, 'extract': True}",
             ['tests/test_runtime.py::test_auto_bf16_is_decided_per_job_by_the_measurement']),
    Mutation('extraction stays fp32 where the CPU has bf16', 'reid/runtime.py',
             "AUTO_BF16 = {'train': False, 'extract': True}", "AUTO_BF16 = {'train': False, 'extract': False}",
             ['tests/test_runtime.py']),
    Mutation('non-finite weights with a finite loss are saved', 'reid/training/trainer.py',
             "        if broken:\n            raise TrainingStopped(", "        if False:\n            raise TrainingStopped(",
             ['tests/test_reliability.py::test_non_finite_weights_with_a_finite_loss_stop_and_are_never_saved']),
    Mutation('save_atomic writes non-finite tensors', 'reid/runs.py',
             "    broken = non_finite_entry(obj)\n", "    broken = None\n",
             ['tests/test_reliability.py::test_a_checkpoint_with_non_finite_values_is_never_written']),
    Mutation('torchrun with one process joins no group', 'reid/training/distributed.py',
             "    launched = world > 1 or 'TORCHELASTIC_RUN_ID' in os.environ",
             "    launched = world > 1",
             ['tests/test_distributed.py::test_torchrun_with_one_process_joins_a_group_and_trains_as_a_plain_run']),
    Mutation('the GPU check fails on a machine without CUDA', 'bench/gpu_check.sh',
             '    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False or REID_DEVICE=cpu); '
             'nothing was run"\n    exit 0',
             '    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False or REID_DEVICE=cpu); '
             'nothing was run"\n    exit 1',
             ['tests/test_runtime.py::test_the_gpu_check_says_in_one_line_that_there_is_no_gpu_and_exits_0']),
    Mutation('CPU bf16 runs the convolutions on tiny maps in bf16', 'reid/runtime.py',
             "        for name in names:\n            conv = model.get_submodule(name)",
             "        for name in names[:0]:\n            conv = model.get_submodule(name)",
             ['tests/test_runtime.py']),
    Mutation('a 2x1 map counts as big enough for bf16', 'reid/runtime.py',
             "SMALL_MAP_POSITIONS = 4\n", "SMALL_MAP_POSITIONS = 2\n", ['tests/test_runtime.py']),
    # the loss terms (reid/training/terms.py)
    Mutation('the softmax term drops label smoothing', 'reid/training/terms.py',
             "        return cross_entropy_loss(batch.logits.float(), batch.labels, self.label_smoothing)",
             "        return cross_entropy_loss(batch.logits.float(), batch.labels)",
             ['tests/test_terms.py']),
    Mutation('the centres step on the weighted gradient', 'reid/training/terms.py',
             "                    p.grad.mul_(1.0 / self.weight)", "                    pass",
             ['tests/test_terms.py']),
    Mutation('the adversarial term runs every step', 'reid/training/terms.py',
             "        if batch.step % self.every:", "        if False:",
             ['tests/test_terms.py']),
    Mutation('the DG term is one-sided', 'reid/training/terms.py',
             "            + F.kl_div(student.log_softmax(1), q, reduction='batchmean')) / 2",
             "            + 0) / 2",
             ['tests/test_terms.py']),
    Mutation('the loop skips a term', 'reid/training/terms.py',
             "        if value is not None:", "        if value is not None and term is not terms[-1]:",
             ['tests/test_terms.py']),
    # issue 18: every trick does what it says (the README tricks table, the loss constants, the sampler, the
    # heads, the schedule, the augmentations on both paths, the evaluation rules, resume, torchrun)
    Mutation('--instance_id does not merge the images of an id', 'reid/training/losses.py',
             "        if self.use_labels:\n            ids, member", "        if False:\n            ids, member",
             ['tests/test_losses.py']),
    Mutation('--instance_id takes the old target (an image of another id)', 'reid/training/losses.py',
             "        target = torch.arange(len(x), device=x.device)\n",
             "        target = torch.unique(labels, return_inverse=True)[1] if self.use_labels else "
             "torch.arange(len(x), device=x.device)\n        x = F.normalize(feature, dim=1)\n",
             ['tests/test_losses.py']),
    Mutation('torchrun: the losses step on each rank\'s own gradient', 'reid/training/terms.py',
             "        distributed.average_gradients(self.loss.parameters())\n", "",
             ['tests/test_distributed.py::test_the_losses_parameters_are_the_same_on_every_rank_after_a_step']),
    Mutation('torchrun: the losses are not broadcast from rank 0', 'reid/training/trainer.py',
             "    distributed.broadcast_parameters(metric_losses)", "    pass",
             ['tests/test_distributed.py'],
             'every rank seeds the same generator before building the losses, so they start equal anyway; the '
             'broadcast is a guard (its function is tested directly, with different seeds per rank)'),
    Mutation('--PCB --DG takes the softmax over the parts', 'reid/training/terms.py',
             "    return outputs.softmax(2).mean(1) if outputs.dim() == 3 else outputs", "    return outputs",
             ['tests/test_terms.py']),
    Mutation('--usam uses ReLU', 'reid/models/backbones.py',
             "        att = F.leaky_relu(self.bn(9 * fmap - neighbourhood), 0.1)",
             "        att = F.relu(self.bn(9 * fmap - neighbourhood))", ['tests/test_model.py']),
    Mutation('--usam sits after the maxpool', 'reid/models/backbones.py',
             "            stages.insert(3, ('usam_1', USAM()))", "            stages.insert(4, ('usam_1', USAM()))",
             ['tests/test_model.py']),
    Mutation('--use_dense adds a ReLU after the features', 'reid/models/backbones.py',
             "        return nn.Sequential(OrderedDict(features=net.features)), net.classifier.in_features, True",
             "        return (nn.Sequential(OrderedDict(features=net.features, relu=nn.ReLU())), "
             "net.classifier.in_features, True)", ['tests/test_original.py']),
    Mutation('--stride 1 leaves layer4 downsampling', 'reid/models/backbones.py',
             "            conv.stride = (1, 1)", "            conv.stride = conv.stride", ['tests/test_model.py']),
    Mutation('the triplet margin is 0.5', 'reid/training/losses.py',
             "    'triplet': lambda o, k, d: TripletLoss(0.3, o.get('triplet_mining', 'pairs')),",
             "    'triplet': lambda o, k, d: TripletLoss(0.5, o.get('triplet_mining', 'pairs')),",
             ['tests/test_losses.py']),
    Mutation('the triplet miner\'s epsilon is 0.2', 'reid/training/losses.py',
             "    def __init__(self, margin=0.3, mining='pairs', epsilon=0.1):",
             "    def __init__(self, margin=0.3, mining='pairs', epsilon=0.2):", ['tests/test_losses.py']),
    Mutation('circle loss gamma 64', 'reid/training/losses.py',
             "    'circle': lambda o, k, d: CircleLoss(0.25, 32.0),", "    'circle': lambda o, k, d: CircleLoss(0.25, 64.0),",
             ['tests/test_losses.py']),
    Mutation('ArcFace margin 30 degrees', 'reid/training/losses.py',
             "margin=math.radians(28.6), scale=64.0):", "margin=math.radians(30.0), scale=64.0):",
             ['tests/test_losses.py']),
    Mutation('CosFace scale 32', 'reid/training/losses.py',
             "    def __init__(self, num_classes, feature_dim, margin=0.35, scale=64.0):",
             "    def __init__(self, num_classes, feature_dim, margin=0.35, scale=32.0):", ['tests/test_losses.py']),
    Mutation('SphereFace m 3', 'reid/training/losses.py',
             "    def __init__(self, num_classes, feature_dim, margin=4, scale=1.0):",
             "    def __init__(self, num_classes, feature_dim, margin=3, scale=1.0):", ['tests/test_losses.py']),
    Mutation('contrastive negative margin 0.5', 'reid/training/losses.py',
             "    def __init__(self, pos_margin=0.0, neg_margin=1.0):",
             "    def __init__(self, pos_margin=0.0, neg_margin=0.5):", ['tests/test_losses.py']),
    Mutation('--ins_gamma defaults to 16', 'reid/training/recipe.py',
             "    g.add_argument('--ins_gamma', default=32, type=float,", "    g.add_argument('--ins_gamma', default=16, type=float,",
             ['tests/test_losses.py', 'tests/test_train.py::test_the_defaults_are_the_originals']),
    Mutation('center loss weight 0.005', 'reid/training/losses.py',
             "    loss_weight = 0.0005\n", "    loss_weight = 0.005\n", ['tests/test_terms.py', 'tests/test_losses.py']),
    Mutation('the centres\' SGD at lr 0.05', 'reid/training/losses.py',
             "    own_lr = 0.5\n", "    own_lr = 0.05\n", ['tests/test_losses.py', 'tests/test_terms.py']),
    Mutation('the loop never calls after_backward (centres on the weighted gradient)', 'reid/training/loop.py',
             "        for term in terms:\n            term.after_backward()", "        for term in terms[:0]:\n            term.after_backward()",
             ['tests/test_terms.py']),
    Mutation('label smoothing forced to 0 in training', 'reid/training/terms.py',
             "    terms = [SoftmaxTerm(opts.label_smoothing)]", "    terms = [SoftmaxTerm(0.0)]",
             ['tests/test_terms.py']),
    Mutation('--adv term dropped', 'reid/training/terms.py',
             "    if opts.adv > 0:\n        terms.append(AdversarialTerm(", "    if False:\n        terms.append(AdversarialTerm(",
             ['tests/test_terms.py']),
    Mutation('ODFA perturbs by 8 grey levels', 'reid/training/adversarial.py',
             "def opposite_direction_images(model, images, rate=16):", "def opposite_direction_images(model, images, rate=8):",
             ['tests/test_adversarial.py']),
    Mutation('--DG consistency term dropped from the loss', 'reid/training/trainer.py',
             "            epoch_terms.append(ConsistencyTerm(dg_batches(opts, epoch, runtime), averaged))",
             "            pass", ['tests/test_train.py::test_every_loss_and_trick_trains_resumes_exactly_and_tests']),
    Mutation('--DG consistency weight 0', 'reid/training/terms.py',
             "    def __init__(self, dg_batches, teacher, weight=0.1):", "    def __init__(self, dg_batches, teacher, weight=0.0):",
             ['tests/test_terms.py']),
    Mutation('--DG joins with --wa (not strictly after)', 'reid/training/trainer.py',
             "        if opts.DG and epoch > opts.wa_start * opts.total_epoch:",
             "        if opts.DG and epoch >= opts.wa_start * opts.total_epoch:", ['tests/test_train.py::test_every_loss_and_trick_trains_resumes_exactly_and_tests']),
    Mutation('--wa EMA decay 0.99', 'reid/training/trainer.py',
             "get_ema_avg_fn(0.996))", "get_ema_avg_fn(0.99))", ['tests/test_train.py::test_every_loss_and_trick_trains_resumes_exactly_and_tests']),
    Mutation('--wa starts one epoch late', 'reid/training/trainer.py',
             "        if opts.wa and averaged is None and epoch >= opts.wa_start * opts.total_epoch:",
             "        if opts.wa and averaged is None and epoch > opts.wa_start * opts.total_epoch:",
             ['tests/test_train.py::test_every_loss_and_trick_trains_resumes_exactly_and_tests']),
    Mutation('--wa BN statistics not recomputed (update_bn removed)', 'reid/training/trainer.py',
             "            update_bn(train_loader(train_set, opts, epoch, steps_per_epoch, runtime), averaged, device)",
             "            pass", ['tests/test_train.py::test_every_loss_and_trick_trains_resumes_exactly_and_tests']),
    Mutation('--cache batches without erasing', 'reid/training/trainer.py',
             "                         erasing_p=opts.erasing_p, jitter=opts.color_jitter)",
             "                         erasing_p=0.0, jitter=opts.color_jitter)", ['tests/test_augment.py']),
    Mutation('--cache batches without colour jitter', 'reid/training/trainer.py',
             "                         erasing_p=opts.erasing_p, jitter=opts.color_jitter)",
             "                         erasing_p=opts.erasing_p, jitter=False)", ['tests/test_augment.py']),
    Mutation('--cache batches without pad-crop', 'reid/training/trainer.py',
             "    return CachedBatches(pixels, train_set.targets, sampler, runtime.device, seed + rank, pad=opts.pad,",
             "    return CachedBatches(pixels, train_set.targets, sampler, runtime.device, seed + rank, pad=0,",
             ['tests/test_augment.py']),
    Mutation('cached batches never flip', 'reid/data/augment.py',
             "def random_flip(images, generator, p=0.5):", "def random_flip(images, generator, p=0.0):",
             ['tests/test_augment.py']),
    Mutation('per-image path without erasing', 'reid/data/transforms.py',
             "    if erasing_p > 0:\n        steps.append(random_erasing(erasing_p))", "    if False:\n        steps.append(random_erasing(erasing_p))",
             ['tests/test_augment.py', 'tests/test_random_erasing.py']),
    Mutation('per-image path without flips', 'reid/data/transforms.py',
             "    steps.append(transforms.RandomHorizontalFlip())", "    pass",
             ['tests/test_augment.py']),
    Mutation('metric losses get shuffled batches, not P x K', 'reid/training/recipe.py',
             "        o.sampler = 'pk' if metric else 'random'", "        o.sampler = 'random'",
             ['tests/test_train.py::test_quick_preset_is_the_quick_starts_recipe_and_metric_losses_still_get_pk_batches', 'tests/test_train.py::test_every_loss_and_trick_trains_resumes_exactly_and_tests']),
    Mutation('P x K batches take K-1 images of an id', 'reid/data/samplers.py',
             "        groups[pid] = [order[i:i + num_instances] for i in range(0, len(order) - num_instances + 1, num_instances)]",
             "        groups[pid] = [order[i:i + num_instances - 1] for i in range(0, len(order) - num_instances + 1, num_instances)]",
             ['tests/test_samplers.py']),
    Mutation('BNNeck classifier with a bias', 'reid/models/heads.py',
             "        self.classifier = nn.Linear(in_dim, num_classes, bias=False)",
             "        self.classifier = nn.Linear(in_dim, num_classes)", ['tests/test_model.py']),
    Mutation('BNNeck gives the metric losses the feature after BN', 'reid/models/heads.py',
             "        return self.classifier(self.bn(x)), x", "        return self.classifier(self.bn(x)), self.bn(x)",
             ['tests/test_model.py']),
    Mutation('the backbone trains at the full lr', 'reid/training/recipe.py',
             "    p.add_argument('--backbone_lr_mult', default=0.1, type=float,",
             "    p.add_argument('--backbone_lr_mult', default=1.0, type=float,", ['tests/test_train.py::test_the_defaults_are_the_originals', 'tests/test_model.py']),
    Mutation('warm-up starts at 0', 'reid/training/loop.py',
             "        factor *= 0.1 + 0.9 * step / warm_steps", "        factor *= step / warm_steps", ['tests/test_train.py::test_step_decay_at_two_thirds_and_none_for_one_epoch', 'tests/test_train.py::test_warm_up_is_linear_from_a_tenth_and_cosine_ends_at_a_hundredth', 'tests/test_train.py::test_milestone_steps_drop_the_lr_at_each_given_epoch']),
    Mutation('cosine decays to 0', 'reid/training/loop.py',
             "        factor = 0.01 + 0.99 * (1 + math.cos(math.pi * epoch / total_epoch)) / 2",
             "        factor = (1 + math.cos(math.pi * epoch / total_epoch)) / 2", ['tests/test_train.py::test_step_decay_at_two_thirds_and_none_for_one_epoch', 'tests/test_train.py::test_warm_up_is_linear_from_a_tenth_and_cosine_ends_at_a_hundredth', 'tests/test_train.py::test_milestone_steps_drop_the_lr_at_each_given_epoch']),
    Mutation('step decay at half of training', 'reid/training/loop.py',
             "        milestone = (2 * total_epoch) // 3", "        milestone = total_epoch // 2", ['tests/test_train.py::test_step_decay_at_two_thirds_and_none_for_one_epoch', 'tests/test_train.py::test_warm_up_is_linear_from_a_tenth_and_cosine_ends_at_a_hundredth', 'tests/test_train.py::test_milestone_steps_drop_the_lr_at_each_given_epoch']),
    Mutation('same-camera matches are not junk', 'reid/evaluation/metrics.py',
             "    keys[rows[same_cam], cols[same_cam]] = float('inf')\n    is_good = ~same_cam & (gl[cols] != JUNK_ID)",
             "    is_good = gl[cols] != JUNK_ID", ['tests/test_metrics.py']),
    Mutation('id -1 images are not junk', 'reid/evaluation/metrics.py',
             "    keys.index_fill_(1, junk_columns, float('inf'))\n", "", ['tests/test_metrics.py']),
    Mutation('multi-query pooling takes the sum, unnormalised', 'reid/evaluation/metrics.py',
             "    pooled = pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-12)\n", "    pooled = pooled * 3.0\n",
             ['tests/test_metrics.py', 'tests/test_evaluate_cli.py']),
    Mutation('re-ranking k1 defaults to 10', 'reid/evaluation/protocols.py',
             "RERANK_DEFAULTS = {'k_reciprocal': dict(k1=20, k2=6),", "RERANK_DEFAULTS = {'k_reciprocal': dict(k1=10, k2=6),",
             ['tests/test_evaluate_cli.py', 'tests/test_rerank.py']),
    Mutation('resume does not restore the optimizer', 'reid/training/trainer.py',
             "    optimizer.load_state_dict(state['optimizer'])\n", "",
             ['tests/test_train.py::test_resume_continues_exactly_like_an_uninterrupted_run']),
    Mutation('PCB with 4 parts', 'reid/models/heads.py', "PCB_PARTS = 6\n", "PCB_PARTS = 4\n", ['tests/test_model.py']),
    Mutation('the ClassBlock bottleneck without BatchNorm', 'reid/models/heads.py',
             "        layers.append(nn.BatchNorm1d(dim))\n", "", ['tests/test_model.py', 'tests/test_original.py']),
    Mutation('per-image path without colour jitter', 'reid/data/transforms.py',
             "        steps.append(transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0))",
             "        pass", ['tests/test_augment.py']),
    Mutation('multi-query pooling ignores the camera', 'reid/evaluation/metrics.py',
             "    pairs = torch.stack([torch.cat([ql, ml]), torch.cat([qc, mc])], 1)",
             "    pairs = torch.stack([torch.cat([ql, ml]), torch.cat([qc, mc]) * 0], 1)",
             ['tests/test_metrics.py', 'tests/test_evaluate_cli.py']),
    Mutation('re-ranking lambda defaults to 0.5', 'evaluate_gpu.py',
             "    parser.add_argument('--lambda', dest='lambda_value', default=0.3, type=float,",
             "    parser.add_argument('--lambda', dest='lambda_value', default=0.5, type=float,",
             ['tests/test_evaluate_cli.py', 'tests/test_rerank.py']),
    Mutation('IBN normalises a quarter of the channels by instance', 'reid/models/backbones.py',
             "    def __init__(self, planes, ratio=0.5):", "    def __init__(self, planes, ratio=0.25):",
             ['tests/test_model.py']),
    Mutation('--use_dense builds DenseNet-169', 'reid/spec.py',
             "    'use_dense': ('densenet121', None),", "    'use_dense': ('densenet169', None),",
             ['tests/test_model.py', 'tests/test_original.py']),
    Mutation('--steps drops the lr one epoch late', 'reid/training/loop.py',
             "        factor = 0.1 ** sum(epoch >= m for m in milestones)",
             "        factor = 0.1 ** sum(epoch > m for m in milestones)",
             ['tests/test_train.py::test_milestone_steps_drop_the_lr_at_each_given_epoch']),
    Mutation('resume does not restore the scheduler', 'reid/training/trainer.py',
             "    scheduler.load_state_dict(state['scheduler'])\n", "", ['tests/test_train.py::test_resume_continues_exactly_like_an_uninterrupted_run']),
    Mutation('resume does not restore the centres', 'reid/training/trainer.py',
             "    metric_losses.load_state_dict(state.get('losses', {}))\n", "", ['tests/test_train.py::test_every_loss_and_trick_trains_resumes_exactly_and_tests']),
    Mutation('resume does not restore the RNG', 'reid/training/trainer.py',
             "    restore_rng_states(per_rank[rank] if rank < len(per_rank) else state['rng'])\n", "",
             ['tests/test_train.py::test_resume_continues_exactly_like_an_uninterrupted_run']),
    Mutation('demo.py --html ignores the run\'s threshold', 'demo.py',
             "    threshold = threshold_of(os.path.join(args.model_dir, args.name), args.result)",
             "    threshold = None", ['tests/test_html.py::test_demo_html_draws_the_runs_calibrated_threshold']),
    # issue 20: heatmaps, the results page that explains itself, TensorBoard, the whole run's ETA
    Mutation('the heatmap is the mean of absolute activations, not of squares', 'reid/evaluation/heatmap.py',
             "energy = feature_map.float().pow(2).mean(dim=1, keepdim=True)",
             "energy = feature_map.float().abs().mean(dim=1, keepdim=True)",
             ['tests/test_heatmap.py::test_activation_map_is_the_scaled_channel_mean_of_squares']),
    Mutation('heatmaps are not scaled per image', 'reid/evaluation/heatmap.py',
             "    return (up - low) / (high - low).clamp_min(1e-12)", "    return up / up.max()",
             ['tests/test_heatmap.py::test_activation_map_is_the_scaled_channel_mean_of_squares']),
    Mutation('a ViT keeps its register tokens in the map', 'reid/evaluation/heatmap.py',
             "tokens = tokens[:, getattr(body, 'num_prefix_tokens', 1):]", "tokens = tokens[:, 1:]",
             ['tests/test_heatmap.py']),
    Mutation('the ViT token grid is transposed', 'reid/evaluation/heatmap.py',
             "    gh, gw = x.shape[2] // ph, x.shape[3] // pw", "    gw, gh = x.shape[2] // ph, x.shape[3] // pw",
             ['tests/test_heatmap.py']),
    Mutation('Swin tokens are read channels first', 'reid/evaluation/heatmap.py',
             "lambda o: o.dim() == 4).permute(0, 3, 1, 2)", "lambda o: o.dim() == 4)",
             ['tests/test_heatmap.py']),
    Mutation('a pooled 1x1 map counts as the last feature map', 'reid/evaluation/heatmap.py',
             "    return output.dim() == 4 and output.shape[2] * output.shape[3] > 1", "    return output.dim() == 4",
             ['tests/test_heatmap.py']),
    Mutation('demo.py --heatmap draws without the maps', 'demo.py',
             "    draw_ranking(query, shown, heatmap_path(args), heats=heats)",
             "    draw_ranking(query, shown, heatmap_path(args), heats=None)",
             ['tests/test_heatmap.py::test_demo_heatmap_writes_heatmap_png_with_the_run']),
    Mutation('the person box ignores the image flip', 'reid/data/synthetic.py',
             "            box = (WIDTH - box[2], box[1], WIDTH - box[0], box[3])", "            pass",
             ['tests/test_synthetic.py::test_person_boxes_side_file_keeps_the_images_and_bounds_the_drawn_person']),
    Mutation('drawing the box consumes the image\'s random draws', 'reid/data/synthetic.py',
             "phase, front, copy.deepcopy(r)) if with_box else None", "phase, front, r) if with_box else None",
             ['tests/test_synthetic.py::test_person_boxes_side_file_keeps_the_images_and_bounds_the_drawn_person']),
    Mutation('the gallery camera share is of all first hits, not of the wrong ones', 'reid/evaluation/report.py',
             "share=wrong / len(wrong_at) if len(wrong_at) else 0.0", "share=wrong / len(top1) if len(top1) else 0.0",
             ['tests/test_html.py::test_html_page_in_a_real_browser']),
    Mutation('the score histograms keep same-camera junk pairs', 'reid/evaluation/report.py',
             "    junk = (gl[None, :] == JUNK_ID) | (same_id & (gc[None, :] == qc[:, None]))",
             "    junk = gl[None, :] == JUNK_ID",
             ['tests/test_html.py::test_html_threshold_on_the_score_histograms']),
    Mutation('the threshold is not drawn on the histograms', 'reid/evaluation/report.py',
             "    if threshold is not None:\n        ax.axvline(", "    if False:\n        ax.axvline(",
             ['tests/test_html.py::test_html_threshold_on_the_score_histograms']),
    Mutation('the summary pictures point to a missing folder', 'reid/evaluation/report.py',
             "f'<img src=\"{name}\" alt=\"{name}\">'", "f'<img src=\"pictures/{name}\" alt=\"{name}\">'",
             ['tests/test_html.py::test_html_page_in_a_real_browser']),
    Mutation('#heatmaps does not switch the rows', 'reid/evaluation/report.py',
             "if (/heatmaps/.test(location.hash))", "if (false)",
             ['tests/test_html.py::test_html_heatmap_toggle']),
    Mutation('TensorBoard logs the backbone\'s lr as train/lr', 'reid/training/tensorboard.py',
             "self.writer.add_scalar('train/lr', optimizer.param_groups[-1]['lr'], global_step)",
             "self.writer.add_scalar('train/lr', optimizer.param_groups[0]['lr'], global_step)",
             ['tests/test_tensorboard.py']),
    Mutation('epoch figures are logged one epoch early', 'reid/training/tensorboard.py',
             "self.writer.add_scalar(f'epoch/{key}', history[key][epoch - 1], epoch)",
             "self.writer.add_scalar(f'epoch/{key}', history[key][epoch - 1], epoch - 1)",
             ['tests/test_tensorboard.py']),
    Mutation('the ETA is of this session, not of the whole run', 'reid/training/trainer.py',
             "run_eta(epoch_seconds, opts.total_epoch - epoch - 1)", "run_eta(epoch_seconds, last_epoch - epoch - 1)",
             ['tests/test_tensorboard.py']),
    Mutation('every torchrun rank writes TensorBoard files', 'reid/training/trainer.py',
             "    if getattr(opts, 'tensorboard', False) and rank == 0:", "    if getattr(opts, 'tensorboard', False):",
             ['tests/test_distributed.py::test_two_process_training_one_set_of_checkpoints_and_resume']),
    Mutation('--tensorboard cannot join at a resume', 'reid/training/recipe.py',
             " + ('tensorboard',)   # a resume may turn it on", "   # a resume may turn it on",
             ['tests/test_tensorboard.py']),
    # issue 19: retrieval beyond the ranking: GNN re-ranking, query expansion, verification thresholds
    Mutation('GNN: one propagation round instead of two', 'reid/evaluation/gnn_rerank.py',
             "        for _ in range(2):\n            w = _plus_transpose(a)",
             "        for _ in range(1):\n            w = _plus_transpose(a)",
             ['tests/test_gnn_rerank.py']),
    Mutation('GNN: the neighbour scores are not squared', 'reid/evaluation/gnn_rerank.py',
             "weight = (scores[:, :k2] ** 2).reshape(-1)", "weight = scores[:, :k2].reshape(-1)",
             ['tests/test_gnn_rerank.py']),
    Mutation('GNN: A <- A + A^T skipped', 'reid/evaluation/gnn_rerank.py',
             "    return matrix + matrix.t().to_sparse_csr()", "    return matrix",
             ['tests/test_gnn_rerank.py']),
    Mutation('GNN: the transposed half of the last round is left out', 'reid/evaluation/gnn_rerank.py',
             "        return torch.sparse.mm(self.p, a1_y.add_(a1t_y)).mul_(inverse_n2[:, None])",
             "        return torch.sparse.mm(self.p, a1_y).mul_(inverse_n2[:, None])",
             ['tests/test_gnn_rerank.py']),
    Mutation('GNN: lambda weights the wrong term', 'reid/evaluation/gnn_rerank.py',
             "score = score.mul(1 - lambda_value).add_(torch.mm(x[start:stop], x[n_query:].T), alpha=lambda_value)",
             "score = score.mul(lambda_value).add_(torch.mm(x[start:stop], x[n_query:].T), alpha=1 - lambda_value)",
             ['tests/test_gnn_rerank.py']),
    Mutation('--rerank gnn runs the k-reciprocal re-ranking', 'reid/evaluation/protocols.py',
             "    if method == 'gnn':\n        from", "    if method == 'gnnx':\n        from",
             ['tests/test_retrieval_cli.py']),
    Mutation('AQE: the query itself is not among its neighbours', 'reid/evaluation/query_expansion.py',
             "        summed = block.clone() if include_self else torch.zeros_like(block)",
             "        summed = torch.zeros_like(block)",
             ['tests/test_query_expansion.py']),
    Mutation('AQE: weights not raised to alpha', 'reid/evaluation/query_expansion.py',
             "weight = (-negated).clamp_(min=0) ** alpha", "weight = (-negated).clamp_(min=0)",
             ['tests/test_query_expansion.py']),
    Mutation('--dba is ignored', 'reid/evaluation/query_expansion.py',
             "    if dba:\n        gf = _expanded", "    if False:\n        gf = _expanded",
             ['tests/test_query_expansion.py', 'tests/test_retrieval_cli.py']),
    Mutation('verification: the threshold is the k-th, not the (k+1)-th, highest negative', 'reid/evaluation/verification.py',
             "thresholds.append(float(kept[offset + r - int(above[b])]))",
             "thresholds.append(float(kept[max(0, offset + r - int(above[b]) - 1)]))",
             ['tests/test_verification.py']),
    Mutation('verification: junk pairs counted as negatives', 'reid/evaluation/verification.py',
             "        yield scores, same_id & ~junk, ~same_id & ~junk", "        yield scores, same_id & ~junk, ~same_id",
             ['tests/test_verification.py']),
    Mutation('verification: ties in the AUC count fully', 'reid/evaluation/verification.py',
             "'auc': (greater + 0.5 * ties) / (n_pos * n_neg)", "'auc': (greater + ties) / (n_pos * n_neg)",
             ['tests/test_verification.py']),
    Mutation('verification: TAR counts scores equal to the threshold', 'reid/evaluation/verification.py',
             "torch.tensor(t, device=device), right=True)", "torch.tensor(t, device=device), right=False)",
             ['tests/test_verification.py']),
    Mutation('a malformed threshold.yaml is accepted', 'reid/runs.py',
             "        if not 0 < far < 1 or not np.isfinite(threshold):", "        if False:",
             ['tests/test_verification.py']),
    Mutation('same_identity accepts scores below the threshold', 'reid/api.py',
             "        return score, score > threshold", "        return score, score > threshold - 1",
             ['tests/test_same_identity.py::test_same_identity_applies_the_threshold']),
    Mutation('demo.py judges hits by a threshold of 0', 'demo.py',
             "verdict = '' if threshold is None else ('same' if score > threshold else 'different')",
             "verdict = '' if threshold is None else ('same' if score > 0 else 'different')",
             ['tests/test_same_identity.py::test_demo_query_image_judges_each_hit']),
]

def copy_repo(dst):
    """Copy the working tree without git, caches and the top-level data/, model/ and bench/runs/ folders."""
    skip_top = {REPO / 'data', REPO / 'model', REPO / 'bench' / 'runs', REPO / '.git'}

    def ignore(folder, names):
        return {n for n in names if Path(folder) / n in skip_top or n == '__pycache__' or n.endswith('.egg-info')}
    shutil.copytree(REPO, dst, ignore=ignore, symlinks=True)


def run(mutation, timeout, tests=None):
    """Apply `mutation` in a fresh copy and run its tests (or `tests`); return (caught: bool, seconds, note)."""
    with tempfile.TemporaryDirectory(prefix='mutation_') as tmp:
        copy = Path(tmp) / 'repo'
        copy_repo(copy)
        path = copy / mutation.file
        text = path.read_text()
        if text.count(mutation.old) != 1:
            return None, 0.0, f'the line to mutate is not in {mutation.file} exactly once: update this list'
        path.write_text(text.replace(mutation.old, mutation.new))
        start = time.perf_counter()
        done = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider',
                               *(tests or mutation.tests)], cwd=copy, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, PYTHONDONTWRITEBYTECODE='1'))
        lines = done.stdout.strip().splitlines() or ['']
        if 'error during collection' in done.stdout:   # the copy does not even import: not a verdict
            return None, time.perf_counter() - start, next((l for l in lines if l.startswith('E ')), lines[-1])
        return done.returncode != 0, time.perf_counter() - start, lines[-1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--only', default=None, help='run the mutations whose name contains this text')
    p.add_argument('--list', action='store_true', help='list the mutations and exit')
    p.add_argument('--suite', action='store_true', help='run the whole default suite (-x) for each mutation')
    p.add_argument('--timeout', default=900, type=int, help='seconds per mutation')
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.name]
    if args.list:
        for m in chosen:
            print(f'{m.name}  [{m.file}]  -> {" ".join(m.tests)}' + (f'  (expected to survive: {m.reason})'
                                                                      if m.reason else ''))
        return 0
    survived = expected = 0
    for m in chosen:
        caught, seconds, note = run(m, args.timeout, ['tests'] if args.suite else None)
        status = 'CAUGHT' if caught else ('BROKEN' if caught is None else 'EXPECTED' if m.reason else 'SURVIVED')
        survived += caught is not True and not (caught is False and m.reason)
        expected += caught is False and bool(m.reason)
        print(f'{status:8s} {seconds:6.1f} s  {m.name}  ({note})' + (f'\n         why: {m.reason}'
                                                                      if status == 'EXPECTED' else ''), flush=True)
    print(f'{len(chosen) - survived - expected} of {len(chosen)} mutations caught'
          + (f', {expected} expected to survive (reasons above)' if expected else ''))
    return survived


if __name__ == '__main__':
    sys.exit(main())
