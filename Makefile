.PHONY: check test demo bench
check:  ## format, lint and type checks in one command
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy meterguard detectors streams sinks
test:
	./scripts/test
demo:
	./scripts/demo
bench:
	.venv/bin/python benchmarks/throughput.py
