# The two commands README documents: `make serve` and `make test`. Both install what they need,
# exactly the versions locked in requirements/ (see docs/install.md).
.PHONY: serve test test-fast lock upgrade-check

serve:
	@scripts/setup.sh serve
	.venv/bin/persona-steer serve $(ARGS)

test:
	@scripts/setup.sh test
	.venv/bin/python -m pytest -q -p no:cacheprovider $(ARGS)

# The fast tier for a development loop: every test that needs no vLLM engine (docs/testing.md).
test-fast:
	@scripts/setup.sh test
	.venv/bin/python -m pytest -q -p no:cacheprovider -m "not engine" $(ARGS)

# Re-resolve requirements/*.txt after a change to pyproject.toml (UPGRADE=1: newest allowed).
lock:
	@UPGRADE=$(UPGRADE) scripts/lock.sh

# Not part of `make test`: would the newest allowed releases still pass? Changes nothing.
upgrade-check:
	@python3 scripts/upgrade_check.py $(ARGS)
