"""Fuzz resdsl's command line for as long as you like: `make fuzz SECONDS=600`.

Each input is a real spec mutated token-wise (the grammar-aware mutator of the property tests)
or byte-wise, or a file of the hostile corpus (tests/hostile/, specs/bad/). It goes through
`check`, `summary --json`, `compile --target torch`, `graph` and `fmt`, in this process, under a
time bound per input and a memory bound for the whole run. For every input:

    exit 0, or exit 1 with `FILE:LINE:COL: error:` (or `error:` for a problem with no place in
    the spec), never exit 2, never a hang past the bound, never running out of memory.

A failing input is saved in fuzz-failures/ with the command and what went wrong; the exit
status is the number of failures (0: none). Deterministic for a given --seed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import random
import re
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation import ROOT, hostile_corpus, mutate_bytes, mutate_tokens, seeds  # noqa: E402

MESSAGE = re.compile(r"^(\S+:\d+:\d+: )?error: ", re.M)
COMMANDS = (["check"], ["summary", "--json"], ["compile", "--target", "torch", "-o", "{out}/net.py"],
            ["graph", "-o", "{out}/net.dot"], ["fmt"])


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def run_one(text: bytes, argv: list[str], work: Path, per_input_s: int) -> str | None:
    """None if resdsl behaved; else what went wrong."""
    from resdsl.cli import main
    spec = work / "fuzz.rds"
    spec.write_bytes(text)
    argv = [a.format(out=work) for a in argv] + [str(spec)]
    err = io.StringIO()
    signal.alarm(per_input_s)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except Hang:
        return f"took longer than {per_input_s} s"
    except MemoryError:
        return "ran out of memory"
    finally:
        signal.alarm(0)
    message = err.getvalue()
    if code == 1 and not MESSAGE.search(message):
        return f"exit 1 without a located message:\n{message}"
    if code not in (0, 1):
        return f"exit {code}:\n{message}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-input", type=int, default=20, help="seconds one command may take")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address-space bound of this process")
    parser.add_argument("--out", type=Path, default=ROOT / "fuzz-failures")
    args = parser.parse_args(argv)
    limit = int(args.memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(args.seed)
    texts = [s.encode() for s in seeds()]
    corpus = [p.read_bytes() for p in hostile_corpus()]
    failures = runs = 0
    deadline = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory(prefix="resdsl-fuzz-") as tmp:
        work = Path(tmp)
        while time.monotonic() < deadline:
            how = rng.randrange(3)
            if how == 0:
                text = mutate_tokens(rng.choice(seeds()), lambda kind, options: rng.choice(list(options))).encode()
            elif how == 1:
                text = mutate_bytes(rng.choice(texts + corpus), rng, rng.choice(texts + corpus))
            else:
                text = rng.choice(corpus)
            command = list(rng.choice(COMMANDS))
            problem = run_one(text, command, work, args.per_input)
            runs += 1
            if problem:
                failures += 1
                args.out.mkdir(exist_ok=True)
                case = args.out / f"case{failures:03d}"
                case.with_suffix(".rds").write_bytes(text)
                case.with_suffix(".txt").write_text(f"resdsl {' '.join(command)} FILE\n{problem}\n")
                print(f"FAIL {case}.rds: resdsl {' '.join(command)}: {problem.splitlines()[0]}", file=sys.stderr)
    print(f"{runs} inputs in {args.seconds:.0f} s, {failures} failure(s)", file=sys.stderr)
    return min(failures, 100)


if __name__ == "__main__":
    sys.exit(main())
