# Two commands matter: `make run` and `make test` (see README.md). Every target bootstraps .venv.
SHELL := /bin/bash
PORT ?= 8000
BIN := .venv/bin
STAMP := .venv/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
PYTEST_ARGS ?=

.PHONY: run test install lint test-sqlite test-postgres test-suites fmt lock clean

$(STAMP): requirements.lock pyproject.toml deploy/bootstrap.sh
	@bash deploy/bootstrap.sh
	@rm -f .venv/.installed-* && touch $@

install: $(STAMP)

run: install
	@bash deploy/fonts.sh
	@$(BIN)/marketplace migrate
	@MARKET_PORT=$(PORT) $(BIN)/marketplace demo
	@echo ""
	@echo "Sign in at http://127.0.0.1:$(PORT)/login with any account above (API reference: /schema)."
	@MARKET_PORT=$(PORT) $(BIN)/marketplace serve --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy marketplace licensing billing supervision
	$(BIN)/lint-imports

test: install
	@bash deploy/browser.sh
	@$(MAKE) --no-print-directory lint
	@$(BIN)/python deploy/with_services.py -- $(MAKE) --no-print-directory test-suites

# Run inside deploy/with_services.py: private PostgreSQL and Redis are in MARKET_TEST_* variables.
# The two profiles run at the same time (one per core); each one's output is shown when both are done.
test-suites:
	@$(BIN)/python deploy/run_suites.py -- $(BIN)/pytest $(PYTEST_ARGS)

fmt: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

lock: install
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements.lock

clean:
	rm -rf .venv var
