"""Project tags: the checks on a tag list and Keystone's four tag filters, as tables of cases."""

from __future__ import annotations

from typing import Any

import pytest

from canopy.api.errors import ApiError
from canopy.api.identity.tags import check_tags, matches

FILTERS: list[tuple[list[str], dict[str, list[str]], bool]] = [
    (["a", "b"], {}, True),
    (["a", "b"], {"tags": ["a", "b"]}, True),
    (["a"], {"tags": ["a", "b"]}, False),
    (["a"], {"tags-any": ["b", "a"]}, True),
    (["c"], {"tags-any": ["b", "a"]}, False),
    (["a", "b"], {"not-tags": ["a", "b"]}, False),
    (["a"], {"not-tags": ["a", "b"]}, True),
    (["a"], {"not-tags-any": ["b", "a"]}, False),
    ([], {"not-tags-any": ["a"]}, True),
    (["a", "b"], {"tags": ["a"], "not-tags-any": ["b"]}, False),
]


@pytest.mark.parametrize(("tags", "wanted", "expected"), FILTERS)
def test_tag_filters(tags: list[str], wanted: dict[str, list[str]], expected: bool) -> None:
    assert matches(tags, wanted) is expected


@pytest.mark.parametrize("bad", [None, "a", [1], ["a/b"], ["a,b"], [""], ["x" * 256], ["t"] * 81])
def test_bad_tag_lists_are_400_naming_the_field(bad: Any) -> None:
    with pytest.raises(ApiError) as err:
        check_tags(bad)
    assert err.value.status == 400 and "'tags'" in str(err.value.message)


def test_good_tag_lists_keep_order_without_duplicates() -> None:
    assert check_tags(["b", "a", "b", "x" * 255]) == ["b", "a", "x" * 255]
    assert check_tags([f"t{i}" for i in range(80)])[-1] == "t79"
