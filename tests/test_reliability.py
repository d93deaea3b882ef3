"""Reliability matrix: bad data, interrupted runs, damaged results and hostile files, for every CLI.

Each case expects one clear line naming the file or flag (SystemExit with a one-line message, no traceback) and
that nothing of the user's is changed. Runs are tiny (shufflenet_v2_x0_5 from scratch, 32x16 inputs, 1-2 epochs),
in-process; subprocesses only where a process must be killed.
"""
import errno
import hashlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import demo
import evaluate_gpu
import prepare
import train
from reid import runs
from reid.data.images import ReIDImageFolder
from reid.data import prepared
from reid.data.prepared import list_reid_images
from conftest import load_test_cli
from reid.training import recipe, trainer
from reid.evaluation import extract

ROOT = Path(__file__).resolve().parents[1]
T = load_test_cli()

CLIS = {'prepare': prepare.main, 'train': train.main, 'test': T.main, 'evaluate': evaluate_gpu.main,
        'demo': demo.main}
# the smallest torchvision backbone: 3.5 MB checkpoints, so saves and kills are quick
SMALL = ['--backbone', 'shufflenet_v2_x0_5', '--scratch', '--h', '32', '--w', '16', '--batchsize', '16',
         '--num_workers', '0', '--lr', '0.01']


def one_line_exit(cli, argv, capsys, *fragments):
    """Run CLI `cli` with `argv`; assert it stops with one line holding every fragment and prints no traceback."""
    with pytest.raises(SystemExit) as err:
        CLIS[cli](list(map(str, argv)))
    message = err.value.code
    assert isinstance(message, str), f'exit code {message!r} instead of a message'
    assert '\n' not in message.strip(), message
    for fragment in fragments:
        assert str(fragment) in message, message
    captured = capsys.readouterr()
    assert 'Traceback' not in captured.out + captured.err
    return message


