#!/bin/sh
# Checks alertmanager.yml and runs every case of routes-tests.txt through
# `amtool config routes test`; exits non-zero when a case reaches another receiver.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
config=${1:-$here/alertmanager.yml}
amtool check-config "$config" >/dev/null
failed=0
grep -v -e '^#' -e '^[[:space:]]*$' "$here/routes-tests.txt" | while read -r receiver labels; do
    # shellcheck disable=SC2086 # labels are separate arguments
    if got=$(amtool config routes test --config.file="$config" \
            --verify.receivers="$receiver" $labels 2>/dev/null); then
        echo "ok    $receiver <- $labels"
    else
        echo "FAIL  expected $receiver, got $(echo "$got" | head -n 1) <- $labels"
        failed=1
    fi
    [ "$failed" -eq 0 ] || exit 1
done
