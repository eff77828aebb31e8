"""What several commands share: the SPEC argument with --set, loading it (extras checked first),
and the weight, TVM and output options."""
from __future__ import annotations

from pathlib import Path

import click

from ..diagnostics import ResdslError


def _parse_sets(ctx, param, values: tuple[str, ...]) -> dict[str, str]:
    sets: dict[str, str] = {}
    for item in values:
        name, eq, value = item.partition("=")
        if not eq or not name.strip().isidentifier() or not value.strip():
            raise click.BadParameter(f"expected NAME=EXPR, got {item!r}", param_hint="--set")
        sets[name.strip()] = value.strip()
    ctx.meta["resdsl.sets"] = sets
    return sets


def _resolve_spec(ctx, param, value: Path) -> Path:
    from ..zoo import resolve
    return resolve(value)


def spec_argument(f):
    """The spec (a file, or a bundled model's name: `resdsl list`), and `--set NAME=EXPR` to replace
    its `let` constants (read by `load`)."""
    f = click.option(
        "--set",
        "sets",
        multiple=True,
        callback=_parse_sets,
        expose_value=False,
        metavar="NAME=EXPR",
        help="replace the network's `let NAME` with EXPR (repeatable), e.g. --set n=18; "
             "`classes=N` and `input=CxHxW` (or `HxW`, keeping the channels) replace the header",
    )(f)
    return click.argument("spec", type=click.Path(path_type=Path), callback=_resolve_spec)(f)


def load(spec: Path, until: str | None = None):
    from ..network import load
    ctx = click.get_current_context()
    require_extras(ctx.command.name, ctx.params)
    return load(spec, ctx.meta.get("resdsl.sets"), until=until)


def require_extras(command: str, params: dict) -> None:
    """Every spec command loads through `load` first: a missing optional part is named there with
    its `pip install 'resdsl[...]'` line, before an import of it could end in a traceback."""
    from .. import targets
    from ..extras import require
    target = params.get("target")
    if command == "compile" and targets.get(target).extra:
        require(targets.get(target).extra, purpose=f"compile --target {target}")
    elif command == "tune":
        require("tvm", purpose="resdsl tune")
    elif command == "bench":
        engines = {e.strip() for e in params.get("engines", "").split(",")}
        rows = "leave its row out with --engines"
        require("torch", purpose="resdsl bench")
        for t in targets.TARGETS.values():  # torch is required above: each extra's other modules
            if t.extra and engines & set(t.engines):
                what = f"{t.engines[0]} engine{'s' if len(t.engines) > 1 else ''}"
                require(t.extra, purpose=f"bench's {what} ({rows})")
    elif command == "train":
        data = params.get("data", "")
        require("train", "torch", purpose="resdsl train")
        if data == "digits":
            require("train", "sklearn", purpose="the digits dataset (from scikit-learn)")
        elif data.startswith("folder:"):
            require("train", "PIL", purpose="reading images (with Pillow)")


follow_option = click.option("--follow-symlinks", is_flag=True,
                             help="if an output is a symbolic link, write the file it points to "
                                  "(default: refuse)")


def weight_options(f):
    f = click.option("--weights", type=click.Path(path_type=Path),
                     help="a state_dict saved from the generated torch module, checked against the spec "
                          "(every key and shape; finite real floats) before anything is written (default: "
                          "seeded init); --target torch checks it only, as its source holds no weights")(f)
    f = click.option("--seed", type=int, default=0, show_default=True,
                     help="seed of the random init (not with --weights)")(f)
    return f


def checked_weights(net, weights: Path | None, seed: int) -> dict:
    """The weights every target runs: FILE checked against the network, or the seeded init.
    A --seed beside --weights would be ignored, so it is refused rather than silently dropped."""
    from click.core import ParameterSource
    if weights is not None and click.get_current_context().get_parameter_source("seed") \
            is ParameterSource.COMMANDLINE:
        raise ResdslError("--seed and --weights both set the weights",
                          hint="give --weights FILE for trained weights, or --seed N for a seeded init")
    from ..extras import require
    require("torch", purpose="reading or initialising weights")
    from ..backends.weights import load_weights
    return load_weights(net.graph, weights, seed)


def tvm_options(f):
    f = click.option("--batch", type=click.IntRange(1, 4096),
                     help="batch size to specialise the TVM build to (default: any batch untuned; with "
                          "--tuned, the batch its records were tuned at)")(f)
    f = click.option("--cpu", help="LLVM CPU name for --target llvm (default: this host's)")(f)
    f = click.option("--arch", default="sm_90", show_default=True, help="CUDA architecture")(f)
    f = click.option("--layout", type=click.Choice(["nchw", "nhwc"], case_sensitive=False),
                     help="activation layout inside the TVM build (default: nhwc for llvm, nchw for cuda, "
                          "or what the --tuned/--work-dir records were tuned with)")(f)
    f = click.option("--winograd/--no-winograd", default=None,
                     help="3x3 stride-1 convs of up to 128x128 channels as Winograd F(4x4,3x3) (llvm only; "
                          "needs nhwc; default on for llvm, or what the --tuned/--work-dir records were "
                          "tuned with)")(f)
    f = click.option("--wide-winograd/--no-wide-winograd", default=None,
                     help="with --winograd, 3x3 convs of up to 256x256 channels too, as Winograd F(2x2,3x3) "
                          "(default: off, or what the --tuned/--work-dir records were tuned with)")(f)
    f = click.option("--prepack/--no-prepack", default=None,
                     help="store each tuned kernel's weights in the order it reads them (llvm only; "
                          "default on for llvm, or what the --tuned/--work-dir records were tuned with)")(f)
    f = click.option("--precision", type=click.Choice(["fp32", "bf16"], case_sensitive=False),
                     help="bf16: the direct convs multiply bf16 weights and activations into fp32 sums, on "
                          "CPUs with AVX512-BF16 (llvm, nhwc; default fp32, or what the --tuned/--work-dir "
                          "records were tuned with)")(f)
    return f