def digest(folder):
    """{relative path: sha256} of every file under `folder`: proof that nothing was changed."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def train_argv(data_dir, model_dir, name, *extra):
    return [str(a) for a in ['--data_dir', data_dir, '--model_dir', model_dir, '--name', name, *SMALL, *extra]]


def first_image(folder):
    return Path(sorted(Path(folder).rglob('*.jpg'))[0])


def damage(path, how):
    """Damage an image file in place the ways disks, copies and users do."""
    path = Path(path)
    data = path.read_bytes()
    if how == 'truncated':      # a copy cut in half: PIL's verify() passes it, only a full decode fails
        path.write_bytes(data[:len(data) // 2])
    elif how == 'zero_byte':
        path.write_bytes(b'')
    elif how == 'not_an_image':
        path.write_text('<html>a web page saved as .jpg</html>')
    elif how == 'corrupt_header':
        path.write_bytes(data[:2] + bytes(64) + data[66:])


DAMAGES = ('truncated', 'zero_byte', 'not_an_image', 'corrupt_header')


# ---------------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def odd_names(tiny_market, tmp_path_factory):
    """The tiny set under a path with spaces and non-ASCII characters, its file names too, prepared by prepare.py."""
    raw = tmp_path_factory.mktemp('odd') / 'my data é ü' / 'Market 1501 ß'
    for sub in ('bounding_box_train', 'bounding_box_test', 'query', 'gt_bbox'):
        (raw / sub).mkdir(parents=True)
        for src in sorted((tiny_market / sub).iterdir()):
            shutil.copy(src, raw / sub / src.name.replace('.jpg', ' copie été.jpg'))
    prepare.main(['--download_path', str(raw)])
    return raw / 'pytorch'


@pytest.fixture(scope='module')
def run(odd_names, tmp_path_factory):
    """A 1-epoch run trained on `odd_names`, in a model folder whose path has spaces and accents: (model_dir, name)."""
    model_dir = tmp_path_factory.mktemp('runs') / 'modèles à tester'
    train.main(train_argv(odd_names, model_dir, 'run ü', '--total_epoch', '1'))
    return model_dir, 'run ü'


def test_py_argv(run, test_dir, result, *extra):
    """Arguments of test.py for `run` (model_dir, name)."""
    model_dir, name = run
    return [str(a) for a in ['--name', name, '--model_dir', model_dir, '--test_dir', test_dir, '--result', result,
                             '--num_workers', '0', '--batchsize', '64', *extra]]


test_py_argv.__test__ = False  # a helper (pytest would collect the name)


def copy_run(run, dst, *files):
    """Copy opts.yaml and `files` of a run to `dst` (not the whole run: its checkpoints are tens of MB)."""
    model_dir, name = run
    dst.mkdir(parents=True)
    for f in ('opts.yaml', *files):
        shutil.copy(model_dir / name / f, dst / f)
    return dst


@pytest.fixture
def prepared_copy(odd_names, tmp_path):
    return Path(shutil.copytree(odd_names, tmp_path / 'copy of prepared'))


@pytest.fixture(scope='module')
def result_mat(run, odd_names, tmp_path_factory):
    """pytorch_result.mat written by test.py for `run`."""
    path = tmp_path_factory.mktemp('result') / 'pytorch_result.mat'
    T.main(test_py_argv(run, odd_names, path))
    return path


# ---------------------------------------------------------------------------------------------- 1. data, all CLIs

def test_names_with_spaces_and_accents_go_through_every_cli(run, odd_names, result_mat, tmp_path, capsys):
    """prepare -> train (fixtures) -> test -> evaluate -> demo on paths and file names with spaces and accents."""
    assert ' copie été.jpg' in first_image(odd_names / 'gallery').name
    mat = scipy.io.loadmat(result_mat)
    assert mat['gallery_f'].shape[0] == len(list_reid_images(odd_names / 'gallery'))
    capsys.readouterr()
    evaluate_gpu.main(['--result', str(result_mat)])
    assert capsys.readouterr().out.startswith('Rank@1:')
    out = tmp_path / 'dossier ü' / 'show é.png'
    demo.main(['--query_index', '0', '--test_dir', str(odd_names), '--result', str(result_mat), '--output', str(out)])
    assert out.is_file() and 'copie été.jpg' in capsys.readouterr().out


@pytest.mark.parametrize('how', DAMAGES)
def test_prepare_names_a_damaged_download_image(tiny_market, tmp_path, capsys, how):
    raw = Path(shutil.copytree(tiny_market, tmp_path / 'Market'))
    bad = sorted((raw / 'bounding_box_train').iterdir())[4]
    damage(bad, how)
    before = digest(raw)
    one_line_exit('prepare', ['--download_path', raw], capsys, bad, 'unreadable')
    assert digest(raw) == before and not (raw / 'pytorch').exists()


@pytest.mark.parametrize('how', DAMAGES)
def test_train_checks_every_image_when_it_starts(prepared_copy, tmp_path, capsys, how):
    """A file damaged after prepare.py ran: train.py stops before training, naming it, and writes no run."""
    bad = sorted((prepared_copy / 'train').rglob('*.jpg'))[5]
    also = first_image(prepared_copy / 'val')
    damage(bad, how)
    damage(also, 'zero_byte')
    one_line_exit('train', train_argv(prepared_copy, tmp_path / 'm', 'x'), capsys, bad, also, '2 unreadable')
    assert not (tmp_path / 'm').exists()


@pytest.mark.parametrize('how', DAMAGES)
def test_test_checks_every_image_when_it_starts(run, prepared_copy, tmp_path, capsys, how):
    bad = sorted((prepared_copy / 'query').rglob('*.jpg'))[2]
    damage(bad, how)
    one_line_exit('test', test_py_argv(run, prepared_copy, tmp_path / 'r.mat'), capsys, bad, 'unreadable')
    assert not (tmp_path / 'r.mat').exists()


def test_a_file_that_goes_bad_during_training_is_skipped_counted_and_named(prepared_copy, tmp_path, capsys,
                                                                          monkeypatch):
    bad = sorted((prepared_copy / 'train').rglob('*.jpg'))[3]
    checked = trainer.require_readable_images

    def check_then_break(paths, *args, **kwargs):  # the start-up check passes, then the disk loses the file
        checked(paths, *args, **kwargs)
        damage(bad, 'truncated')
    monkeypatch.setattr(trainer, 'require_readable_images', check_then_break)
    train.main(train_argv(prepared_copy, tmp_path / 'm', 'x', '--total_epoch', '1'))
    captured = capsys.readouterr()
    assert f'1 unreadable image(s) skipped so far (others took their place): {bad}' in captured.out
    assert f'skipped unreadable image {bad}' in captured.out and 'Traceback' not in captured.err
    assert runs.load_checkpoint(tmp_path / 'm' / 'x' / 'resume.pth')['epoch'] == 1


def test_a_file_that_goes_bad_during_test_is_named_and_nothing_is_saved(run, prepared_copy, tmp_path, capsys,
                                                                        monkeypatch):
    bad = sorted((prepared_copy / 'gallery').rglob('*.jpg'))[7]
    checked = extract.require_readable_images

    def check_then_break(paths, *args, **kwargs):
        checked(paths, *args, **kwargs)
        damage(bad, 'not_an_image')
    monkeypatch.setattr(extract, 'require_readable_images', check_then_break)
    one_line_exit('test', test_py_argv(run, prepared_copy, tmp_path / 'r.mat'), capsys,
                  f'test.py: {bad}: became unreadable during the run', 'Nothing was saved')
    assert not (tmp_path / 'r.mat').exists()


def test_a_file_that_goes_bad_in_a_loader_process_is_named_too(run, prepared_copy, tmp_path):
    """The same with --num_workers 1: the image is read in a DataLoader worker process (test.py runs in a child
    process here, see conftest.test_py_breaking)."""
    from conftest import test_py_breaking

    bad = sorted((prepared_copy / 'gallery').rglob('*.jpg'))[7]
    done = test_py_breaking(bad, test_py_argv(run, prepared_copy, tmp_path / 'r.mat', '--num_workers', '1'))
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith(f'test.py: {bad}: became unreadable during the run'), done.stderr
    assert 'Traceback' not in done.stderr and not (tmp_path / 'r.mat').exists()


def test_dataset_substitutes_the_next_readable_image(prepared_copy):
    ds = ReIDImageFolder(prepared_copy / 'train')
    damage(ds.samples[0][0], 'truncated')
    image, label = ds[0]
    assert image.size == ReIDImageFolder(prepared_copy / 'train')[1][0].size and label == ds.samples[1][1]
    assert list(ds.skipped) == [ds.samples[0][0]] and 'truncated' in ds.skipped[ds.samples[0][0]]


@pytest.fixture
def raw_copy(odd_names, tmp_path):
    """A private copy of the raw download behind `odd_names`, without its prepared folder."""
    return Path(shutil.copytree(odd_names.parent, tmp_path / 'raw copy', ignore=shutil.ignore_patterns('pytorch')))


@pytest.mark.parametrize('cli', ['prepare', 'test', 'demo'])
def test_a_name_that_does_not_follow_the_pattern(cli, run, raw_copy, prepared_copy, result_mat, tmp_path, capsys):
    src = first_image((raw_copy / 'bounding_box_test') if cli == 'prepare' else (prepared_copy / 'gallery'))
    bad = src.with_name('IMG_0001.jpg')
    src.rename(bad)
    argv = {'prepare': ['--download_path', raw_copy, '--save_path', tmp_path / 'out'],
            'test': test_py_argv(run, prepared_copy, tmp_path / 'r.mat'),
            'demo': ['--test_dir', prepared_copy, '--result', result_mat, '--output', tmp_path / 's.png']}[cli]
    # prepare.py cannot parse it; in a prepared folder it is not among the images prepare.py recorded
    one_line_exit(cli, argv, capsys, bad, 'does not match' if cli == 'prepare' else 're-run prepare.py')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('cli, split', [('train', 'train'), ('train', 'val'), ('test', 'gallery'), ('test', 'query'),
                                        ('demo', 'gallery')])
def test_an_empty_id_folder(cli, split, run, prepared_copy, result_mat, tmp_path, capsys):
    empty = prepared_copy / split / ('9999' if split != 'val' else sorted(os.listdir(prepared_copy / 'val'))[0])
    if empty.exists():  # an id of val: empty it (it still exists in train)
        shutil.rmtree(empty)
    empty.mkdir()
    argv = {'train': train_argv(prepared_copy, tmp_path / 'm', 'x'),
            'test': test_py_argv(run, prepared_copy, tmp_path / 'r.mat'),
            'demo': ['--test_dir', prepared_copy, '--result', result_mat, '--output', tmp_path / 's.png']}[cli]
    one_line_exit(cli, argv, capsys, empty, 'id folder without images')


@pytest.mark.parametrize('cli, split, extra', [('prepare', 'query', ()), ('prepare', 'bounding_box_test', ()),
                                               ('train', 'train', ()), ('train', 'train_all', ('--train_all',)),
                                               ('test', 'query', ()), ('test', 'gallery', ()),
                                               ('test', 'multi-query', ('--multi',)), ('demo', 'query', ())])
def test_a_missing_split(cli, split, extra, run, raw_copy, prepared_copy, result_mat, tmp_path, capsys):
    folder = (raw_copy if cli == 'prepare' else prepared_copy) / split
    shutil.rmtree(folder)
    argv = {'prepare': ['--download_path', raw_copy, '--save_path', tmp_path / 'out'],
            'train': train_argv(prepared_copy, tmp_path / 'm', 'x', *extra),
            'test': test_py_argv(run, prepared_copy, tmp_path / 'r.mat', *extra),
            'demo': ['--test_dir', prepared_copy, '--result', result_mat, '--output', tmp_path / 's.png']}[cli]
    one_line_exit(cli, argv, capsys, folder, 'missing' if cli == 'prepare' else 'folder not found')


def test_query_ids_absent_from_the_gallery(run, prepared_copy, tmp_path, capsys):
    """test.py saves the features and says why the metrics are undefined; evaluate_gpu.py stops with one line."""
    query_ids = set(os.listdir(prepared_copy / 'query'))
    for pid in query_ids & set(os.listdir(prepared_copy / 'gallery')):
        shutil.rmtree(prepared_copy / 'gallery' / pid)
    T.main(test_py_argv(run, prepared_copy, tmp_path / 'r.mat'))
    assert 'no query has a match in the gallery' in capsys.readouterr().out
    one_line_exit('evaluate', ['--result', tmp_path / 'r.mat'], capsys, tmp_path / 'r.mat',
                  f'none of the {len(list_reid_images(prepared_copy / "query"))} queries has a match')


@pytest.mark.parametrize('kind', ['missing', 'the wrong kind'])
@pytest.mark.parametrize('cli, flag', [('prepare', '--download_path'), ('train', '--data_dir'),
                                       ('test', '--test_dir'), ('test', '--model_dir'), ('evaluate', '--result'),
                                       ('evaluate', '--multi_result'), ('demo', '--test_dir'), ('demo', '--result')])
def test_an_input_path_that_does_not_exist_or_is_a_file(cli, flag, kind, run, odd_names, result_mat, tmp_path,
                                                       capsys):
    bad = tmp_path / 'nowhere'
    if kind == 'the wrong kind':  # a file where a folder is expected, a folder where a file is
        if flag in ('--result', '--multi_result'):
            bad.mkdir()
        else:
            bad.write_text('a file, not what the flag expects')
    argv = {'prepare': ['--download_path', odd_names.parent],
            'train': train_argv(odd_names, tmp_path / 'm', 'x'),
            'test': test_py_argv(run, odd_names, tmp_path / 'r.mat'),
            'evaluate': ['--result', result_mat, '--multi', '--multi_result', result_mat],
            'demo': ['--test_dir', odd_names, '--result', result_mat, '--output', tmp_path / 's.png']}[cli]
    argv = list(argv)
    argv[argv.index(flag) + 1] = bad
    one_line_exit(cli, argv, capsys, bad)


@pytest.mark.parametrize('where', ['under a file', 'in /proc'])
@pytest.mark.parametrize('cli, flag', [('prepare', '--save_path'), ('train', '--model_dir'), ('test', '--result'),
                                       ('demo', '--output')])
def test_an_output_path_that_cannot_be_written(cli, flag, where, run, odd_names, result_mat, tiny_market, tmp_path,
                                               capsys):
    """Run as root here, so permissions stop nothing: a path under a regular file, or in /proc, cannot be made."""
    blocker = tmp_path / 'a file'
    blocker.write_text('in the way')
    bad = (blocker / 'out' / 'x.png') if where == 'under a file' else Path('/proc/reid-no-such-dir/x.png')
    argv = {'prepare': ['--download_path', tiny_market, '--save_path', bad],
            'train': train_argv(odd_names, bad, 'x'),
            'test': test_py_argv(run, odd_names, bad),
            'demo': ['--query_index', '0', '--test_dir', odd_names, '--result', result_mat, '--output', bad]}[cli]
    before = digest(tiny_market)
    message = one_line_exit(cli, argv, capsys, flag)
    assert (str(blocker) in message) if where == 'under a file' else ('/proc/reid-no-such-dir' in message)
    assert blocker.read_text() == 'in the way' and digest(tiny_market) == before


# ----------------------------------------------------------------------------------------------------------- 2. runs

@pytest.fixture(scope='module')
def reference(tiny_prepared, tmp_path_factory):
    """An uninterrupted 2-epoch run: (run folder, history) to compare interrupted-and-resumed runs with."""
    model_dir = tmp_path_factory.mktemp('reference')
    history = trainer.run_training(recipe.build_parser().parse_args(
        train_argv(tiny_prepared, model_dir, 'ref', '--total_epoch', '2')))
    return model_dir / 'ref', history


def assert_same_as_reference(run_dir, reference):
    ref_dir, ref_history = reference
    state = runs.load_checkpoint(run_dir / 'resume.pth')
    assert state['history'] == ref_history and state['epoch'] == 2
    a, b = runs.load_checkpoint(ref_dir / 'net_last.pth'), runs.load_checkpoint(run_dir / 'net_last.pth')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


KILLED = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
import torch, train
from reid.training import trainer
marker, where = sys.argv[2], sys.argv[3]

def hold():  # tell the test where we are, then wait for kill -9
    open(marker, 'w').close()
    time.sleep(300)

if where == 'epoch':  # after the first optimizer step of epoch 2
    real_epoch = trainer.train_one_epoch
    def train_one_epoch(model, loader, *args, **kwargs):
        if not kwargs.get('desc', '').startswith('epoch 2/'):
            return real_epoch(model, loader, *args, **kwargs)
        def batches():
            for i, batch in enumerate(loader):
                if i == 1:
                    hold()
                yield batch
        return real_epoch(model, batches(), *args, **kwargs)
    trainer.train_one_epoch = train_one_epoch
else:  # half-way through writing resume.pth after epoch 1
    real_save = torch.save
    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get('epoch') == 1 and 'optimizer' in obj:
            import io
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
            f.flush()
            hold()
        return real_save(obj, f, *args, **kwargs)
    torch.save = save
train.main(sys.argv[4:])
'''


def kill_minus_nine(argv, where, tmp_path):
    """Run train.py in a subprocess, SIGKILL it at `where` ('epoch' or 'write')."""
    marker, log = tmp_path / 'reached', tmp_path / 'stderr.txt'
    with open(log, 'w') as err:
        proc = subprocess.Popen([sys.executable, '-c', KILLED, str(ROOT), str(marker), where, *map(str, argv)],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, 'the subprocess never reached the kill point'
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.precision
@pytest.mark.parametrize('where', ['epoch', 'write'])
def test_kill_9_then_resume_continues_exactly(where, reference, tiny_prepared, tmp_path, capsys):
    argv = train_argv(tiny_prepared, tmp_path / 'm', 'ref', '--total_epoch', '2')
    kill_minus_nine(argv, where, tmp_path)
    run_dir = tmp_path / 'm' / 'ref'
    state = runs.load_checkpoint(run_dir / 'resume.pth')  # whole, never half-written
    leftovers = list(run_dir.glob('*.tmp'))
    if where == 'write':
        assert state['epoch'] == 0 and [p.name.split('.')[0] for p in leftovers] == ['resume']
        runs.load_checkpoint(run_dir / 'net_last.pth')  # epoch 1's weights, complete
    else:
        assert state['epoch'] == 1 and not leftovers
    train.main(train_argv(tiny_prepared, tmp_path / 'm', 'ref', '--resume'))
    assert f'resuming {run_dir} after epoch {state["epoch"]} of 2' in capsys.readouterr().out
    assert not list(run_dir.glob('*.tmp'))  # the next save cleaned up the half-written file
    assert_same_as_reference(run_dir, reference)


@pytest.fixture
def real_ctrl_c():
    """SIGINT raises KeyboardInterrupt here, as in a terminal, whatever the process that started pytest did with it
    (a background job of a non-interactive shell, nohup and some CI runners start Python with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.precision
def test_ctrl_c_says_how_to_resume_and_the_resumed_run_is_exact(reference, tiny_prepared, tmp_path, capsys,
                                                                monkeypatch, real_ctrl_c):
    real_epoch = trainer.train_one_epoch

    def interrupted_in_epoch_2(model, loader, *args, **kwargs):
        if kwargs['desc'].startswith('epoch 2/'):
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to this process
            time.sleep(5)
        return real_epoch(model, loader, *args, **kwargs)
    monkeypatch.setattr(trainer, 'train_one_epoch', interrupted_in_epoch_2)
    argv = train_argv(tiny_prepared, tmp_path / 'm', 'ref', '--total_epoch', '2')
    one_line_exit('train', argv, capsys, 'interrupted', 'holds 1 completed epoch', 'Continue from epoch 2',
                  '--name ref', '--resume')
    monkeypatch.setattr(trainer, 'train_one_epoch', real_epoch)
    train.main(train_argv(tiny_prepared, tmp_path / 'm', 'ref', '--resume'))
    assert_same_as_reference(tmp_path / 'm' / 'ref', reference)


@pytest.mark.precision
def test_ctrl_c_in_prepare_and_test_leaves_nothing_half_done(run, raw_copy, odd_names, tmp_path, capsys,
                                                              monkeypatch, real_ctrl_c):
    before = digest(raw_copy)
    placed = []
    real_place = prepared._place

    def place_then_interrupt(src, dst, link):
        real_place(src, dst, link)
        placed.append(dst)
        if len(placed) == 20:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    monkeypatch.setattr(prepared, '_place', place_then_interrupt)
    one_line_exit('prepare', ['--download_path', raw_copy, '--save_path', tmp_path / 'out'], capsys,
                  'interrupted; nothing was changed')
    assert digest(raw_copy) == before and sorted(os.listdir(tmp_path)) == ['raw copy']

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(extract, 'extract_features', interrupted)
    one_line_exit('test', test_py_argv(run, odd_names, tmp_path / 'r.mat'), capsys, tmp_path / 'r.mat',
                  'was not written')
    assert not (tmp_path / 'r.mat').exists()


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_prepared, tmp_path, capsys, monkeypatch):
    from reid.training import terms
    argv = train_argv(tiny_prepared, tmp_path / 'm', 'x', '--total_epoch', '3')
    trainer.run_training(recipe.build_parser().parse_args(argv), stop_after=1)
    kept = digest(tmp_path / 'm' / 'x')
    real_loss = terms.cross_entropy_loss
    monkeypatch.setattr(terms, 'cross_entropy_loss', lambda *args, **kwargs: real_loss(*args, **kwargs) * np.nan)
    one_line_exit('train', train_argv(tiny_prepared, tmp_path / 'm', 'x', '--resume'), capsys,
                  'epoch 2: the training loss is nan', 'keeps the 1 good epoch', '--lr')
    assert digest(tmp_path / 'm' / 'x') == kept


