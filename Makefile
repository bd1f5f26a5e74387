# The two commands: `make demo` and `make test`. Both create .venv on first use and are
# idempotent after (the install is redone only when pyproject.toml changes).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.netadv-installed
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# torch/torchvision are pinned here and in pyproject.toml (installed first so pip resolves
# against the local wheels instead of fetching another build).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install data lint clean study study-smoke

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

data: $(FASHION)

$(FASHION):
	@if [ -n "$$NETADV_DATA" ] && [ -d "$$NETADV_DATA/FashionMNIST/raw" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)); \
	else \
	  echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', or set" \
	       "NETADV_DATA to a folder holding FashionMNIST/raw/*-ubyte" >&2; exit 1; \
	fi

demo: $(STAMP) data
	$(PY) -m netadv demo

test: $(STAMP)
	$(PY) -m pytest

# The reproduction study (hours on 2 cores; finished runs are reused) and its toy-size version.
study: $(STAMP) data
	$(PY) -m netadv study --spec configs/study.yaml

study-smoke: $(STAMP)
	$(PY) -m netadv study --spec configs/study.yaml --smoke --runs-dir runs/study-smoke \
	  --report-dir runs/study-smoke/results

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) .pytest_cache
