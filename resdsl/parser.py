"""Text -> AST. Lark parses (LALR, positions propagated); a Transformer builds `ast` nodes."""
from __future__ import annotations

from functools import lru_cache

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from . import ast
from .diagnostics import ResdslError, Span
from .kinds import kind_of
from .reserved import python_private
from .resources import grammar_path

POLICIES = ("identity", "A", "B", "C", "gated")
SHORT_ATTRS = {"k": "kernel", "s": "stride", "p": "padding", "g": "groups"}

# How parse errors name the terminals the parser expected.
_TERMINAL_NAMES = {
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
    _check_depth(tree, text, filename)
    try:
        return _ToAst(text, filename).transform(tree)
    except VisitError as exc:  # errors raised inside the transformer arrive wrapped
        if isinstance(exc.orig_exc, ResdslError):
            raise exc.orig_exc from None
        raise


MAX_EXPR_DEPTH = 100
MAX_BRANCH_DEPTH = 32  # far beyond any network's (Inception's nest two deep)
_EXPR_RULES = frozenset({"add", "sub", "mul", "floordiv", "exactdiv", "neg"})


def _check_depth(tree: Tree, text: str, filename: str) -> None:
    """Refuse expressions nested deeper than MAX_EXPR_DEPTH and branches deeper than
    MAX_BRANCH_DEPTH, before anything recurses over them.

    LALR parsing keeps its own stack, but the transformer, the evaluator, the lowering and the
    emitters recurse once per level: the bounds keep every later stage far from Python's
    recursion limit, both at once included.
    """
    stack: list[tuple[Tree, int, int]] = [(tree, 0, 0)]
    while stack:
        node, depth, branches = stack.pop()
        if node.data in _EXPR_RULES:
            depth += 1
            if depth > MAX_EXPR_DEPTH:
                raise ResdslError(f"this expression nests more than {MAX_EXPR_DEPTH} levels deep",
                                  _span(node.meta, text, filename),
                                  hint="split it with `let` constants")
        elif node.data == "branch":
            branches += 1
            if branches > MAX_BRANCH_DEPTH:
                raise ResdslError(f"branches nest more than {MAX_BRANCH_DEPTH} levels deep here",
                                  _span(node.meta, text, filename),
                                  hint="write some of them side by side, each joined before the next")
        # Reversed, so that the first offender in the text is the one reported.
        stack.extend((child, depth, branches) for child in reversed(node.children) if isinstance(child, Tree))


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
    _check_depth(tree, text, filename)
    try:
        return _ToAst(text, filename).transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, ResdslError):
            raise exc.orig_exc from None
        raise


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
        found = "end of file" if exc.token.type == "$END" else _describe(exc.token)
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
    names = sorted({_TERMINAL_NAMES.get(t, _literal(t)) for t in expected if not t.startswith("__")})
    hint = f"expected {_one_of(names)}" if names else None
    return ResdslError(message, span, hint=hint)


def _describe(token: Token) -> str:
    if token.type == "_NL":
        return "end of line"
    text = str(token)
    return f"`{text}`" if len(text) <= 40 else f"`{text[:30]}…` ({len(text)} characters)"


def _literal(terminal: str) -> str:
    # Anonymous terminals for keywords are named after them (e.g. STAGE for "stage").
    return f"`{terminal.lower()}`"