@pytest.mark.precision
def test_non_finite_weights_with_a_finite_loss_stop_and_are_never_saved(tiny_prepared, tmp_path, capsys,
                                                                        monkeypatch):
    """What bf16 did at 32x16: a kernel tap that only sees padding turns NaN while the loss stays finite. The run
    stops with one line naming the tensor, and every file of the last good epoch is kept as it was."""
    argv = train_argv(tiny_prepared, tmp_path / 'm', 'x', '--total_epoch', '3')
    trainer.run_training(recipe.build_parser().parse_args(argv), stop_after=1)
    kept = digest(tmp_path / 'm' / 'x')
    real_epoch, broken = trainer.train_one_epoch, []

    def breaks_one_tap(model, *args, **kwargs):
        result = real_epoch(model, *args, **kwargs)
        name, weight = [(n, p) for n, p in model.named_parameters() if p.dim() == 4][-1]   # the last conv
        with torch.no_grad():
            weight[0, 0, 0, 0] = float('nan')
        broken.append(name)
        return result
    monkeypatch.setattr(trainer, 'train_one_epoch', breaks_one_tap)
    message = one_line_exit('train', train_argv(tiny_prepared, tmp_path / 'm', 'x', '--resume'), capsys,
                            'epoch 2: model.', 'holds NaN or infinite values', 'keeps the 1 good epoch')
    assert f'model.{broken[0]} holds' in message
    assert digest(tmp_path / 'm' / 'x') == kept


