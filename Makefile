# The two commands README documents: `make serve` and `make test`. Both install what they need.
.PHONY: serve test setup

serve:
	@scripts/setup.sh serve
	.venv/bin/persona-steer serve $(ARGS)

test:
	@scripts/setup.sh test
	.venv/bin/python -m pytest -q -p no:cacheprovider $(ARGS)

# The fast tier for a development loop: every test that needs no vLLM engine (docs/testing.md).
.PHONY: test-fast
test-fast:
	@scripts/setup.sh test
	.venv/bin/python -m pytest -q -p no:cacheprovider -m "not engine" $(ARGS)
