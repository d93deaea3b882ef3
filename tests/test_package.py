"""The layout a newcomer sees: the commands and the original's module names at the root, the library in reid/,
nothing run on import, `pip install -e .` importable from any folder, and the network options defined once."""
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {'prepare.py', 'train.py', 'test.py', 'evaluate_gpu.py', 'demo.py', 'export.py', 'track.py'}
ORIGINAL_NAMES = {'model.py', 'utils.py', 'random_erasing.py'}   # re-exports the original's users import


def reid_modules():
    return sorted('.'.join(p.relative_to(REPO).with_suffix('').parts).replace('.__init__', '')
                  for p in (REPO / 'reid').rglob('*.py'))


def test_the_root_holds_the_commands_and_the_original_module_names_only():
    assert {p.name for p in REPO.glob('*.py')} == COMMANDS | ORIGINAL_NAMES
    for name in ORIGINAL_NAMES:   # thin: docstring and imports from the package only
        code = [line for line in (REPO / name).read_text().splitlines()[1:] if line.strip()]
        assert all(line.startswith(('from reid.', ' ')) for line in code), name


def test_the_original_module_names_import_and_give_the_packages_objects():
    import model
    import random_erasing
    import utils
    from reid import runs, runtime
    from reid.data import transforms
    from reid.models import features, heads, original_modules

    assert model.build_model is heads.build_model and model.fuse_conv_bn is features.fuse_conv_bn
    assert model.ClassBlock is original_modules.ClassBlock and model.PCB is original_modules.PCB
    assert model.ft_net is original_modules.ft_net and model.ReIDNet is heads.ReIDNet
    assert utils.fuse_all_conv_bn is original_modules.fuse_all_conv_bn and utils.save_network is original_modules.save_network
    assert utils.load_checkpoint is runs.load_checkpoint and utils.save_atomic is runs.save_atomic
    assert utils.select_device is runtime.select_device
    assert random_erasing.random_erasing is transforms.random_erasing


def test_importing_the_package_runs_nothing(tmp_path):
    """Every module imported from an empty folder: no output, no file written; the light ones (what prepare.py
    needs) without torch."""
    light = ['reid', 'reid.spec', 'reid.data', 'reid.data.images', 'reid.data.prepared', 'reid.data.layouts']
    script = ('import importlib, sys\n'
              f'for name in {light!r}:\n    importlib.import_module(name)\n'
              "assert 'torch' not in sys.modules, 'a light module imported torch'\n"
              f'for name in {reid_modules()!r}:\n    importlib.import_module(name)\n')
    done = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '' and done.stderr == '' and list(tmp_path.iterdir()) == []


def test_pip_install_editable_makes_reid_importable_from_any_folder(tmp_path):
    """A virtual environment that sees this interpreter's packages (so nothing is downloaded but the build backend),
    `pip install -e .`, then `import reid.api` from another folder; the requirements are the pinned ones.

    `venv --system-site-packages` made from a venv's (or conda env's) python would see the base interpreter's
    packages, not this environment's: a .pth file names this interpreter's site folders instead."""
    venv, metadata = tmp_path / 'venv', REPO / 'reid_toolkit.egg-info'
    made_here = not metadata.exists()
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=120)
    python = venv / 'bin' / 'python'
    venv_site = subprocess.run([str(python), '-c', "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    ours = dict.fromkeys(p for p in site.getsitepackages() + [sysconfig.get_paths()['purelib']] if Path(p).is_dir())
    (Path(venv_site) / 'outer_environment.pth').write_text('\n'.join(ours) + '\n')
    done = subprocess.run([str(python), '-m', 'pip', 'install', '-q', '--no-deps', '-e', str(REPO)],
                          capture_output=True, text=True, timeout=300)
    if made_here:   # the editable build writes its metadata into the checkout (git ignores it)
        shutil.rmtree(metadata, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    check = ('import reid, reid.api; from importlib.metadata import requires; print(reid.__file__); '
             "print(sorted(requires('reid-toolkit')))")
    done = subprocess.run([str(python), '-c', check], cwd=elsewhere, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
    assert done.returncode == 0, done.stderr
    where, requirements = done.stdout.splitlines()
    assert Path(where) == REPO / 'reid' / '__init__.py'
    pinned = sorted(line.strip() for line in (REPO / 'requirements.txt').read_text().splitlines()
                    if line.strip() and not line.startswith('#'))
    assert eval(requirements) == pinned  # noqa: S307 -- a list of strings printed by the child above


def network_flags(parser):
    group = next(g for g in parser._action_groups if g.title == 'network')
    return {a.dest for a in group._group_actions}


def test_the_network_options_are_defined_once_and_every_command_derives_from_them():
    from conftest import load_test_cli
    from reid import spec
    from reid.training import recipe

    built = {name for name in spec.option_names() if name not in spec.BACKBONE_ALIASES
             or spec.BACKBONE_ALIASES[name][0]}
    assert network_flags(recipe.build_parser()) == built == network_flags(load_test_cli().build_parser())
    # --resume refuses a change of any of them (the recipe's check reads spec.option_names)
    assert set(spec.option_names()) >= {'backbone', 'PCB', 'stride', 'linear_num', 'droprate', 'bnneck', 'usam',
                                        'h', 'w', 'use_dense', 'use_swin'}
    with pytest.raises(ValueError, match='--use_vit'):
        spec.NetworkSpec.from_opts({'use_vit': True})


def test_the_library_logs_and_the_commands_print_what_it_logs(capsys):
    """The library only logs (logger `reid.*`): used from Python it prints nothing; inside a command's
    one_line_errors its messages are printed on stdout, one line each, as the commands always printed them."""
    said = "from reid.runtime import log_small_maps; log_small_maps(['body.conv1'])"
    alone = subprocess.run([sys.executable, '-c', said], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert alone.returncode == 0 and alone.stdout == '' and alone.stderr == ''
    from reid.cli import one_line_errors
    from reid.runtime import log_small_maps
    with one_line_errors('x.py'):
        log_small_maps(['body.conv1'])
    assert capsys.readouterr().out.startswith('bf16 autocast: 1 convolution(s) with output maps under 4 positions')