def test_a_checkpoint_with_non_finite_values_is_never_written(tmp_path):
    good = {'w': torch.ones(3), 'step': 1}
    runs.save_atomic(good, tmp_path / 'net_last.pth')
    before = (tmp_path / 'net_last.pth').read_bytes()
    for bad in ({'w': torch.tensor([1.0, float('inf')])}, {'optimizer': {'state': [torch.tensor([float('nan')])]}}):
        with pytest.raises(runs.NonFiniteValues, match='not written, (w|optimizer.state.0) holds NaN or infinite'):
            runs.save_atomic(bad, tmp_path / 'net_last.pth')
    assert (tmp_path / 'net_last.pth').read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['net_last.pth']
    runs.save_atomic({'labels': torch.tensor([1, 2]), 'w': torch.zeros(2)}, tmp_path / 'other.pth')  # ints pass


def test_resume_refuses_other_ids_another_network_and_newer_formats(run, odd_names, tmp_path, capsys):
    model_dir, name = run
    run_dir = model_dir / name
    before = digest(run_dir)
    fewer = Path(shutil.copytree(odd_names, tmp_path / 'fewer'))
    dropped = sorted(os.listdir(fewer / 'train'))[0]
    for split in ('train', 'val', 'train_all'):
        shutil.rmtree(fewer / split / dropped)
    one_line_exit('train', train_argv(fewer, model_dir, name, '--resume'), capsys, run_dir / 'resume.pth',
                  'trained on 12 ids', 'now has 11', dropped, 'original --data_dir')
    one_line_exit('train', train_argv(odd_names, model_dir, name, '--resume', '--backbone', 'resnet34'), capsys,
                  '--backbone resnet34', 'backbone=shufflenet_v2_x0_5', 'another --name')
    assert digest(run_dir) == before

    copied = copy_run(run, tmp_path / 'runs' / 'copied', 'resume.pth')
    state = runs.load_checkpoint(copied / 'resume.pth')
    state['model'] = {k: v for k, v in state['model'].items() if not k.startswith('classifier')}
    runs.save_atomic(state, copied / 'resume.pth')
    one_line_exit('train', train_argv(odd_names, tmp_path / 'runs', 'copied', '--resume'), capsys,
                  copied / 'resume.pth', 'different network')
    runs.save_atomic({**state, 'format': runs.FORMAT_VERSION + 1}, copied / 'resume.pth')
    one_line_exit('train', train_argv(odd_names, tmp_path / 'runs', 'copied', '--resume'), capsys,
                  copied / 'resume.pth', 'newer version')
    opts = (copied / 'opts.yaml').read_text()
    assert f'format_version: {runs.FORMAT_VERSION}' in opts
    (copied / 'opts.yaml').write_text(opts.replace(f'format_version: {runs.FORMAT_VERSION}', 'format_version: 99'))
    one_line_exit('train', train_argv(odd_names, tmp_path / 'runs', 'copied', '--resume'), capsys,
                  copied / 'opts.yaml', 'newer version')


