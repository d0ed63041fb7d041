#!/usr/bin/env bash
# A throw-away PostgreSQL cluster in a project-local directory, owned and run
# by the "postgres" OS user, with pg_migrate preloaded.  Used by the demo, the
# regression tests, the integration tests and the benchmarks.
#
#   scripts/cluster.sh start   DIR PORT [name=value ...]   initdb if needed, then start
#   scripts/cluster.sh stop    DIR [fast|immediate]
#   scripts/cluster.sh restart DIR [fast|immediate]
#   scripts/cluster.sh status  DIR                         exit 0 when running
#   scripts/cluster.sh destroy DIR                         stop and remove
#
# The server listens on 127.0.0.1:PORT and on a Unix socket in DIR; local
# connections are trusted (test and demo clusters only).
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
BIN=/usr/lib/postgresql/$PG_MAJOR/bin
RUNAS=postgres

as_pg() {
    if [ "$(id -un)" = "$RUNAS" ]; then "$@"; else sudo -u "$RUNAS" -- "$@"; fi
}

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,14p' "$0" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
data=$dir/data

case "$cmd" in
start)
    port=${3:?port required}
    shift 3
    chown "$RUNAS": "$dir" 2>/dev/null || true
    if [ ! -f "$data/PG_VERSION" ]; then
        as_pg "$BIN/initdb" -D "$data" -U postgres --auth=trust --locale=C.UTF-8 \
            --encoding=UTF8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # Our settings live in an included file, rewritten on every start.
    {
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        echo "shared_preload_libraries = 'pg_migrate'"
        echo "max_worker_processes = 16"
        echo "logging_collector = off"
        echo "log_line_prefix = '%m [%p] %q%a '"
        for kv in "$@"; do echo "${kv%%=*} = ${kv#*=}"; done
    } | as_pg tee "$data/pg_migrate_cluster.conf" >/dev/null
    grep -q "^include_if_exists = 'pg_migrate_cluster.conf'" "$data/postgresql.conf" \
        || echo "include_if_exists = 'pg_migrate_cluster.conf'" | as_pg tee -a "$data/postgresql.conf" >/dev/null
    if as_pg "$BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        echo "cluster in $dir already running"
    else
        as_pg "$BIN/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >/dev/null \
            || { tail -n 30 "$dir/server.log" >&2; exit 1; }
    fi
    ;;
stop)
    mode=${3:-fast}
    if as_pg "$BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_pg "$BIN/pg_ctl" -D "$data" -m "$mode" -w -t 60 stop >/dev/null
    fi
    ;;
restart)
    mode=${3:-fast}
    as_pg "$BIN/pg_ctl" -D "$data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
    as_pg "$BIN/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { tail -n 30 "$dir/server.log" >&2; exit 1; }
    ;;
status)
    as_pg "$BIN/pg_ctl" -D "$data" status >/dev/null 2>&1
    ;;
destroy)
    as_pg "$BIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*)
    sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
