.PHONY: check test demo bench bench-delivery
check:  ## format, lint and type checks in one command
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy meterguard
	.venv/bin/lint-imports
test:
	./scripts/test
demo:
	./scripts/demo
bench:
	.venv/bin/python benchmarks/throughput.py
	.venv/bin/python benchmarks/decode_formats.py
bench-delivery:  ## alert -> webhook and command -> SSE latency on a real worker
	.venv/bin/python benchmarks/delivery_latency.py