def test_test_lists_the_epochs_that_exist(run, odd_names, tmp_path, capsys):
    model_dir, name = run
    one_line_exit('test', test_py_argv(run, odd_names, tmp_path / 'r.mat', '--which_epoch', '30'), capsys,
                  model_dir / name / 'net_030.pth', 'not found', '--which_epoch can be last, init')
    copy_run(run, tmp_path / 'runs' / 'empty')
    one_line_exit('test', test_py_argv((tmp_path / 'runs', 'empty'), odd_names, tmp_path / 'r.mat'), capsys,
                  'no net_*.pth in this run')


def test_test_refuses_a_checkpoint_of_another_network(run, odd_names, tmp_path, capsys):
    other = copy_run(run, tmp_path / 'runs' / 'other', 'net_last.pth')
    weights = runs.load_checkpoint(other / 'net_last.pth')
    weights['classifier.classifier.weight'] = weights['classifier.classifier.weight'][:5]
    runs.save_atomic(weights, other / 'net_last.pth')
    one_line_exit('test', test_py_argv((tmp_path / 'runs', 'other'), odd_names, tmp_path / 'r.mat'), capsys,
                  other / 'net_last.pth', 'does not fit the network', 'classifier.classifier.weight')


def fill_disk_after(nbytes):
    """A torch.save that writes `nbytes` and then fails as a full disk does."""
    def save(obj, f, *args, **kwargs):
        f.write(b'x' * nbytes)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return save


