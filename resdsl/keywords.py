"""The language's keywords, read off the grammar (grammars/resdsl.lark) rather than listed again,
so that the loader's "is this a spec?" test and the highlighter cannot drift from what the parser
accepts (they once forgot `policy`)."""
from __future__ import annotations

from functools import lru_cache

from .parser import _lark

# Words the grammar reads as names and the parser gives meaning: a stage's options (`stride 2`,
# `first(...)`, `shortcut B`), kept as names there so that `conv 16 stride=2` still parses.
STAGE_OPTIONS = ("stride", "first", "shortcut")


def _word(pattern) -> str | None:
    """A terminal's text where it is a literal word (`block`), else None (`(`, a regex)."""
    value = pattern.value
    return value if pattern.type == "str" and value.isidentifier() else None


@lru_cache(maxsize=1)
def keywords() -> tuple[str, ...]:
    """Every word the grammar spells out, in the order it declares them."""
    return tuple(word for t in _lark().terminals if (word := _word(t.pattern)) is not None)


@lru_cache(maxsize=1)
def leading_keywords() -> tuple[str, ...]:
    """The words a file's first item can start with (`include`, `block`, `policy`, `network`),
    in the grammar's order: those its parser accepts before anything else."""
    accepted = _lark().parse_interactive("", start="start").accepts()
    return tuple(word for t in _lark().terminals
                 if t.name in accepted and (word := _word(t.pattern)) is not None)


def declaration_keywords() -> tuple[str, ...]:
    """The leading words that name what they define (`block NAME`, `network NAME`)."""
    return tuple(word for word in leading_keywords() if word != "include")
