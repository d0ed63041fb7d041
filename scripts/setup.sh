#!/usr/bin/env bash
# Install what pg_migrate needs to build, test and demo on Debian 12, skipping
# whatever is already there.  Safe to run any number of times.
set -euo pipefail

PG_MAJOR=15
PGRX_VERSION=0.18.1
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
say() { printf '==> %s\n' "$*"; }

# 1. Debian packages: the server (ships pgbench and contrib), its headers and
#    pg_regress, libclang for bindgen, sudo to run PostgreSQL as "postgres",
#    and for the monitoring tests Prometheus (promtool) and both exporters.
packages=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR postgresql-client-$PG_MAJOR
          clang libclang-dev sudo make gcc libc6-dev pkg-config ca-certificates python3-venv
          prometheus prometheus-postgres-exporter prometheus-sql-exporter)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "Debian packages present"
fi

# 2. cargo-pgrx, pinned (pgrx 0.19 needs a newer Rust than this machine has).
if ! command -v cargo >/dev/null; then
    echo "cargo not found: install the Rust toolchain (rustup) first" >&2
    exit 1
fi
if cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
    say "cargo-pgrx $PGRX_VERSION present"
else
    say "installing cargo-pgrx $PGRX_VERSION (takes about 9 minutes on 2 cores)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

# 3. Point pgrx at the system PostgreSQL $PG_MAJOR.
if grep -qs "^pg$PG_MAJOR = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    say "pgrx knows pg$PG_MAJOR"
else
    say "cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
    cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG"
fi

# 4. The "postgres" OS user runs every cluster we start (PostgreSQL refuses root).
id postgres >/dev/null 2>&1 || { echo "OS user postgres is missing (it comes with postgresql-$PG_MAJOR)" >&2; exit 1; }

# 5. A Python venv for the Django package's tests (clients/django): Django 5.2
#    LTS (the last for Python 3.11) and psycopg 3, from PyPI.
VENV=$(cd "$(dirname "$0")/.." && pwd)/.venv
if "$VENV/bin/python" -c 'import django, psycopg; assert django.VERSION[:2] == (5, 2)' 2>/dev/null; then
    say "Python venv with Django and psycopg present"
else
    say "creating $VENV with Django 5.2 and psycopg 3"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "Django>=5.2,<5.3" "psycopg[binary]>=3.1,<4"
fi
