#!/usr/bin/env bash
# A throwaway Debian PostgreSQL 15 cluster for the test suite.
#
#   .ci/pg15.sh start DIR   create DIR, initdb + start a cluster in it, print its DSN on stdout
#   .ci/pg15.sh stop DIR    stop that cluster and delete DIR
#
# The cluster listens only on a Unix socket in DIR (trust auth, a free port number), with
# track_functions=all and max_connections=200. PostgreSQL refuses to run as root, so when run
# as root the server runs as the `postgres` system user (DIR's parents must be traversable
# by it). PGMQ is not installed here: the tests' pytest plugin installs it (install_pgmq runs
# the SQL of the `pgmq` package, since Debian has no pgmq extension for PostgreSQL 15).
# Override the binaries with PG_BINDIR (default /usr/lib/postgresql/15/bin).
set -euo pipefail

BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
MARKER=.rx_pgmq_pg15_cluster

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
action=$1
dir=$2

if [ "$(id -u)" -eq 0 ]; then
    as_pg=(runuser -u postgres --)
else
    as_pg=()
fi

case "$action" in
start)
    [ -x "$BINDIR/postgres" ] || { echo "$0: no PostgreSQL 15 in $BINDIR" >&2; exit 1; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ -n "$(ls -A "$dir")" ]; then
        echo "$0: $dir is not empty" >&2
        exit 1
    fi
    touch "$dir/$MARKER"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    "${as_pg[@]}" "$BINDIR/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 \
        --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    cat >>"$dir/data/postgresql.conf" <<EOF
# added by .ci/pg15.sh
listen_addresses = ''
port = $port
unix_socket_directories = '$dir'
track_functions = 'all'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    "${as_pg[@]}" "$BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >&2 \
        || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgresql://postgres@/postgres?host=$dir&port=$port"
    ;;
stop)
    if [ ! -e "$dir/$MARKER" ]; then
        echo "$0: $dir is not a cluster made by '$0 start'; not touching it" >&2
        exit 1
    fi
    if [ -f "$dir/data/postmaster.pid" ]; then
        "${as_pg[@]}" "$BINDIR/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2 || true
    fi
    rm -rf "$dir"
    ;;
*)
    usage
    ;;
esac
