# lit_pretrain: `make pretrain` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# CPU machines pin this torch (a local CPU wheel here; PyPI's Linux build of it also runs on CPU).
CPU_TORCH ?= 2.13.0
DATA_DIR ?= data/python-stdlib
RUN_DIR ?= out/tiny
# The demo's training recipe: the `tiny` model trained with the modern recipe (Muon, QK-norm, ReLU², WSD),
# which beat configs/tiny.yaml's AdamW + cosine in benchmarks/recipe_efficiency.py (docs/benchmarks.md).
DEMO_CONFIG ?= configs/experiment/speedrun-cpu.yaml
# The demo trains that recipe for 1,000 steps (2.05M tokens), not the recipe's 560: on 2 cores this
# still fits the 15-minute budget and takes the validation loss to about 0.51 of the untrained one.
DEMO_STEPS ?= 1000
DEMO_ARGS ?= --trainer.max_steps $(DEMO_STEPS) --trainer.val_check_interval 250 --checkpoint.every_n_train_steps 250
PYTEST_ARGS ?=

.PHONY: help install data baseline pretrain train sample test test-slow mutate lint format clean bench-prepare bench-overhead

help:
	@echo "make pretrain   install, prepare the built-in corpus, train the tiny model ($(DEMO_CONFIG)), print a sample"
	@echo "make install    create $(VENV) and install lit_pretrain (CPU torch where there is no GPU)"
	@echo "make test       install if needed and run the fast test suite"
	@echo "make test-slow  run the tests marked slow"
	@echo "make mutate     mutation testing (mutmut) of the model, schedules, clipping, dedup, filters (slow)"
	@echo "make data       prepare the built-in python-stdlib corpus into $(DATA_DIR)"
	@echo "make lint       ruff check and format check, import layers (import-linter)"
	@echo "make bench-prepare  prepare throughput vs the bare tokenizer, DataLoader tokens/s, --tasks phases"
	@echo "make bench-overhead lit-pretrain fit step time vs a bare PyTorch loop"

install: $(STAMP)

# torchvision is pulled in by litdata (>= 0.2.45) but only used for images and video. PyPI's Linux
# torchvision wheels are CUDA builds: next to a CPU torch they break `import lightning`
# (operator torchvision::nms does not exist), so it is removed where torch has no CUDA.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "== Installing lit_pretrain into $(VENV) (a few minutes the first time)"
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "== GPU found: installing with a CUDA build of torch"; \
		$(PIP) install -q -e '.[dev]'; \
	else \
		echo "== No GPU: pinning CPU torch==$(CPU_TORCH)"; \
		echo "torch==$(CPU_TORCH)" > $(VENV)/cpu-constraints.txt; \
		$(PIP) install -q -c $(VENV)/cpu-constraints.txt -e '.[dev]'; \
	fi
	@if $(PY) -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then \
		echo "== CPU-only torch: removing torchvision (unused, and its PyPI build needs CUDA torch)"; \
		$(PIP) uninstall -y -q torchvision || true; \
	fi
	$(PY) -c "import lightning, litdata, lit_pretrain; print('== installed: lightning', lightning.__version__, 'litdata', litdata.__version__)"
	@touch $(STAMP)

data: install
	@if [ -f $(DATA_DIR)/manifest.json ]; then \
		echo "== $(DATA_DIR) is already prepared (delete it to prepare again)"; \
	else \
		$(VENV)/bin/lit-pretrain prepare --config configs/prepare/python-stdlib.yaml --output_dir $(DATA_DIR); \
	fi

# The untrained model's validation loss: the yardstick the trained one is compared with.
baseline: data
	@echo "== Validation loss of the untrained model"
	$(VENV)/bin/lit-pretrain validate --config $(DEMO_CONFIG) --data.data_dir $(DATA_DIR) \
		--trainer.default_root_dir $(RUN_DIR)/untrained --trainer.enable_progress_bar false

train: data
	$(VENV)/bin/lit-pretrain fit --config $(DEMO_CONFIG) $(DEMO_ARGS) --data.data_dir $(DATA_DIR) \
		--trainer.default_root_dir $(RUN_DIR)

sample: install
	$(VENV)/bin/lit-pretrain generate --checkpoint $(RUN_DIR)/checkpoints/last.ckpt --prompt "def main(" --max_new_tokens 120 --temperature 0.8 --top_k 50

pretrain: baseline
	@$(MAKE) --no-print-directory train sample
	@echo ""
	@echo "== Done. Checkpoints: $(RUN_DIR)/checkpoints/   TensorBoard logs: $(RUN_DIR)/tensorboard/"
	@echo "== Look at the curves with:  $(VENV)/bin/tensorboard --logdir $(RUN_DIR)/tensorboard"
	@$(VENV)/bin/lit-pretrain report $(RUN_DIR)
	@echo "== Report (plots and summary): $(RUN_DIR)/report/README.md"

# --durations: the slowest tests in every CI log, to keep the run under its 30-minute budget.
test: install
	$(PY) -m pytest --durations=15 $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow --durations=15 $(PYTEST_ARGS)

# Mutation testing with mutmut ([tool.mutmut] in pyproject.toml; docs/testing.md): mutants of the files
# listed there, each run against their fast tests. mutants/ is deleted first: mutmut keeps the verdicts
# of unchanged functions across runs even when the tests changed. MUTANTS narrows the run, e.g.
# make mutate MUTANTS='lit_pretrain.optim.*'. One torch thread per worker: mutmut runs one worker per core,
# and oversubscribed torch threads make slow mutants time out.
MUTANTS ?=
mutate: install
	rm -rf mutants
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run $(MUTANTS)
	@echo "== Surviving mutants (inspect one with: $(VENV)/bin/mutmut show NAME)"
	$(VENV)/bin/mutmut results

# Prepare throughput against the bare tokenizer, and DataLoader tokens/s (see docs/benchmarks.md).
bench-prepare: install
	$(PY) benchmarks/prepare_throughput.py --output prepare_throughput.json
	$(PY) benchmarks/task_serial_phases.py --output task_serial_phases.json

# Step time of `lit-pretrain fit` against a bare PyTorch loop on the same model and data.
bench-overhead: install
	$(PY) benchmarks/training_overhead.py --output training_overhead.json

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf out data .pytest_cache .ruff_cache
