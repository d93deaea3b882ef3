"""The mutations tried against the suite: each removes one behaviour with a one-line edit, and the tests named with
it must then fail. A test covers a behaviour only if it does.

    python tests/mutations.py                 # every mutation, each in a fresh copy of the repository
    python tests/mutations.py --only resume   # those whose name contains 'resume'
    python tests/mutations.py --list

Each run copies the working tree (not .git, data/, model/) to a temporary folder, applies the edit there, runs
the named tests with pytest and prints CAUGHT (the tests failed, as they must) or SURVIVED; the exit status is
the number that survived. The working tree itself is never changed.
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
Mutation = namedtuple('Mutation', 'name file old new tests')

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


def run(mutation, timeout):
    """Apply `mutation` in a fresh copy and run its tests; return (caught: bool, seconds, note)."""
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
                               *mutation.tests], cwd=copy, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, PYTHONDONTWRITEBYTECODE='1'))
        lines = done.stdout.strip().splitlines() or ['']
        if 'error during collection' in done.stdout:   # the copy does not even import: not a verdict
            return None, time.perf_counter() - start, next((l for l in lines if l.startswith('E ')), lines[-1])
        return done.returncode != 0, time.perf_counter() - start, lines[-1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--only', default=None, help='run the mutations whose name contains this text')
    p.add_argument('--list', action='store_true', help='list the mutations and exit')
    p.add_argument('--timeout', default=900, type=int, help='seconds per mutation')
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.name]
    if args.list:
        for m in chosen:
            print(f'{m.name}  [{m.file}]  -> {" ".join(m.tests)}')
        return 0
    survived = 0
    for m in chosen:
        caught, seconds, note = run(m, args.timeout)
        status = 'CAUGHT' if caught else ('BROKEN' if caught is None else 'SURVIVED')
        survived += caught is not True
        print(f'{status:8s} {seconds:6.1f} s  {m.name}  ({note})', flush=True)
    print(f'{len(chosen) - survived} of {len(chosen)} mutations caught')
    return survived


if __name__ == '__main__':
    sys.exit(main())
