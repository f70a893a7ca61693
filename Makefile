# The two commands: `make demo` and `make test`. Each installs what it needs first (tools/bootstrap.sh).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: bootstrap demo test test-train bench chaos lint clean

bootstrap:
	@bash tools/bootstrap.sh

demo: bootstrap
	$(BIN)/flexedge demo

test: bootstrap
	$(BIN)/python -m pytest

# The tests marked `train` (TensorFlow retraining), which `make test` deselects; installs the train extra first.
test-train:
	@bash tools/bootstrap.sh train
	$(BIN)/python -m pytest -m train

bench: bootstrap
	$(BIN)/python tools/bench.py

chaos: bootstrap
	$(BIN)/python tools/chaos.py

lint: bootstrap
	$(BIN)/ruff check device firmware_bridge cloud_sync tests bench tools
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
