"""The mutation list stays runnable as the code moves: each mutation's line is in its file exactly once, the
tests it names exist, and no two mutations share a name (a stale entry would report BROKEN, not CAUGHT)."""
from collections import Counter

from conftest import load_repo_module

mutations = load_repo_module('tests/mutations.py', 'reid_mutation_list')


def test_every_mutation_applies_to_the_current_tree_exactly_once():
    stale = [m.name for m in mutations.MUTATIONS if (mutations.REPO / m.file).read_text().count(m.old) != 1]
    assert not stale, f'the line to mutate is not in its file exactly once: {stale}'


def test_every_named_test_exists_and_names_are_unique():
    missing = []
    for m in mutations.MUTATIONS:
        for target in m.tests:
            path, _, name = target.partition('::')
            text = (mutations.REPO / path).read_text() if (mutations.REPO / path).is_file() else ''
            if not text or (name and f'def {name.split("[")[0]}(' not in text):
                missing.append(f'{m.name}: {target}')
    assert not missing
    assert [n for n, k in Counter(m.name for m in mutations.MUTATIONS).items() if k > 1] == []
