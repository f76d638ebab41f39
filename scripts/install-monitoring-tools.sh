#!/bin/sh
# Installs promtool and amtool (Debian packages `prometheus` and `prometheus-alertmanager`),
# docker-compose (the Debian package, Compose v1, for its config check) and faketime when they
# are missing, so that the rule, route and config checks in tests/deploy can run.
#
# Idempotent: does nothing when both tools are on PATH. Runs `apt-get update` only when the
# package lists do not know the packages. Must run as root; non-interactive.
#
# The packages' maintainer scripts may start the prometheus and alertmanager daemons. This
# script only wants the command-line tools, so it stops any daemon that was not running
# before it started (by process id; daemons that were already running are left alone).
set -eu

export DEBIAN_FRONTEND=noninteractive

need=""
command -v promtool >/dev/null 2>&1 || need="$need prometheus"
command -v amtool >/dev/null 2>&1 || need="$need prometheus-alertmanager"
# Compose v1 (Debian's docker-compose), for `docker-compose config`: tests/deploy validates
# docker-compose.yml with it; no Docker engine is needed or installed.
command -v docker-compose >/dev/null 2>&1 || need="$need docker-compose"
# faketime (libfaketime), for the test of a replica whose clock runs ahead of the database's.
command -v faketime >/dev/null 2>&1 || need="$need faketime"

if [ -z "$need" ]; then
    echo "promtool and amtool are installed: $(command -v promtool), $(command -v amtool); docker-compose: $(command -v docker-compose); faketime: $(command -v faketime)"
    exit 0
fi

. "$(dirname "$0")/apt-lib.sh"
require_apt "${need# }" "install promtool and amtool from prometheus.io/download"

# Daemon process ids running before the install (empty when none).
pids_of() {
    pgrep -x "$1" 2>/dev/null | tr '\n' ' ' || true
}
before_prometheus=$(pids_of prometheus)
before_alertmanager=$(pids_of prometheus-alertmanager)

# shellcheck disable=SC2086 # $need is a space-separated list of package names
apt_install $need

# Stop what the install started, and only that.
stop_new() {
    name=$1 service=$2 before=$3
    for pid in $(pids_of "$name"); do
        case " $before " in
            *" $pid "*) continue ;;
        esac
        if command -v service >/dev/null 2>&1 && [ -x "/etc/init.d/$service" ]; then
            service "$service" stop >/dev/null 2>&1 || true
        fi
        if kill -0 "$pid" 2>/dev/null; then
            echo "stopping $name (pid $pid) started by the package install"
            kill "$pid" 2>/dev/null || true
        fi
    done
}
stop_new prometheus prometheus "$before_prometheus"
stop_new prometheus-alertmanager prometheus-alertmanager "$before_alertmanager"

for tool in promtool amtool docker-compose; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool still not on PATH after installing$need" >&2
        exit 1
    fi
done
echo "installed: $(promtool --version 2>&1 | head -n 1); $(amtool --version 2>&1 | head -n 1)"
