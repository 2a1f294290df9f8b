# The two commands of the README. Both install what they need first (scripts/setup.sh).
PYTHON ?= python3
export PYTHON

.PHONY: setup demo demo-ceph demo-rpc test lint bench docs

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

# The same on a single-node Ceph lab: RBD load through fio's rbd engine, lab stopped after.
demo-ceph: setup
	bash scripts/demo-ceph.sh

# The RPC side: a private RabbitMQ, examples/rpc.yaml run against it, its post-mortem page.
demo-rpc: setup
	$(PYTHON) scripts/demo_rpc.py

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