def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / 'resume.pth'
    runs.save_atomic({'epoch': 1, 'w': torch.ones(3)}, path)
    good = path.read_bytes()
    stale = tmp_path / 'resume.pth.k1ll3d.tmp'  # left by a process killed mid-write
    stale.write_bytes(b'half')
    monkeypatch.setattr(runs.torch, 'save', fill_disk_after(100))
    with pytest.raises(ValueError, match=r'resume\.pth: could not be written \(No space left on device\); '
                                         r'the previous file is unchanged'):
        runs.save_atomic({'epoch': 2, 'w': torch.zeros(3)}, path)
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ['resume.pth']


def test_train_on_a_full_disk_stops_with_one_line_and_resumes_later(tiny_prepared, tmp_path, capsys, monkeypatch):
    argv = train_argv(tiny_prepared, tmp_path / 'm', 'x', '--total_epoch', '2')
    trainer.run_training(recipe.build_parser().parse_args(argv), stop_after=1)
    kept = digest(tmp_path / 'm' / 'x')
    real_save = torch.save
    monkeypatch.setattr(torch, 'save', fill_disk_after(1000))
    one_line_exit('train', train_argv(tiny_prepared, tmp_path / 'm', 'x', '--resume'), capsys,
                  tmp_path / 'm' / 'x' / 'net_last.pth', 'No space left on device', 'previous file is unchanged')
    assert digest(tmp_path / 'm' / 'x') == kept
    monkeypatch.setattr(torch, 'save', real_save)
    train.main(train_argv(tiny_prepared, tmp_path / 'm', 'x', '--resume'))
    assert runs.load_checkpoint(tmp_path / 'm' / 'x' / 'resume.pth')['epoch'] == 2


