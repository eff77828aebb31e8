"""Text -> AST. Lark parses (LALR, positions propagated); a Transformer builds `ast` nodes.

What the grammar accepts but a spec may not say (a `let` in a branch, a block's repeated
parameter) is `checks`' job, run by the loader over each file; the transformer refuses only what
it cannot build (a number too long to read, a name the generated Python cannot take)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .depth import check_depth
from .diagnostics import ResdslError, Span
from .expressions import PAIR
from .kinds import kind_of
from .name_patterns import split_pattern
from .reserved import python_private
from .resources import grammar_path
from .terminals import TERMINAL_NAMES, describe, literal, one_of

POLICIES = ("identity", "A", "B", "C", "gated", "none", "identity_or_none")
SHORT_ATTRS = {"k": "kernel", "s": "stride", "p": "padding", "g": "groups"}

@lru_cache(maxsize=1)
def _lark() -> Lark:
    # cache=True keeps the built LALR tables in the temp dir, keyed by the grammar's hash:
    # building them costs more than parsing a whole spec.
    return Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr", cache=True,
                propagate_positions=True, maybe_placeholders=True, start=["start", "expr"])


def parse(text: str, filename: str = "<string>", comments: list | None = None) -> ast.SourceFile:
    """Parse one file's text. Raises ResdslError with a located message.

    With `comments`, the comment tokens are appended to it (for the formatter).
    """
    try:
        if comments is None:
            tree = _lark().parse(text, start="start")
        else:  # a second parser whose lexer hands comments over instead of dropping them
            tree = _lark_keeping_comments(comments.append).parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    check_depth(tree, text, filename)
    try:
        return _ToAst(text, filename).transform(tree)
    except VisitError as exc:  # errors raised inside the transformer arrive wrapped
        if isinstance(exc.orig_exc, ResdslError):
            raise exc.orig_exc from None
        raise


MAX_DIGITS = 18  # far beyond any limit in resdsl.limits, far below Python's int-to-string limit


def _number(token: Token, text: str, filename: str, digits: str | None = None) -> int:
    digits = str(token) if digits is None else digits
    if len(digits) > MAX_DIGITS:
        raise ResdslError(f"a number of {len(digits)} digits is larger than resdsl allows",
                          _span(token, text, filename), hint="widths, counts and strides are small integers")
    return int(digits)


def parse_expr(text: str, filename: str) -> ast.Expr:
    """One expression on its own (a `--set NAME=EXPR` value)."""
    try:
        tree = _lark().parse(text, start="expr")
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, filename) from None
    if isinstance(tree, Token):  # a lone number or name is inlined to its token
        tree = Tree({"INT": "int", "FLOAT": "float"}.get(tree.type, "var"), [tree], meta=_TokenMeta(tree))
    check_depth(tree, text, filename)
    try:
        return _ToAst(text, filename).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, ResdslError):
            raise exc.orig_exc from None
        raise


def _pattern(token: Token, text: str, filename: str) -> ast.NamePattern:
    """`"b{i + 1}"`: the text between braces parsed as expressions, spans where they are written."""
    span = _span(token, text, filename)
    parts: list[str | ast.Expr] = []
    for part in split_pattern(str(token), span):
        if isinstance(part, str):
            parts.append(part)
            continue
        inner, move = part
        try:
            parts.append(ast.shift_spans(parse_expr(inner, filename), move))
        except ResdslError as exc:
            d = exc.diagnostic
            message = d.message.replace("unexpected end of file", "unexpected `}`")  # where the text ends
            raise ResdslError(message, move(d.span), d.hint) from None
    return ast.NamePattern(tuple(parts), span, str(token))


class _TokenMeta:
    def __init__(self, token: Token) -> None:
        self.line, self.column, self.end_line, self.end_column = (token.line, token.column, token.end_line,
                                                                  token.end_column)
        self.empty = False


def _lark_keeping_comments(sink) -> Lark:
    return Lark(grammar_path().read_text(encoding="utf-8"), parser="lalr", propagate_positions=True,
                maybe_placeholders=True, lexer_callbacks={"COMMENT": sink})


def _syntax_error(exc: UnexpectedInput, text: str, filename: str) -> ResdslError:
    line, column = max(exc.line, 1), max(exc.column, 1)
    width = 1
    if isinstance(exc, UnexpectedToken):
        found = "end of file" if exc.token.type == "$END" else describe(exc.token)
        width = max(len(str(exc.token)), 1) if exc.token.type != "_NL" else 1
        message = f"unexpected {found}"
        expected = exc.accepts or exc.expected
    elif isinstance(exc, UnexpectedCharacters):
        message = f"unexpected character {text[exc.pos_in_stream]!r}"
        expected = exc.allowed or set()
    else:  # UnexpectedEOF
        message, expected = "unexpected end of file", getattr(exc, "expected", set())
        lines = text.splitlines() or [""]
        line, column = len(lines), len(lines[-1]) + 1
    span = Span(filename, line, column, line, column + width, text)
    names = sorted({TERMINAL_NAMES.get(t, literal(t)) for t in expected if not t.startswith("__")})
    hint = f"expected {one_of(names)}" if names else None
    return ResdslError(message, span, hint=hint)


def _span(meta_or_token, text: str, filename: str) -> Span:
    return Span(filename, meta_or_token.line, meta_or_token.column,
                meta_or_token.end_line, meta_or_token.end_column, text)


def _binop(op: str):
    @v_args(meta=True)
    def build(self, meta, children):
        return ast.BinOp(op, children[0], children[1], self._span(meta))
    return build


class _ToAst(Transformer):
    def __init__(self, text: str, filename: str) -> None:
        super().__init__()
        self.text, self.filename = text, filename

    def _span(self, meta) -> Span:
        return _span(meta, self.text, self.filename)

    # ---- expressions
    @v_args(meta=True)
    def int(self, meta, children):
        return ast.Int(_number(children[0], self.text, self.filename), self._span(meta))

    @v_args(meta=True)
    def float(self, meta, children):
        text = str(children[0])
        if len(text) > 40:
            raise ResdslError(
                f"a number of {len(text)} characters is longer than resdsl reads", self._span(meta),
                hint="rates and coefficients are short decimals like 0.3 or 1e-4"
            )
        return ast.Float(float(text), self._span(meta), text)

    @v_args(meta=True)
    def var(self, meta, children):
        return ast.Var(str(children[0]), self._span(meta))

    @v_args(meta=True)
    def neg(self, meta, children):
        return ast.Neg(children[0], self._span(meta))

    add = _binop("+")
    sub = _binop("-")
    mul = _binop("*")
    floordiv = _binop("//")
    exactdiv = _binop("/")
    pair = _binop(PAIR)

    # ---- arguments
    @v_args(meta=True)
    def positional(self, meta, children):
        return ast.Positional(children[0], self._span(meta))

    @v_args(meta=True)
    def keyword(self, meta, children):
        return ast.Keyword(str(children[0]), children[1], self._span(meta))

    def short_attr(self, children):
        token = children[0]
        span = _span(token, self.text, self.filename)
        parts = [ast.Int(_number(token, self.text, self.filename, d), span) for d in token[1:].split("x")]
        value = parts[0] if len(parts) == 1 else ast.BinOp(PAIR, *parts, span)
        return ast.Keyword(SHORT_ATTRS[token[0]], value, span)

    # ---- blocks
    @v_args(meta=True)
    def layer(self, meta, children):
        label, op, *args = children
        return ast.Layer(str(label) if label is not None else None, str(op), tuple(args),
                         self._span(meta), _span(op, self.text, self.filename))

    @v_args(meta=True)
    def shortcut_join(self, meta, children):
        label, op, policy, source = children
        return self._join(meta, label, op, (), shortcut=True, policy=self._var(policy), source=self._var(source))

    @v_args(meta=True)
    def join(self, meta, children):
        label, op, *values = children
        return self._join(meta, label, op, tuple(self._var(v) for v in values))

    def _join(self, meta, label, op, operands, **kw) -> ast.Join:
        return ast.Join(str(label) if label is not None else None, str(op), operands, self._span(meta),
                        _span(op, self.text, self.filename), **kw)

    def _var(self, token: Token | None) -> ast.Var | None:
        return None if token is None else ast.Var(str(token), _span(token, self.text, self.filename))

    def body(self, children):
        return tuple(c for c in children if c is not None)

    @v_args(meta=True)
    def block_let(self, meta, children):
        self._python_name(children[0], "a `let`")
        return ast.Let(str(children[0]), children[1], self._span(meta))

    def _python_name(self, token: Token, what: str) -> None:
        """Parameters and lets become names in the generated Python: most that Python reserves are
        renamed there (`self` -> `self_`), but not these. Nor may they take a layer's name: a
        bare `relu` in an expression is that layer kind (`act = relu`)."""
        if kind_of(str(token)) is not None:
            raise ResdslError(f"`{token}` cannot name {what}: it names a layer kind",
                              _span(token, self.text, self.filename),
                              hint=f"choose another name, e.g. `{token}_`")
        if python_private(str(token)):
            raise ResdslError(f"`{token}` cannot name {what}: names starting with `__` are Python's",
                              _span(token, self.text, self.filename),
                              hint=f"choose another name, e.g. `{str(token).strip('_') or 'value'}_`")

    @v_args(meta=True)
    def branch(self, meta, children):
        label, source, body = children
        return ast.Branch(str(label) if label is not None else None, str(source) if source is not None else None, body, self._span(meta),
                          _span(source, self.text, self.filename) if source is not None else None)

    @v_args(meta=True)
    def policy_def(self, meta, children):
        name, *params, body = children
        return ast.PolicyDef(str(name), tuple(p for p in params if p is not None), body, self._span(meta))

    @v_args(meta=True)
    def param(self, meta, children):
        self._python_name(children[0], "a parameter")
        return ast.Param(str(children[0]), children[1], self._span(meta))

    @v_args(meta=True)
    def block_def(self, meta, children):
        name, *params, body = children
        return ast.BlockDef(str(name), tuple(p for p in params if p is not None), body, self._span(meta))

    @v_args(meta=True)
    def include(self, meta, children):
        return ast.Include(str(children[0])[1:-1], self._span(meta))

    # ---- networks
    @v_args(meta=True)
    def call(self, meta, children):
        name, *args = children
        return ast.Call(str(name), tuple(a for a in args if a is not None), self._span(meta))

    @v_args(meta=True)
    def partial(self, meta, children):
        name, block, *args = children
        value = ast.Partial(str(block), tuple(a for a in args if a is not None),
                            _span(block, self.text, self.filename))
        return ast.Keyword(str(name), value, self._span(meta))

    @v_args(meta=True)
    def first_arg(self, meta, children):
        return ast.Keyword(str(children[0]), children[1], self._span(meta))

    def stage_first(self, children):
        key, *args = children
        if str(key) != "first":
            raise ResdslError(f"unknown stage option `{key}(...)`", _span(key, self.text, self.filename),
                              hint="`first(name=value, ...)` gives the stage's first block other arguments")
        return _Fields("first", {"first": tuple(a for a in args if a is not None)})

    def stage_opt(self, children):
        key, value = children
        if str(key) == "stride":
            return _Fields("stride", {"stride": value})
        if str(key) == "shortcut":
            if not isinstance(value, ast.Var):
                raise ResdslError("expected a shortcut policy name", value.span,
                                  hint=f"use one of {', '.join(POLICIES)}")
            return self._shortcut(value)
        raise ResdslError(f"unknown stage option `{key}`", _span(key, self.text, self.filename),
                          hint="a stage takes `stride S` and `shortcut POLICY` after its count")

    def stage_named(self, children):
        key, token = children
        if str(key) != "named":
            raise ResdslError(f"unknown stage option `{key} \"...\"`", _span(key, self.text, self.filename),
                              hint='`named "PATTERN"` keys the stage\'s blocks, e.g. `named "b{i + 1}"`')
        return _Fields("named", {"named": _pattern(token, self.text, self.filename)})

    @v_args(meta=True)
    def stage_stmt(self, meta, children):
        name, call, repeat, *options = children
        fields = _merge(options, {"stride": None, "shortcut": None, "shortcut_span": None},
                        f"stage `{name}` gives", "option", self._span(meta))
        return ast.Stage(str(name), call, repeat, span=self._span(meta), **fields)

    def _shortcut(self, token: Token | ast.Var) -> _Fields:
        """A policy's name and where it is written; the lowering checks it is one (built in, or a
        `policy` the program defines)."""
        if isinstance(token, ast.Var):
            return _Fields("shortcut", {"shortcut": token.name, "shortcut_span": token.span})
        return _Fields("shortcut", {"shortcut": str(token), "shortcut_span": _span(token, self.text, self.filename)})

    @v_args(meta=True)
    def input_stmt(self, meta, children):
        c, h, w = (_number(children[0], self.text, self.filename, v) for v in str(children[0]).split("x"))
        return _Fields("input", {"input": (c, h, w), "input_span": self._span(meta)})

    def classes_stmt(self, children):
        return _Fields("classes", {"classes": children[0]})

    @v_args(meta=True)
    def outputs_stmt(self, meta, children):
        outputs = [(str(t), _span(t, self.text, self.filename)) for t in children]
        return _Fields("outputs", {"outputs": outputs, "outputs_span": self._span(meta)})

    def shortcut_stmt(self, children):
        return self._shortcut(children[0])

    @v_args(meta=True)
    def let_stmt(self, meta, children):
        self._python_name(children[0], "a `let`")
        return ast.Let(str(children[0]), children[1], self._span(meta))

    @v_args(meta=True)
    def stem_stmt(self, meta, children):
        return _Fields("stem", {"stem": children[0], "stem_span": self._span(meta)})

    @v_args(meta=True)
    def head_stmt(self, meta, children):
        return _Fields("head", {"head": children[0], "head_span": self._span(meta)})

    @v_args(meta=True)
    def network(self, meta, children):
        name, span = str(children[0]), self._span(meta)
        stmts = [c for c in children[1:] if c is not None]
        fields = _merge([s for s in stmts if isinstance(s, _Fields)], {}, f"network `{name}` sets", "statement",
                        span)
        stages = [s for s in stmts if isinstance(s, ast.Stage)]
        lets = [(s.name, s.value, s.span) for s in stmts if isinstance(s, ast.Let)]
        return ast.Network(name, span, stages=stages, lets=lets, **fields)

    def start(self, children):
        source = ast.SourceFile(self.filename)
        for item in children:
            if isinstance(item, ast.Include):
                source.includes.append(item)
            elif isinstance(item, ast.BlockDef):
                source.blocks.append(item)
            elif isinstance(item, ast.PolicyDef):
                source.policies.append(item)
            elif isinstance(item, ast.Network):
                source.networks.append(item)
        return source


@dataclass(frozen=True)
class _Fields:
    """What one statement sets on its `ast.Network` or `ast.Stage` (`input` sets `input` and
    `input_span`), under the keyword the spec may write once."""
    key: str
    values: dict


def _merge(statements: list[_Fields], fields: dict, who: str, what: str, span: Span) -> dict:
    """The fields `statements` set, over the defaults in `fields`; a keyword written twice is an
    error at `span`."""
    seen: set[str] = set()
    for stmt in statements:
        if stmt.key in seen:
            raise ResdslError(f"{who} `{stmt.key}` twice", span, hint=f"keep one `{stmt.key}` {what}")
        seen.add(stmt.key)
        fields.update(stmt.values)
    return fields
