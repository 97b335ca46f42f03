# Two commands set everything up on a fresh clone:  make demo  |  make test
PYTHON ?= python3
STAMP := .make/installed

.PHONY: demo test install clean

# Installs the CPU build of torch first (a plain `torch` requirement would pull the CUDA build), then the package.
$(STAMP): setup.py
	$(PYTHON) -m pip install -q "torch==2.13.0"
	$(PYTHON) -m pip install -q -e ".[test]"
	@mkdir -p .make && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m vlmeval_ivcp.demo --config configs/demo.yaml

test: $(STAMP)
	$(PYTHON) -m pytest

clean:
	rm -rf .make results/demo