# -------------------------------------------------------------------------------------------------------- 3. results

def write_mat(path, **changes):
    rng = np.random.default_rng(0)
    data = {'query_f': rng.standard_normal((4, 8)).astype(np.float32), 'query_label': np.array([1, 2, 3, 1]),
            'query_cam': np.array([1, 1, 2, 12]),
            'gallery_f': rng.standard_normal((9, 8)).astype(np.float32),
            'gallery_label': np.array([1, 2, 3, 1, 2, 3, 0, -1, 1]),
            'gallery_cam': np.array([2, 2, 1, 3, 3, 3, 1, 1, 12])}
    data.update(changes)
    scipy.io.savemat(path, {k: v for k, v in data.items() if v is not None})


def with_value(array, index, value):
    array = np.array(array, dtype=np.float32)
    array[index] = value
    return array


RNG = np.random.default_rng(1)
BAD_RESULTS = {
    'nan feature': (dict(query_f=with_value(RNG.standard_normal((4, 8)), (1, 3), np.nan)), 'query_f has NaN'),
    'inf feature': (dict(gallery_f=with_value(RNG.standard_normal((9, 8)), (0, 0), np.inf)),
                    'gallery_f has NaN or inf'),
    'feature sizes differ': (dict(gallery_f=RNG.standard_normal((9, 6))), 'query_f has 8 columns but gallery_f has 6'),
    'rows and labels differ': (dict(query_label=np.array([1, 2, 3])), 'query_f has shape (4, 8) but query_label has 3'),
    'missing key': (dict(gallery_cam=None), 'missing key(s) gallery_cam'),
    'empty query set': (dict(query_f=np.zeros((0, 8), np.float32), query_label=np.zeros(0, int),
                             query_cam=np.zeros(0, int)), 'query_f is empty'),
    'text labels': (dict(query_label=np.array(['a', 'b', 'c', 'd'])), 'query_label must hold integer ids'),
    'fractional labels': (dict(gallery_label=np.linspace(0, 1, 9)), 'gallery_label must hold integer ids'),
    '1-D features': (dict(query_f=np.ones(4, np.float32)), 'query_f has shape'),
}


@pytest.mark.parametrize('cli', ['evaluate', 'demo'])
@pytest.mark.parametrize('case', list(BAD_RESULTS))
def test_a_damaged_result_mat(case, cli, odd_names, tmp_path, capsys):
    changes, fragment = BAD_RESULTS[case]
    path = tmp_path / 'r.mat'
    write_mat(path, **changes)
    argv = (['--result', path] if cli == 'evaluate'
            else ['--result', path, '--test_dir', odd_names, '--output', tmp_path / 's.png'])
    one_line_exit(cli, argv, capsys, path, fragment)


@pytest.mark.parametrize('cli', ['evaluate', 'demo'])
@pytest.mark.parametrize('content', [b'', b'MATLAB 5.0 MAT-file' + bytes(200), b'\x89PNG\r\n\x1a\n' + bytes(64),
                                     'plain text\nwith lines\n'.encode()])
def test_a_file_that_is_not_a_mat(cli, content, odd_names, tmp_path, capsys):
    path = tmp_path / 'r.mat'
    path.write_bytes(content)
    argv = (['--result', path] if cli == 'evaluate'
            else ['--result', path, '--test_dir', odd_names, '--output', tmp_path / 's.png'])
    one_line_exit(cli, argv, capsys, path, 'not a readable .mat file')


