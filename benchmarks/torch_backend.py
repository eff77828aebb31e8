"""Speed of the PyTorch path, as ratios measured within one run (interleaved, medians).

1. `resdsl compile specs/cifar/resnet1202.rds --target torch` vs `python -c "import torch"`.
2. Import + build of the generated ResNet-1202 vs building the hand-written one (fresh processes).
3. Eager forward of the generated ResNet-50, SE-ResNet-50, VGG-16, MobileNetV2, EfficientNet-B0 and
   ConvNeXt-T vs the hand-written (torchvision- and timm-style) ones of tests/handwritten.py and
   tests/handwritten_zoo.py, the same weights in both.
4. Training steps (forward, backward, SGD) of the generated CIFAR ResNet-56 vs the hand-written
   one, batch 128 at 32x32, as images/s.

Usage: python benchmarks/torch_backend.py [--rounds N] [--json FILE] [--only forward] [--net NAME ...]
       [--threads N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def wall(cmd: list[str], cwd: Path | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def interleaved(a, b, rounds: int) -> dict:
    ta, tb = [], []
    a(), b()  # warm caches (file system, Lark's grammar cache)
    for i in range(rounds):  # each goes first in every other round: no side gains from the order
        if i % 2:
            tb.append(b())
            ta.append(a())
        else:
            ta.append(a())
            tb.append(b())
    ratios = [x / y for x, y in zip(ta, tb)]
    return {"a_median_s": statistics.median(ta), "b_median_s": statistics.median(tb),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def bench_compile(rounds: int, tmp: Path) -> dict:
    resdsl = [sys.executable, "-m", "resdsl", "compile", "specs/cifar/resnet1202.rds", "--target", "torch",
              "-o", str(tmp / "resnet1202.py")]
    return interleaved(lambda: wall(resdsl, ROOT), lambda: wall([sys.executable, "-c", "import torch"]), rounds)


BUILD = """
import sys, time
sys.path[:0] = [{tmp!r}, {tests!r}]
import torch
torch.manual_seed(0)
t0 = time.perf_counter()
{body}
print(time.perf_counter() - t0)
"""


def bench_build(rounds: int, tmp: Path) -> dict:
    subprocess.run([sys.executable, "-m", "resdsl", "compile", "specs/cifar/resnet1202.rds", "-o",
                    str(tmp / "resnet1202.py")], check=True, cwd=ROOT, capture_output=True)

    def run(body: str) -> float:
        code = BUILD.format(tmp=str(tmp), tests=str(ROOT / "tests"), body=body)
        return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                    text=True).stdout)

    return interleaved(lambda: run("import resnet1202; m = resnet1202.build()"),
                       lambda: run("from handwritten import CifarResNet; m = CifarResNet(200)"), rounds)


FORWARD = {"resnet50": "specs/resnet50.rds", "seresnet50": "specs/seresnet50.rds", "vgg16": "specs/vgg16.rds",
           "tv_mobilenet_v2": "specs/mobilenet_v2.rds", "tv_efficientnet_b0": "specs/tv_efficientnet_b0.rds",
           "tv_convnext_tiny": "specs/tv_convnext_tiny.rds"}


def bench_forward(name: str, rounds: int) -> dict:
    import torch
    from handwritten import TIMM, TORCHVISION
    from handwritten_zoo import ZOO

    import resdsl
    torch.manual_seed(0)
    theirs = {**TORCHVISION, **TIMM, **ZOO}[name]().eval()
    ours = resdsl.load(ROOT / FORWARD[name]).to_torch(seed=0).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 224, 224)

    def timed(model) -> float:
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(5):
                model(x)
            return (time.perf_counter() - t0) / 5

    return interleaved(lambda: timed(ours), lambda: timed(theirs), rounds) | {"threads": torch.get_num_threads()}


def bench_training(rounds: int) -> dict:
    import torch
    import torch.nn.functional as F
    from handwritten import CifarResNet

    import resdsl
    torch.manual_seed(0)
    theirs = CifarResNet(9).train()
    ours = resdsl.load(ROOT / "specs/cifar/resnet56.rds").to_torch(seed=0).train()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))

    def steps(model) -> float:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        t0 = time.perf_counter()
        for _ in range(2):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        return (time.perf_counter() - t0) / 2

    result = interleaved(lambda: steps(ours), lambda: steps(theirs), rounds)
    return result | {"images_per_s_generated": 128 / result["a_median_s"],
                     "images_per_s_handwritten": 128 / result["b_median_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=["forward"], help="run item 3 alone")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, all cores); 1 is "
                        "steadier where other processes share the cores")
    parser.add_argument("--net", nargs="+", choices=sorted(FORWARD), default=list(FORWARD),
                        help="the networks item 3 runs (default: all)")
    args = parser.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    forward = {f"forward_{name}_generated_vs_handwritten": bench_forward(name, args.rounds) for name in args.net}
    if args.only == "forward":
        results = {"machine": describe(), **forward}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = {
                "machine": describe(),
                "compile_resnet1202_vs_import_torch": bench_compile(args.rounds, Path(tmp)),
                "build_resnet1202_generated_vs_handwritten": bench_build(args.rounds, Path(tmp)),
                **forward,
                "training_resnet56_generated_vs_handwritten": bench_training(args.rounds),
            }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
