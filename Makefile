# The two commands: `make demo` and `make test`. Each installs what it needs first (tools/bootstrap.sh).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: bootstrap demo test bench chaos lint clean

bootstrap:
	@bash tools/bootstrap.sh

demo: bootstrap
	$(BIN)/flexedge demo

test: bootstrap
	$(BIN)/python -m pytest

bench: bootstrap
	$(BIN)/python tools/bench.py

chaos: bootstrap
	$(BIN)/python tools/chaos.py

lint: bootstrap
	$(BIN)/ruff check device firmware_bridge cloud_sync tests bench tools
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
