# The two commands of the README. Both install what they need first (scripts/setup.sh).
PYTHON ?= python3
export PYTHON

.PHONY: setup demo test lint bench docs

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .

docs:
	$(PYTHON) scripts/gendocs.py

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(PYTHON) $$b | tail -n 1; done
