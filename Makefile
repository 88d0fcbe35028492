# The two commands README documents: `make serve` and `make test`. Both install what they need.
.PHONY: serve test setup

serve:
	@scripts/setup.sh serve
	.venv/bin/persona-steer serve $(ARGS)

test:
	@scripts/setup.sh test
	.venv/bin/python -m pytest -q -p no:cacheprovider $(ARGS)
