"""How a syntax error names what it found and what the parser expected: Lark's terminal names
as a reader knows them (`a number`, `the end of the file`)."""
from __future__ import annotations

from lark import Token

# How parse errors name the terminals the parser expected.
TERMINAL_NAMES = {
    "NAME": "a name",
    "INT": "a number",
    "FLOAT": "a number",
    "DOTTED_NAME": "a dotted name",
    "SHAPE": "a shape like 3x224x224",
    "STRING": 'a "path"',
    "SHORT_ATTR": "an attribute like k3",
    "_NL": "a new line",
    "SEMICOLON": "`;`",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "COLON": "`:`",
    "COMMA": "`,`",
    "EQUAL": "`=`",
    "BRANCH": "`branch`",
    "$END": "the end of the file",
    "MINUS": "`-`",
    "PLUS": "`+`",
    "STAR": "`*`",
    "SLASH": "`/`",
    "__ANON_0": "`//`",
}


def describe(token: Token) -> str:
    if token.type == "_NL":
        return "end of line"
    text = str(token)
    return f"`{text}`" if len(text) <= 40 else f"`{text[:30]}…` ({len(text)} characters)"


def literal(terminal: str) -> str:
    # Anonymous terminals for keywords are named after them (e.g. STAGE for "stage").
    return f"`{terminal.lower()}`"


def one_of(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]
