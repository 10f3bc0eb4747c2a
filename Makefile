# Vitrine: `make demo` runs the shop, `make test` runs the suite. Both set up .venv first.
.PHONY: demo test lint venv clean-venv-link

venv:
	@bash scripts/venv.sh

demo: venv
	@bash scripts/demo.sh

test: venv
	@bash scripts/test.sh $(ARGS)

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