def _one_of(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


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
        value = ast.Int(_number(token, self.text, self.filename, token[1:]), span)
        return ast.Keyword(SHORT_ATTRS[token[0]], value, span)

    # ---- blocks
    @v_args(meta=True)
    def layer(self, meta, children):
        label, op, *args = children
        return ast.Layer(str(label) if label is not None else None, str(op), tuple(args),
                         self._span(meta), _span(op, self.text, self.filename))

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
        _no_let(body, "a branch")
        return ast.Branch(str(label), str(source) if source is not None else None, body, self._span(meta),
                          _span(source, self.text, self.filename) if source is not None else None)

    @v_args(meta=True)
    def policy_def(self, meta, children):
        name, *params, body = children
        params = tuple(p for p in params if p is not None)
        if len(params) != 2 or any(p.default is not None for p in params):
            raise ResdslError(f"policy `{name}` must take two parameters: the output channels and the stride",
                              self._span(meta), hint=f"write `policy {name}(channels, stride) {{ ... }}`")
        _no_let(body, "a policy")
        for layer in body:
            if isinstance(layer, ast.Branch):
                raise ResdslError("a policy is a chain of layers; it cannot hold a branch", layer.span,
                                  hint="write the branch in the block, and join it there")
        return ast.PolicyDef(str(name), params, body, self._span(meta))

    @v_args(meta=True)
    def param(self, meta, children):
        self._python_name(children[0], "a parameter")
        return ast.Param(str(children[0]), children[1], self._span(meta))

    @v_args(meta=True)
    def block_def(self, meta, children):
        name, *params, body = children
        params = [p for p in params if p is not None]
        for i, param in enumerate(params):
            if any(p.name == param.name for p in params[:i]):
                raise ResdslError(f"block `{name}` has two parameters named `{param.name}`", param.span,
                                  hint="give each parameter its own name")
        taken = {p.name for p in params} | {"classes", "block_index", "num_blocks"}
        for let in (item for item in body if isinstance(item, ast.Let)):
            if let.name in taken:
                what = "a parameter of" if any(p.name == let.name for p in params) else "already a name in"
                raise ResdslError(f"`let {let.name}` would rebind `{let.name}`, {what} block `{name}`",
                                  let.span, hint="give the value a name of its own")
            taken.add(let.name)
        _lets_before_use(body)
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
    def first_arg(self, meta, children):
        return ast.Keyword(str(children[0]), children[1], self._span(meta))

    def stage_first(self, children):
        key, *args = children
        if str(key) != "first":
            raise ResdslError(f"unknown stage option `{key}(...)`", _span(key, self.text, self.filename),
                              hint="`first(name=value, ...)` gives the stage's first block other arguments")
        return ("first", tuple(a for a in args if a is not None))

    def stage_opt(self, children):
        key, value = children
        if str(key) == "stride":
            return ("stride", value)
        if str(key) == "shortcut":
            if not isinstance(value, ast.Var):
                raise ResdslError("expected a shortcut policy name", value.span,
                                  hint=f"use one of {', '.join(POLICIES)}")
            return ("shortcut", value)
        raise ResdslError(f"unknown stage option `{key}`", _span(key, self.text, self.filename),
                          hint="a stage takes `stride S` and `shortcut POLICY` after its count")

    @v_args(meta=True)
    def stage_stmt(self, meta, children):
        name, call, repeat, *options = children
        stride = shortcut = shortcut_span = None
        first: tuple = ()
        seen: set[str] = set()
        for key, value in options:
            if key in seen:
                raise ResdslError(f"stage `{name}` gives `{key}` twice", self._span(meta),
                                  hint=f"keep one `{key}` option")
            seen.add(key)
            if key == "stride":
                stride = value
            elif key == "first":
                first = value
            else:
                shortcut, shortcut_span = self._policy(value)
        return ("stage", ast.Stage(str(name), call, repeat, stride, shortcut, self._span(meta), shortcut_span,
                                   first))

    def _policy(self, token: Token | ast.Var) -> tuple[str, Span]:
        """A policy's name and where it is written; the lowering checks it is one (built in, or a
        `policy` the program defines)."""
        if isinstance(token, ast.Var):
            return token.name, token.span
        return str(token), _span(token, self.text, self.filename)

    @v_args(meta=True)
    def input_stmt(self, meta, children):
        c, h, w = (_number(children[0], self.text, self.filename, v) for v in str(children[0]).split("x"))
        return ("input", ((c, h, w), self._span(meta)))

    def classes_stmt(self, children):
        return ("classes", children[0])

    @v_args(meta=True)
    def outputs_stmt(self, meta, children):
        return (
            "outputs",
            ([(str(t), _span(t, self.text, self.filename)) for t in children], self._span(meta)),
        )

    def shortcut_stmt(self, children):
        return ("shortcut", self._policy(children[0]))

    @v_args(meta=True)
    def let_stmt(self, meta, children):
        self._python_name(children[0], "a `let`")
        return ("let", (str(children[0]), children[1], self._span(meta)))

    @v_args(meta=True)
    def stem_stmt(self, meta, children):
        _no_let(children[0], "a stem", network=True)
        return ("stem", (children[0], self._span(meta)))

    @v_args(meta=True)
    def head_stmt(self, meta, children):
        _no_let(children[0], "a head", network=True)
        return ("head", (children[0], self._span(meta)))

    @v_args(meta=True)
    def network(self, meta, children):
        net = ast.Network(str(children[0]), self._span(meta))
        seen: dict[str, Span] = {}
        for stmt in children[1:]:
            if stmt is None:
                continue
            key, value = stmt
            if key == "stage":
                net.stages.append(value)
            elif key == "let":
                net.lets.append(value)
            else:
                if key in seen:
                    raise ResdslError(f"network `{net.name}` sets `{key}` twice", net.span,
                                      hint=f"keep one `{key}` statement")
                seen[key] = net.span
                if key == "input":
                    net.input, net.input_span = value
                elif key == "shortcut":
                    net.shortcut, net.shortcut_span = value
                elif key == "outputs":
                    net.outputs, net.outputs_span = value
                elif key in ("stem", "head"):
                    setattr(net, key, value[0])
                    setattr(net, f"{key}_span", value[1])
                else:
                    setattr(net, key, value)
        return net

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


def _no_let(body: tuple, where: str, network: bool = False) -> None:
    for item in body:
        if isinstance(item, ast.Let):
            raise ResdslError(f"`let` cannot stand in {where}", item.span,
                              hint="write it in the network, before `stem`" if network
                              else "write it at the top level of the block")


def _lets_before_use(body: tuple) -> None:
    """A layer may only use a `let` written above it: the error names the later one."""
    lets = {item.name: item for item in body if isinstance(item, ast.Let)}
    seen: set[str] = set()

    def check(expr: ast.Expr) -> None:
        for var in ast.variables(expr):
            if var.name in lets and var.name not in seen:
                raise ResdslError(f"`{var.name}` is used before its `let` (line {lets[var.name].span.line})",
                                  var.span, hint=f"move `let {var.name} = ...` above its first use")

    def walk(items: tuple) -> None:
        for item in items:
            if isinstance(item, ast.Let):
                check(item.value)
                seen.add(item.name)
            elif isinstance(item, ast.Branch):
                walk(item.body)
            else:
                for arg in item.args:
                    check(arg.value)

    walk(body)
