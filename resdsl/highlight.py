"""A Pygments lexer for .rds, registered as the `resdsl` lexer (entry point `pygments.lexers`).

Used by `resdsl show` and by error messages on colour terminals (NO_COLOR turns colour off).
"""
from __future__ import annotations

import os
import sys

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

from .keywords import STAGE_OPTIONS, declaration_keywords, keywords
from .kinds import NONE
from .ops import JOINS, user_ops
from .parser import POLICIES

# Read off the grammar and the op definitions: a new keyword or layer is highlighted without an edit here.
KEYWORDS = tuple(dict.fromkeys(keywords() + STAGE_OPTIONS))
LAYERS = tuple(user_ops()) + JOINS


class RdsLexer(RegexLexer):
    name = "resdsl"
    aliases = ["resdsl", "rds"]
    filenames = ["*.rds"]
    mimetypes = ["text/x-resdsl"]

    tokens = {
        "root": [
            (r"#.*$", Comment.Single),
            (r"\s+", Whitespace),
            (r'"[^"\n]*"', String),
            (r"\b[0-9]+x[0-9]+x[0-9]+\b", Number),
            (r"\b[ksgp][0-9]+(?:x[0-9]+)?\b", Name.Attribute),  # `k3`, `k1x7`
            (
                rf"\b({'|'.join(declaration_keywords())})(\s+)([A-Za-z_][A-Za-z0-9_]*)",
                bygroups(Keyword.Declaration, Whitespace, Name.Class),
            ),
            (
                r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)(\s*)(:)",
                bygroups(Name.Label, Whitespace, Punctuation),
            ),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(LAYERS, suffix=r"\b"), Name.Builtin),
            (words(POLICIES, prefix=r"\b", suffix=r"\b"), Name.Constant),
            (words((NONE,), prefix=r"\b", suffix=r"\b"), Keyword.Constant),  # the layer kind of no layer
            (r"([A-Za-z_][A-Za-z0-9_]*)(\s*)(=)", bygroups(Name.Attribute, Whitespace, Operator)),
            (r"[A-Za-z_][A-Za-z0-9_]*", Name),
            (r"[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+", Number.Float),
            (r"[0-9]+", Number.Integer),
            (r"//|[+\-*/=]", Operator),
            (r"[{}();,]", Punctuation),
            (r".", Text),
        ],
    }


def use_colour(stream=None) -> bool:
    stream = stream or sys.stdout
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def highlight(text: str) -> str:
    from pygments import highlight as render
    from pygments.formatters import TerminalFormatter
    return render(text, RdsLexer(), TerminalFormatter())
