"""The compile targets: one entry per target, naming everything the command line needs of it.

An entry names its functions as "module:function" strings, resolved when a command uses them
(as entry points are): `resdsl --help`, `check` or `compile --target torch` never import ONNX or
TVM, and this module imports no backend. A new backend is its own module plus one entry here:

    compile   (job) -> Output: the file's bytes or text, or a function that writes it
    check     (graph): refuses, located, every op the backend cannot lower, before weights are read
    validate  (job): refuses the job's options before anything heavy runs
    bench     (net, weights, x, threads, tuned, cpu) -> {engine: prepare}, the rows `bench` times

Beside them: the default output suffix and the output names that ask for the target, the extra
it needs, whether its output carries the weights, the `compile` options only it takes (refused
for the others), and whether `tune` searches its kernels. A backend with options of its own
also declares them on `resdsl compile` (resdsl/cli/compile.py).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .diagnostics import ResdslError, printable


@dataclass(frozen=True)
class Target:
    name: str
    suffix: str  # of the default output, NETWORK{suffix}: `.llvm.so` never shadows `import NETWORK`
    writes: str  # what kind of file, for messages
    compile: str
    check: str | None = None
    validate: str | None = None
    # Output names ending in one of these ask for this target when --target is not given.
    names: tuple[str, ...] = ()
    extra: str | None = None  # the optional part (`resdsl[extra]`) compiling for it needs
    weights: bool = True  # the output carries the weights; False: source the user loads them into
    options: tuple[str, ...] = ()  # `compile` options (parameter names) only this target takes
    engines: tuple[str, ...] = ()  # `bench` rows, made by `bench`
    bench: str | None = None
    tunable: bool = False  # `resdsl tune` searches its kernels' schedules (MetaSchedule)

    @property
    def file_suffix(self) -> str:
        """The suffix the operating system sees (`.so` of `.llvm.so`)."""
        return Path(self.suffix).suffix or self.suffix

    def function(self, role: str) -> Callable[..., Any] | None:
        """The entry's `role` function ("compile", "check", ...), imported now; None if it has none."""
        where = getattr(self, role)
        if where is None:
            return None
        module, _, name = where.partition(":")
        return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Job:
    """One `compile`: what a target's functions are given."""
    target: str
    spec: Path  # as given on the command line (a bundled model resolved to its file)
    net: Any  # resdsl.network.Network
    options: dict  # the command's options by parameter name: opset, batch, cpu, tuned, ...
    say: Callable[[str], None]  # a line for the user (stderr), verbatim
    write: Callable[[Path, str | bytes], None]  # atomically, refusing what `output.destination` refuses
    weights: dict | None = None  # checked state_dict arrays; None for a target without weights
    sets: dict | None = None  # the --set overrides, recorded in outputs that keep their provenance


@dataclass(frozen=True)
class Output:
    data: str | bytes | Callable[[Path], None]  # a function: it writes the file itself (a TVM library)
    summary: str  # after "wrote FILE": what it holds


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("torch", ".py", "Python source", compile="resdsl.targets:compile_torch",
           check="resdsl.backends.torch_codegen:check", names=(".py",), weights=False,
           engines=("torch", "torch.compile"), bench="resdsl.bench:torch_engines"),
    Target("onnx", ".onnx", "an ONNX model", compile="resdsl.targets:compile_onnx",
           check="resdsl.backends.onnx_export:check", validate="resdsl.targets:validate_onnx",
           names=(".onnx",), extra="onnx", options=("opset",),
           engines=("onnxruntime", "openvino", "openvino-bf16"),
           bench="resdsl.bench:onnx_engines"),
    Target("llvm", ".llvm.so", "a shared library", compile="resdsl.tvm_compile:compile_library",
           check="resdsl.tvm.relax_frontend:check", names=(".llvm.so", ".so"), extra="tvm",
           options=("untuned",), engines=("tvm", "tvm-tuned"), bench="resdsl.tvm.engine:tvm_engines",
           tunable=True),
    Target("cuda", ".cuda.so", "a shared library", compile="resdsl.tvm_compile:compile_library",
           check="resdsl.tvm.relax_frontend:check", names=(".cuda.so",), extra="tvm", options=("untuned",),
           tunable=True),
)}


def get(name: str) -> Target:
    return TARGETS[name]


def engines() -> tuple[str, ...]:
    """Every `bench` row, in the targets' order."""
    return tuple(engine for t in TARGETS.values() for engine in t.engines)


def for_engine(engine: str) -> Target:
    return next(t for t in TARGETS.values() if engine in t.engines)


def _named() -> list[tuple[str, str]]:
    """(output-name ending, target), most dotted first: `x.llvm.so` is llvm's before `.so` is tried."""
    return sorted(((s, t.name) for t in TARGETS.values() for s in t.names), key=lambda st: -st[0].count("."))


def default_name(network: str, target: str) -> Path:
    return Path(f"{network}{TARGETS[target].suffix}")


def target_for(output: str | Path | None, target: str | None) -> str:
    """--target as given; else the one `-o`'s suffix names; else (no -o, or stdout) torch.
    A given target whose kind of file the name contradicts is refused by `compile`; here only
    the names it cannot tell by kind (.llvm.so against cuda: both shared libraries)."""
    name = None if output is None or str(output) == "-" else Path(output).name.lower()
    named = next((t for suffix, t in _named() if name and name.endswith(suffix)), None)
    if target is None:
        if name is None:
            return "torch"
        if named is None and (Path(output).is_dir() or Path(output).is_char_device()):
            return "torch"  # /dev/null, a directory: `output.destination` says why it is refused
        if named is None:
            known = ", ".join(f"{s} ({t})" for s, t in _named())
            raise ResdslError(f"-o {printable(Path(output).name)}: cannot tell the target from its suffix",
                              hint=f"pass --target {'|'.join(TARGETS)}, or name the output "
                                   f"with one of {known}")
        return named
    if named not in (None, target) and TARGETS[named].file_suffix == TARGETS[target].file_suffix \
            and name.endswith(TARGETS[named].suffix):
        stem = Path(output).name[:-len(TARGETS[named].suffix)]
        shown = printable(Path(output).name)
        raise ResdslError(f"-o {shown} names a {named} library, but --target is {target}",
                          hint=f"pass --target {named}, or name the output "
                               f"{printable(stem)}{TARGETS[target].suffix}")
    return target


def check(target: str, graph) -> None:
    """The target's backend refuses every op it cannot lower, before anything else runs."""
    fn = TARGETS[target].function("check")
    if fn is not None:
        fn(graph)


def compile_torch(job: Job) -> Output:
    from .backends.torch_codegen import generate
    net = job.net
    return Output(generate(net.graph, source_name=job.spec.name), f"{net.name}, {net.params:,} params")


def validate_onnx(job: Job) -> None:
    from .backends.onnx_export import check_opset
    check_opset(job.options["opset"])  # an opset out of range is refused before the weights are read


def compile_onnx(job: Job) -> Output:
    from .backends.onnx_export import spec_metadata, to_onnx
    net, opset = job.net, job.options["opset"]
    meta = spec_metadata(net.files[0] if net.files else job.spec, includes=net.files[1:], overrides=job.sets)
    model = to_onnx(net.graph, job.weights, opset=opset, metadata=meta)
    return Output(model.SerializeToString(), f"ONNX opset {opset}, {net.name}")
