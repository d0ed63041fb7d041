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

# 6. Citus 13.2.2 for the Citus test tier, built from ../shared/vendor (no
#    Debian package exists): about 3 minutes on 2 cores, once.
CITUS_VERSION=13.2.2
CITUS_VENDOR=${CITUS_VENDOR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/vendor}
PKGLIB=$("$PG_CONFIG" --pkglibdir)
SHAREDIR=$("$PG_CONFIG" --sharedir)
if [ -f "$PKGLIB/citus.so" ] && grep -qs "^default_version = '${CITUS_VERSION%.*}-" "$SHAREDIR/extension/citus.control" \
   && [ "$(cat "$PKGLIB/citus.built" 2>/dev/null)" = "$CITUS_VERSION" ]; then
    say "Citus $CITUS_VERSION present"
elif [ ! -f "$CITUS_VENDOR/citus-$CITUS_VERSION.tar.gz" ]; then
    say "Citus source not found in $CITUS_VENDOR: the citus test tier will be skipped"
else
    say "building Citus $CITUS_VERSION from $CITUS_VENDOR (takes about 3 minutes on 2 cores)"
    deps=(libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libselinux1-dev libxslt1-dev libpam0g-dev libreadline-dev)
    missing=()
    for p in "${deps[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Citus' build dependencies: ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    build=$(mktemp -d)
    tar -xzf "$CITUS_VENDOR/citus-$CITUS_VERSION.tar.gz" -C "$build"
    src=$(find "$build" -maxdepth 2 -name configure -printf '%h\n' | head -n1)
    (cd "$src" && patch -p1 -s < "$CITUS_VENDOR/citus-pg15.20.patch" \
        && ./configure -q PG_CONFIG="$PG_CONFIG" >"$build/configure.log" 2>&1 \
        && make -s -j"$(nproc)" >"$build/make.log" 2>&1 \
        && as_root make -s install >"$build/install.log" 2>&1) \
        || { echo "Citus build failed; logs in $build" >&2; exit 1; }
    echo "$CITUS_VERSION" | as_root tee "$PKGLIB/citus.built" >/dev/null
    rm -rf "$build"
fi
