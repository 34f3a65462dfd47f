# The two commands in the README: `make demo` and `make test`. Both run `setup` first.
.PHONY: setup demo test test-unit test-integration lint clean

setup:
	@scripts/bootstrap.sh

demo: setup
	.venv/bin/mlops demo

lint: setup
	.venv/bin/ruff check mlops tests bench
	.venv/bin/mypy

test-unit: setup
	.venv/bin/pytest -m "not integration" -q

test-integration: setup
	.venv/bin/pytest -m integration -q

# One pytest run so that CI reads a single closing line; lint first because it is fastest to fail.
test: lint
	.venv/bin/pytest -q --durations=15

clean:
	-.venv/bin/mlops services down
	rm -rf .mlops
