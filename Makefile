# Two entry points the README opens with: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch first, pinned: a bare `torch` requirement can pull a multi-GB CUDA build.
TORCH := torch==2.13.0

$(VENV)/.installed: pyproject.toml
	-command -v dot >/dev/null || apt-get install -y -q graphviz || (apt-get update -q && apt-get install -y -q graphviz)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test,onnx,openvino,tvm,train]"
	touch $@

.PHONY: setup demo test test-slow bench fuzz
setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/resdsl check specs/resnet34.rds
	$(VENV)/bin/resdsl compile specs/resnet34.rds --target torch -o out/resnet34.py
	cd out && ../$(PY) -c "import torch, resnet34; m = resnet34.build(seed=0).eval(); print(m(torch.randn(1, 3, 224, 224)).shape)"

test: setup
	$(PY) -m pytest -q -m "not slow"

# The same checks on the deepest networks (ResNet-1202, Pre-ResNet-1001, ResNeXt-50 through TVM):
# minutes each, outside `make test`'s 30-minute budget on 2 cores.
test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) benchmarks/torch_backend.py
	$(VENV)/bin/resdsl bench specs/resnet18.rds
	$(VENV)/bin/resdsl bench specs/resnet50.rds

# Hostile-input fuzzing for SECONDS seconds (make fuzz SECONDS=600); failures land in fuzz-failures/.
SECONDS ?= 60
fuzz: setup
	$(PY) tests/fuzz.py --seconds $(SECONDS)
