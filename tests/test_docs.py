"""The documentation points at things that exist: every relative link and picture of README, docs/, the tutorial
and CHANGELOG resolves (anchors included), and every command written in them names an existing script and flags
that script's parser takes. Parsers are read from the scripts themselves, by stopping their main() at parse time."""
import argparse
import re
import shlex
from pathlib import Path

import pytest

from conftest import load_repo_module

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / 'README.md', REPO / 'CHANGELOG.md', *(REPO / 'docs').glob('*.md'),
                *(REPO / 'tutorial').glob('*.md')])
COMMAND_PAGES = [p for p in PAGES if p.name != 'CHANGELOG.md']   # the changelog quotes flags of the past
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'^```(\w*)\n(.*?)^```', re.S | re.M)
INLINE = re.compile(r'(?<!`)`([^`]+)`(?!`)')   # a span may wrap onto the next line
ENDS_COMMAND = {'&&', '||', ';', '|', '>', '>>', '2>&1', '#'}


def github_anchor(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def anchors_of(page):
    text = FENCE.sub('', page.read_text())
    return {github_anchor(m.group(1)) for m in re.finditer(r'^#+ (.+)$', text, re.M)}


def relative_links(page):
    """(target path, anchor) of every link and picture of `page` that is not a web address."""
    text = FENCE.sub('', page.read_text())
    for target in LINK.findall(text):
        if re.match(r'[a-z]+:', target):
            continue
        path, _, anchor = target.partition('#')
        yield path, anchor


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_picture_resolves(page):
    broken = []
    for path, anchor in relative_links(page):
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f'{path} (no such file)')
        elif anchor and target.suffix == '.md' and anchor not in anchors_of(target):
            broken.append(f'{path}#{anchor} (no such heading)')
    assert not broken, f'{page.relative_to(REPO)}: {broken}'


def test_readme_stays_short_and_links_every_docs_page():
    readme = (REPO / 'README.md').read_text()
    assert len(readme.splitlines()) <= 200
    linked = {(REPO / path).resolve() for path, _ in relative_links(REPO / 'README.md')}
    assert set((REPO / 'docs').glob('*.md')) <= linked
    assert readme.count('```bash') == 2, 'README has exactly two set-up commands'


class _Parsed(Exception):
    pass


_FLAGS = {}


def script_flags(path):
    """The option strings of the parser `path`'s main() builds (main stopped where it parses)."""
    if path not in _FLAGS:
        module = load_repo_module(path, 'docs_' + re.sub(r'\W', '_', path))
        seen = {}

        def stop(parser, args=None, namespace=None):
            seen['parser'] = parser
            raise _Parsed

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(argparse.ArgumentParser, 'parse_args', stop)
            with pytest.raises(_Parsed):
                module.main([])
        _FLAGS[path] = {s for a in seen['parser']._actions for s in a.option_strings}
    return _FLAGS[path]


def tokens_of(line):
    try:
        return shlex.split(line, comments=True)
    except ValueError:   # an unbalanced quote in prose: whitespace is good enough
        return line.split()


def invocations(line):
    """(script path, [flags]) of each command in one line of shell: `python X.py`, `python -m bench.X`,
    `torchrun ... X.py`, `bash X.sh`; environment assignments and placeholders are passed over."""
    words = [w.strip('[](),') for w in tokens_of(line.replace('\\\n', ' '))]
    for i, word in enumerate(words):
        if word in ('python', 'python3', 'torchrun', 'bash'):
            rest = words[i + 1:]
            end = next((k for k, w in enumerate(rest) if w in ENDS_COMMAND or w in ('python', 'python3')), len(rest))
            rest = rest[:end]
            if word == 'torchrun':
                rest = rest[next((k for k, w in enumerate(rest) if w.endswith('.py')), len(rest)):]
            elif rest[:1] == ['-m']:
                if len(rest) < 2 or not rest[1].startswith('bench.'):
                    continue   # pytest, pip, tensorboard: not ours
                rest = [rest[1].replace('.', '/') + '.py'] + rest[2:]
            if not rest or rest[0].startswith('-'):
                continue
            yield rest[0], [w.split('=')[0] for w in rest[1:] if re.match(r'--\w', w)]


def written_commands(page):
    """Every shell line of the page's code blocks (not Python ones) and inline code that runs a command."""
    text = page.read_text()
    for lang, body in FENCE.findall(text):
        if lang not in ('python', 'yaml', 'json', 'text'):   # text: a folder tree, a listing
            yield from body.replace('\\\n', ' ').splitlines()
    for span in INLINE.findall(FENCE.sub('', text)):
        span = ' '.join(span.split())
        if re.search(r'\b(python3?|torchrun|bash) ', span):
            yield span


def command_errors(page):
    errors = []
    for line in written_commands(page):
        for script, flags in invocations(line):
            if '<' in script or '…' in script or '...' in script:
                continue   # a placeholder (bench.<name>)
            if not (REPO / script).is_file():
                errors.append(f'{script}: no such script   [{line.strip()}]')
            elif script.endswith('.py'):
                unknown = sorted(set(flags) - script_flags(script))
                if unknown:
                    errors.append(f'{script}: no flag {unknown}   [{line.strip()}]')
    return errors


@pytest.mark.parametrize('page', COMMAND_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_written_command_names_an_existing_script_and_its_flags(page):
    assert not command_errors(page), f'{page.relative_to(REPO)}:\n' + '\n'.join(command_errors(page))


def test_the_scripts_table_lists_only_flags_each_script_takes():
    rows = re.findall(r'^\| `(\w+\.py)` \|[^|]*\|(.*)\|$', (REPO / 'README.md').read_text(), re.M)
    assert {script for script, _ in rows} == {'prepare.py', 'train.py', 'test.py', 'evaluate_gpu.py', 'demo.py',
                                               'export.py', 'track.py'}
    for script, cell in rows:
        flags = set(re.findall(r'(--\w[\w-]*)', cell))
        assert flags and not flags - script_flags(script), (script, sorted(flags - script_flags(script)))


def test_the_command_reader_finds_what_it_must():
    """The reader itself: a wrong flag and a missing script are found, placeholders and other programs are not."""
    assert list(invocations('python test.py --name X --nosuchflag 1 && python -m bench.backends --repeats 5')) == [
        ('test.py', ['--name', '--nosuchflag']), ('bench/backends.py', ['--repeats'])]
    assert list(invocations('torchrun --nproc_per_node 4 train.py --sync_bn')) == [('train.py', ['--sync_bn'])]
    assert list(invocations('python3 -m pytest -q tests/test_html.py -k real_browser')) == []
    assert '--nosuchflag' not in script_flags('test.py') and '--which_epoch' in script_flags('test.py')
