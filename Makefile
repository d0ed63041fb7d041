# pg_migrate: the two commands of the README, and the steps they are made of.
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config

.PHONY: demo demo-stop test setup install install-release regress bench fuzz fmt lint clean

## Set up everything, build, start a local server and show pg_migrate at work.
demo:
	scripts/demo.sh

## Stop the demo server (its data stays in .demo/; `make demo` starts it again).
demo-stop:
	scripts/cluster.sh stop .demo

## Set up everything, then run every test tier with a summary of counts.
test:
	scripts/test.sh

setup:
	scripts/setup.sh

install: setup
	cargo pgrx install --pg-config $(PG_CONFIG)

install-release: setup
	cargo pgrx install --release --pg-config $(PG_CONFIG)

regress: install
	scripts/regress.sh

bench:
	bench/run

## A long fuzz run with a new seed (FUZZ_SEED=n repeats a run; FUZZ_SECONDS, FUZZ_CASES bound it).
fuzz: install
	FUZZ_SEED=$${FUZZ_SEED:-$$(date +%s)} FUZZ_CASES=$${FUZZ_CASES:-10000000} FUZZ_SECONDS=$${FUZZ_SECONDS:-1800} \
		cargo test --release --test fuzz -- --nocapture

fmt:
	cargo fmt

lint:
	cargo fmt --check
	cargo clippy --all-targets --features "pg15 pg_test" -- -D warnings

clean:
	-scripts/cluster.sh destroy .demo
	rm -rf target .clusters
