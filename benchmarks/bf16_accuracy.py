"""How far bf16 inference is from fp32: resdsl's bf16 build and OpenVINO's bf16 precision hint,
each against its own fp32 run, over a fixed set of inputs.

Every input is a seeded standard-normal image; the weights are the spec's seeded initialisation
(`load_weights`, seed 0), as in `resdsl bench`. For each input: the largest logit error relative to
the largest fp32 logit, and whether the top-1 class is the same. An untrained network's logits lie
close together, so its top-1 flips more easily under rounding than a trained one's: the agreement
here is a lower bound.

Usage: python benchmarks/bf16_accuracy.py specs/resnet18.rds --tuned bf16-resnet18-llvm-znver5 \
           --fp32 resnet18-llvm-znver5 [--inputs 64] [--out benchmarks/results/FILE.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def tvm_runner(net, weights, work_dir):
    import tvm
    from tvm import relax

    from resdsl.tvm.build import build, relax_module
    from resdsl.tvm.lowering import Lowering
    from resdsl.tvm.target import make_target
    lowering = Lowering.resolve("llvm", work_dir=work_dir)
    executable = build(relax_module(net.graph, weights, 1, lowering), make_target("llvm"), work_dir, lowering)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return lambda x: vm["main"](tvm.runtime.tensor(x)).numpy()


def openvino_runner(net, weights, precision: str):
    import openvino as ov

    from resdsl.backends.onnx_export import to_onnx
    core = ov.Core()
    model = core.read_model(model=to_onnx(net.graph, weights).SerializeToString(), weights=b"")
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0].copy()


def compare(reference, candidate, inputs) -> dict:
    errors, same = [], 0
    for x in inputs:
        want, got = reference(x), candidate(x)
        errors.append(float(np.abs(got - want).max() / np.abs(want).max()))
        same += int(want.argmax() == got.argmax())
    return {"max_rel_err": max(errors), "median_rel_err": float(np.median(errors)),
            "top1_agreement": same / len(inputs), "inputs": len(inputs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--tuned", required=True, help="the bf16 work directory or shipped database")
    parser.add_argument("--fp32", required=True, help="the fp32 work directory or shipped database")
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from resdsl.backends.weights import load_weights
    from resdsl.ir import INPUT
    from resdsl.network import load
    from resdsl.tvm.target import host_cpu
    from resdsl.tvm_compile import work_dir
    net = load(args.spec)
    weights = load_weights(net.graph, None, 0)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, *net.graph.shape(INPUT)), dtype=np.float32) for _ in range(args.inputs)]
    result = {
        "network": net.name, "cpu": host_cpu(), "weights": "seeded initialisation (seed 0)",
        "inputs": f"{args.inputs} standard-normal images, numpy seed 0",
        "resdsl_bf16_vs_fp32": compare(tvm_runner(net, weights, work_dir(args.fp32, "--fp32")),
                                       tvm_runner(net, weights, work_dir(args.tuned, "--tuned")), inputs),
        "openvino_bf16_vs_f32": compare(openvino_runner(net, weights, "f32"),
                                        openvino_runner(net, weights, "bf16"), inputs),
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
