# The two commands a newcomer needs: `make demo` and `make test`. Each builds .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch lies on this machine's disk; on a GPU box set TORCH_SPEC to the CUDA build you want.
TORCH_SPEC ?= torch==2.13.0
DEMO_ARGS ?=
# e.g. make bench BENCH_ARGS=--quick (small sizes), or BENCH_ARGS="--only attribution.py"
BENCH_ARGS ?=

.PHONY: venv demo test test-fast bench clean browser

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $@

# Debian's chromium for the web-page test (skipped with a reason when it cannot be installed).
browser:
	@command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi wqy || { (apt-get update -qq && apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null) || echo "chromium not installed: the browser test will be skipped"; }

demo: venv
	$(VENV)/bin/liaotian demo --config configs/demo.yaml $(DEMO_ARGS)

test: venv browser
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: venv
	$(PY) -m pytest -q -m "not ray and not slow"

bench: venv
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf runs/ bench_out/
