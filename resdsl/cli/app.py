"""The `resdsl` group and `main`, the entry point: the one place that turns errors into exit codes.

Exit codes: 0 success, 1 a user error (located message on stderr), 2 an internal error.
"""
from __future__ import annotations

import os
import sys
import traceback

import click

from ..diagnostics import OptionError, ResdslError, printable

# How the command line spells the library's options, for OptionError's help.
FLAGS = {"layout": "--layout", "winograd": "--winograd", "wide_winograd": "--wide-winograd",
         "prepack": "--prepack", "precision": "--precision", "cpu": "--cpu", "arch": "--arch",
         "target": "--target", "rpc_tracker": "--rpc-tracker", "rpc_key": "--rpc-key"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="resdsl")
def app() -> None:
    """resdsl: compile residual-network specs (.rds) to PyTorch, ONNX and TVM."""
    from ..limits import LIMITS
    LIMITS.check_environment()  # a bad RESDSL_MAX_* is reported before any work starts


def main(argv: list[str] | None = None) -> int:
    try:
        # Outside standalone mode click returns (not raises) the code of an Exit.
        code = app.main(args=argv, prog_name="resdsl", standalone_mode=False)
        sys.stdout.flush()  # here, where a full disk or a closed pipe can still be reported
        return code if isinstance(code, int) else 0
    except OptionError as exc:
        flags = ", ".join(FLAGS.get(o, o) for o in exc.options)
        print(exc.render().rstrip() + f"\n   = note: command-line options: {flags}", file=sys.stderr)
        return 1
    except ResdslError as exc:
        from ..highlight import highlight, use_colour
        rank = os.environ.get("RANK", "0")  # under torchrun every process reports, the leader plainly
        prefix = "" if rank == "0" else f"[rank {printable(rank)}] "
        print(prefix + exc.render(highlight if use_colour(sys.stderr) else None), file=sys.stderr)
        return 1
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 1
    except click.ClickException as exc:  # bad command-line usage is a user error too
        exc.show()
        return 1
    except BrokenPipeError:
        _discard_stdout()
        return 0
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # writing stdout or stderr failed
            _discard_stdout()
            print(f"resdsl: cannot write the output: {exc.strerror}", file=sys.stderr)
            return 1
        return _internal_error()
    except Exception:  # anything else is our bug
        return _internal_error()


def _internal_error() -> int:
    traceback.print_exc()
    print("resdsl: internal error (a bug in resdsl, not in your spec); please report it "
          "with the traceback above", file=sys.stderr)
    return 2


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
