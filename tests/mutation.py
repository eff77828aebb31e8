"""Mutators for hostile-input testing: grammar-aware (token edits of real specs) and byte-level.

Used by the property tests (through hypothesis) and by `tests/fuzz.py` (through `random`), so
both explore the same space.
"""
from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|\d+|//|.", re.S)
SEED_FILES = ("specs/resnet18.rds", "specs/cifar/highway20.rds", "specs/resnext50_32x4d.rds", "resdsl/prelude.rds")
# Tokens worth inserting: the language's punctuation and keywords, and what broke it before.
INSERTS = ("{", "}", "(", ")", ";", "\n", "x", ":", "=", "-", "//", '"', "add", "shortcut", "stage", "network",
           "#", "include", "block", "_modules", "input", "logits", "\x0c", "\u2028", "\x1b[2J", "\x00")
NUMBERS = (0, 1, 2, 3, 7, 10**9, 2**63, 10**40)


@lru_cache(maxsize=1)
def seeds() -> tuple[str, ...]:
    return tuple((ROOT / s).read_text(encoding="utf-8") for s in SEED_FILES)


def hostile_corpus() -> list[Path]:
    """Specs that once crashed, hung or leaked (tests/hostile/), and every documented mistake."""
    return sorted((ROOT / "tests" / "hostile").glob("*.rds")) + sorted((ROOT / "specs" / "bad").glob("*.rds"))


def mutate_tokens(text: str, choose) -> str:
    """Apply 1-4 token edits. `choose(kind, options)` picks: hypothesis's draw or random's choice."""
    tokens = TOKEN.findall(text) or [""]
    for _ in range(choose("count", range(1, 5))):
        i = choose("index", range(len(tokens)))
        kind = choose("kind", ("delete", "duplicate", "swap", "number", "insert", "repeat"))
        if kind == "delete" and len(tokens) > 1:
            del tokens[i]
        elif kind == "duplicate":
            tokens.insert(i, tokens[i])
        elif kind == "swap" and i + 1 < len(tokens):
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
        elif kind == "number":
            tokens[i] = str(choose("number", NUMBERS))
        elif kind == "repeat":  # deep nesting and long runs: `- - - ...`, `((((`
            tokens.insert(i, choose("insert", INSERTS) * choose("times", (10, 200, 5000)))
        else:
            tokens.insert(i, choose("insert", INSERTS))
    return "".join(tokens)


def mutate_bytes(data: bytes, rng: random.Random, other: bytes = b"") -> bytes:
    """Byte-level damage: flips, random bytes, deleted or repeated ranges, a splice of another file."""
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not data:
            data += bytes(rng.randrange(256) for _ in range(8))
        i = rng.randrange(len(data))
        kind = rng.randrange(5)
        if kind == 0:
            data[i] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 2:
            del data[i:i + rng.randint(1, 64)]
        elif kind == 3:
            data[i:i] = data[i:i + rng.randint(1, 32)] * rng.randint(2, 50)
        elif other:
            j = rng.randrange(len(other))
            data[i:] = other[j:j + rng.randint(1, 512)] + data[i:]
    return bytes(data)
