"""LSM's pair rule and scene split, against brute-force enumeration."""

import itertools

import pytest

from openlsm.data.loaders import view_tuples
from openlsm.data.loaders.common import split_scenes
from openlsm.errors import OpenLSMError


@pytest.mark.parametrize("n", [0, 1, 6, 31, 47])
def test_pair_rule_matches_brute_force(n):
    expected = {(i, j, (i + j) // 2) for i, j in itertools.permutations(range(n), 2)
                if abs(i - j) <= 30 and abs(i - j) % 5 == 0}
    got = [tuple(r) for r in view_tuples(n).tolist()]
    assert len(got) == len(set(got)) and set(got) == expected


def test_targets_lie_between_the_inputs():
    for row in view_tuples(40, views=5, max_gap=12, step=4).tolist():
        i, j, *targets = row
        lo, hi = min(i, j), max(i, j)
        assert len(targets) == 3 and all(lo <= t <= hi for t in targets)
        assert targets == sorted(targets, reverse=i > j)  # ordered from input 1 towards input 2
    two = view_tuples(10, views=2, max_gap=3, step=1)
    assert two.shape == (2 * (9 + 8 + 7), 2)
    one_way = view_tuples(10, views=3, max_gap=4, step=2, both_orders=False)
    assert (one_way[:, 0] < one_way[:, 1]).all() and len(one_way) == 8 + 6


def test_pair_rule_rejects_bad_arguments():
    with pytest.raises(OpenLSMError, match="views"):
        view_tuples(10, views=1)
    with pytest.raises(OpenLSMError, match="max_gap"):
        view_tuples(10, step=0)


def test_lsm_split_keeps_the_last_scenes_for_val():
    names = [f"scene{k:04d}_00" for k in (3, 1, 0, 2, 4)]
    assert split_scenes(names, "train", 2, "r") == ["scene0000_00", "scene0001_00", "scene0002_00"]
    assert split_scenes(names, "val", 2, "r") == ["scene0003_00", "scene0004_00"]
    assert split_scenes(names, "all", 2, "r") == sorted(names)
    assert split_scenes(names, "val", 150, "r") == sorted(names)  # fewer scenes than LSM's 150
    with pytest.raises(OpenLSMError, match="unknown split"):
        split_scenes(names, "test", 2, "r")
