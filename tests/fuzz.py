"""Fuzz resdsl's command line for as long as you like: `make fuzz SECONDS=600`.

Specs: a real spec mutated token-wise (the grammar-aware mutator of the property tests) or
byte-wise, or a file of the hostile corpus (tests/hostile/, specs/bad/), through `check`,
`summary --json`, `compile --target torch`, `graph` and `fmt`.
Other files (tests/fuzz_files.py): CIFAR batches and image folders through `train`, run
directories through `train` (resume) and `plot`, weights through `compile --weights`, tuning
databases through `compile --tuned` (in a subprocess: a crash there would be TVM's, in C++),
and RESDSL_MAX_* variables through `check`; damaged byte-wise, by value, by planted pickle
payloads, or replaced by FIFOs, directories and /dev/zero links.

Each runs in this process under a time bound per input and a memory bound for the whole run.
For every input:

    exit 0, or exit 1 with `FILE:LINE:COL: error:` (or `error:` for a problem with no place in
    the spec), never exit 2, never a hang past the bound, never running out of memory, and
    never running a planted payload (its marker file must not appear).

A failing input is saved in fuzz-failures/ with the command and what went wrong; the exit
status is the number of failures (0: none). Deterministic for a given --seed.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_files import MARKER, TARGETS  # noqa: E402
from mutation import ROOT, hostile_corpus, mutate_bytes, mutate_tokens, seeds  # noqa: E402

MESSAGE = re.compile(r"^(\S+:\d+:\d+: )?error: ", re.M)
COMMANDS = (["check"], ["summary", "--json"], ["compile", "--target", "torch", "-o", "{out}/net.py"],
            ["graph", "-o", "{out}/net.dot"], ["fmt"])


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def run_one(text: bytes, argv: list[str], work: Path, per_input_s: int) -> str | None:
    """None if resdsl behaved on the spec `text`; else what went wrong."""
    spec = work / "fuzz.rds"
    spec.write_bytes(text)
    return run_argv([a.format(out=work) for a in argv] + [str(spec)], per_input_s)


def run_argv(argv: list[str], per_input_s: int) -> str | None:
    from resdsl.cli import main
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


def run_subprocess(argv: list[str], per_input_s: int) -> str | None:
    try:
        result = subprocess.run([sys.executable, "-m", "resdsl", *argv], capture_output=True, text=True,
                                timeout=per_input_s, errors="replace")
    except subprocess.TimeoutExpired:
        return f"took longer than {per_input_s} s"
    if result.returncode == 1 and not MESSAGE.search(result.stderr):
        return f"exit 1 without a located message:\n{result.stderr}"
    if result.returncode not in (0, 1):
        return f"exit {result.returncode}:\n{result.stderr[-4000:]}"
    return None


class FileCases:
    """The non-spec targets: each pristine input built once, then a damaged copy per case."""

    def __init__(self, tmp: Path) -> None:
        self.pristine, self.built = tmp / "pristine", set()

    def run(self, name: str, rng: random.Random, work: Path, per_input_s: int) -> tuple[list[str], str | None]:
        from resdsl.limits import BOUNDS, LIMITS
        target = TARGETS[name]
        if name not in self.built:
            with contextlib.redirect_stderr(io.StringIO()):
                target.build(self.pristine / name)
            self.built.add(name)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        if (self.pristine / name).exists():
            shutil.copytree(self.pristine / name, work / name, symlinks=True)
        environ = dict(os.environ)
        try:
            argv = target.case(rng, work)
            for bound in BOUNDS:  # the limits are read once per process: read them again
                LIMITS.__dict__.pop(bound, None)
            problem = (run_subprocess if target.subprocess else run_argv)(argv, per_input_s)
        finally:
            os.environ.clear()
            os.environ.update(environ)
            for bound in BOUNDS:
                LIMITS.__dict__.pop(bound, None)
        if any(work.rglob(MARKER)):
            problem = "a planted payload ran (its marker file appeared)\n" + (problem or "")
        return argv, problem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-input", type=int, default=20, help="seconds one command may take")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="address-space bound of this process")
    parser.add_argument("--out", type=Path, default=ROOT / "fuzz-failures")
    parser.add_argument("--kinds", default=",".join(["spec", *TARGETS]),
                        help=f"input kinds, comma-separated: spec,{','.join(TARGETS)}")
    args = parser.parse_args(argv)
    kinds = args.kinds.split(",")
    unknown = set(kinds) - {"spec", *TARGETS}
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    limit = int(args.memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(args.seed)
    texts = [s.encode() for s in seeds()]
    corpus = [p.read_bytes() for p in hostile_corpus()]
    failures = runs = 0
    counts: dict[str, int] = {}
    deadline = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory(prefix="resdsl-fuzz-") as tmp:
        work, files = Path(tmp), FileCases(Path(tmp))
        while time.monotonic() < deadline:
            kind = rng.choice(kinds)
            counts[kind] = counts.get(kind, 0) + 1
            if kind != "spec":
                case = work / "case"
                command, problem = files.run(kind, rng, case, args.per_input)
                runs += 1
                if problem:
                    failures += 1
                    saved = args.out / f"case{failures:03d}-{kind}"
                    shutil.rmtree(saved, ignore_errors=True)
                    args.out.mkdir(exist_ok=True)
                    shutil.copytree(case, saved, symlinks=True, ignore_dangling_symlinks=True,
                                    ignore=lambda d, names: [n for n in names
                                                             if not (Path(d) / n).is_file() and
                                                             not (Path(d) / n).is_dir()])
                    (saved / "what.txt").write_text(f"resdsl {' '.join(command)}\n{problem}\n")
                    print(f"FAIL {saved}: resdsl {' '.join(command)}: {problem.splitlines()[0]}",
                          file=sys.stderr)
                continue
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
    mix = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
    print(f"{runs} inputs ({mix}) in {args.seconds:.0f} s, {failures} failure(s)", file=sys.stderr)
    return min(failures, 100)


if __name__ == "__main__":
    sys.exit(main())
