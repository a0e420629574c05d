"""
The user documentation in docs/ names everything users can set: every annotation the contract
defines is in docs/annotations.md, and its table of settable ones is exactly the contract's.
"""

from __future__ import annotations

import re
from pathlib import Path

from statecar_contract import annotations as ann
from statecar_contract import env

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _annotation_names() -> set[str]:
    return {
        value
        for name, value in vars(ann).items()
        if name.isupper()
        and isinstance(value, str)
        and value.startswith(ann.PREFIX)
        and value != ann.PREFIX
    }


def test_every_annotation_is_documented() -> None:
    text = (DOCS / "annotations.md").read_text()
    documented = set(re.findall(r"`(statecar\.io/[a-z-]+)`", text))
    assert _annotation_names() - documented == set()
    assert _annotation_names() >= ann.USER_ANNOTATIONS


def test_the_annotation_table_lists_exactly_what_users_may_set() -> None:
    text = (DOCS / "annotations.md").read_text()
    section = text.split("## Annotations you set", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `(statecar\.io/[a-z-]+)` \|", section, re.MULTILINE))
    assert rows == ann.USER_ANNOTATIONS


def test_the_env_allow_list_is_documented_exactly() -> None:
    text = (DOCS / "annotations.md").read_text()
    section = text.split("### What `statecar.io/env` may set", 1)[1].split("\n#", 1)[0]
    rows = set(re.findall(r"^\| `([A-Z_]+)` \|", section, re.MULTILINE))
    assert rows == env.USER_SETTABLE
