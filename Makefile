# The one task runner for people, the README and CI. `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

TOOLS := .riffle/tools
CFN_LINT := $(TOOLS)/venv/bin/cfn-lint
# Every CloudFormation template under infra/ (infra/local holds no templates).
TEMPLATES = $(wildcard infra/*.yaml infra/services/*.yaml)
ARGS ?=
# The last commit production's registry has seen, for schema-gate.
BASE ?= HEAD

.PHONY: help install test lint fmt-check clippy cfn-lint scan demo fuzz schema-gate package

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-12s %s\n", $$1, $$2}'

install: ## Install the local AWS emulators and cfn-lint into .riffle/tools (quick when present)
	@bash infra/local/install.sh

test: install ## Run every test of the workspace (nextest if present) and lint the templates
	@# The end-to-end tests start the service binaries as processes, so build them first.
	cargo build --workspace --bins
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --no-fail-fast; \
	else \
		cargo test --workspace --no-fail-fast; \
	fi
	@$(MAKE) --no-print-directory cfn-lint

lint: install fmt-check clippy cfn-lint ## rustfmt check, clippy -D warnings, cfn-lint on the templates

fmt-check: ## Check formatting (cargo fmt --check)
	cargo fmt --all -- --check

clippy: ## Clippy on everything, warnings are errors
	cargo clippy --workspace --all-targets -- -D warnings

cfn-lint: install ## Lint the CloudFormation templates under infra/
	@if [ -n "$(strip $(TEMPLATES))" ]; then \
		$(CFN_LINT) $(TEMPLATES) && echo "cfn-lint: $(words $(TEMPLATES)) templates clean"; \
	else \
		echo "cfn-lint: no templates yet"; \
	fi

# checkov's exit code fails the target on any failed check: fix the template, or skip the
# check in the resource's Metadata with its reason (docs/runbook.md, "Security scan"). No
# update check and no download from its vendor: the result depends on the pinned version.
scan: ## Security-scan the templates under infra/ with checkov (installed on first use)
	@bash infra/local/install.sh scan
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true $(TOOLS)/scan-venv/bin/checkov --directory infra \
		--framework cloudformation --compact --quiet --skip-download

demo: install ## Run the whole pipeline locally on generated events (ARGS="--events 50000 --rate 5000")
	cargo build --release --workspace --bins
	target/release/riffle-dev demo $(ARGS)

# ARCHS="arm64" builds one architecture only. The first run installs the packager and the
# Rust targets; later runs rebuild only what changed.
package: ## Build each function as a Lambda zip (provided.al2023, arm64 and x86_64) under target/lambda/
	@bash infra/local/package.sh $(ARCHS)

fuzz: ## Fuzz each codec decoder briefly with cargo-fuzz on nightly (FUZZ_SECONDS=20 per target)
	@bash infra/local/fuzz.sh

schema-gate: install ## Replay schemas/ git history (to BASE=HEAD) into a local registry, check the working tree
	cargo build -p riffle-harness -p riffle-schema-registry --bin riffle-dev --bin schema-registry
	target/debug/riffle-dev schema-gate --base $(BASE)