def test_multi_query_mat_with_nan_or_missing_key(tmp_path, capsys):
    write_mat(tmp_path / 'r.mat')
    scipy.io.savemat(tmp_path / 'm.mat', {'mquery_f': np.full((2, 8), np.nan, np.float32),
                                          'mquery_label': [1, 2], 'mquery_cam': [1, 1]})
    argv = ['--result', tmp_path / 'r.mat', '--multi', '--multi_result', tmp_path / 'm.mat']
    one_line_exit('evaluate', argv, capsys, tmp_path / 'm.mat', 'mquery_f has NaN')
    scipy.io.savemat(tmp_path / 'm.mat', {'mquery_f': np.ones((2, 8), np.float32), 'mquery_label': [1, 2]})
    one_line_exit('evaluate', argv, capsys, tmp_path / 'm.mat', 'missing key(s) mquery_cam')


@pytest.mark.parametrize('index', [-1, 'count', 10_000])
def test_demo_query_index_out_of_range(index, odd_names, result_mat, tmp_path, capsys):
    n = len(list_reid_images(odd_names / 'query'))
    index = n if index == 'count' else index
    one_line_exit('demo', ['--query_index', index, '--test_dir', odd_names, '--result', result_mat,
                           '--output', tmp_path / 's.png'], capsys, f'--query_index {index}', f'0 to {n - 1}')
    assert not (tmp_path / 's.png').exists()


# ------------------------------------------------------------------------------------------------------- 4. security

class RunsCode:
    """Unpickling this would run a shell command that creates a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


@pytest.mark.parametrize('form', ['torch.save zip', 'raw pickle'])
def test_a_crafted_pickle_in_net_last_is_refused_without_running(form, run, odd_names, tmp_path, capsys):
    hostile = copy_run(run, tmp_path / 'runs' / 'hostile')
    marker = tmp_path / 'code ran'
    payload = {'body.conv1.weight': RunsCode(marker)}
    if form == 'raw pickle':
        (hostile / 'net_last.pth').write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, hostile / 'net_last.pth')
    one_line_exit('test', test_py_argv((tmp_path / 'runs', 'hostile'), odd_names, tmp_path / 'r.mat'), capsys,
                  hostile / 'net_last.pth', 'refused')
    torch.save(payload, hostile / 'resume.pth')
    one_line_exit('train', train_argv(odd_names, tmp_path / 'runs', 'hostile', '--resume'), capsys,
                  hostile / 'resume.pth', 'refused')
    assert not marker.exists()


def test_truncated_checkpoints_are_named(run, odd_names, tmp_path, capsys):
    cut = copy_run(run, tmp_path / 'runs' / 'cut', 'net_last.pth')
    data = (cut / 'net_last.pth').read_bytes()
    (cut / 'net_last.pth').write_bytes(data[:len(data) // 3])
    one_line_exit('test', test_py_argv((tmp_path / 'runs', 'cut'), odd_names, tmp_path / 'r.mat'), capsys,
                  cut / 'net_last.pth', 'truncated or corrupt')
    shutil.copy(run[0] / run[1] / 'resume.pth', cut / 'resume.pth')
    data = (cut / 'resume.pth').read_bytes()
    (cut / 'resume.pth').write_bytes(data[:len(data) // 2])
    one_line_exit('train', train_argv(odd_names, tmp_path / 'runs', 'cut', '--resume'), capsys,
                  cut / 'resume.pth', 'truncated or corrupt')


def test_malformed_or_hostile_opts_yaml_is_named(run, odd_names, tmp_path, capsys):
    bad = copy_run(run, tmp_path / 'runs' / 'bad')
    (bad / 'opts.yaml').write_text('name: [unclosed\n')
    one_line_exit('test', test_py_argv((tmp_path / 'runs', 'bad'), odd_names, tmp_path / 'r.mat'), capsys,
                  bad / 'opts.yaml', 'not valid YAML')
    (bad / 'opts.yaml').write_text('!!python/object/apply:os.system ["true"]\n')
    one_line_exit('test', test_py_argv((tmp_path / 'runs', 'bad'), odd_names, tmp_path / 'r.mat'), capsys,
                  bad / 'opts.yaml', 'not valid YAML')
    one_line_exit('train', train_argv(odd_names, tmp_path / 'runs', 'bad', '--resume'), capsys,
                  bad / 'opts.yaml', 'not valid YAML')


def test_code_loads_safely_and_never_uses_a_shell():
    """Every torch.load passes weights_only=True, YAML is read with safe_load only, no shell runs a command."""
    import re
    unsafe = re.compile(r'yaml\.(load|unsafe_load|full_load)\(|yaml\.(Unsafe|Full)?Loader\b|pickle\.loads?\('
                        r'|shell=True|os\.system\(|os\.popen\(|(?<![.\w])(eval|exec)\(')
    sources = sorted(ROOT.glob('*.py')) + sorted((ROOT / 'bench').glob('*.py'))
    assert len(sources) > 8
    for path in sources:
        for line in path.read_text().splitlines():
            code = line.split('#')[0]
            if 'torch.load(' in code:
                assert 'weights_only=True' in code, f'{path.name}: {line.strip()}'
            assert not unsafe.search(code), f'{path.name}: {line.strip()}'
