#!/bin/sh
# Installs the OpenAPI linters tests/api/test_openapi_lint.py runs on the served spec:
# Spectral (@stoplight/spectral-cli) and Redocly (@redocly/cli), at the versions pinned in
# tools/openapi-lint/package.json and package-lock.json, into tools/openapi-lint/node_modules
# (ignored by git) with `npm ci`. Node.js 20.19+ or 22.12+ comes from the machine; where node
# is missing it is installed from the apt packages `nodejs` and `npm` (as root).
#
# Idempotent: does nothing when both linters are installed at the pinned versions.
set -eu

dir=$(cd "$(dirname "$0")/../tools/openapi-lint" && pwd)

installed() {
    [ -x "$dir/node_modules/.bin/spectral" ] && [ -x "$dir/node_modules/.bin/redocly" ] || return 1
    node -e '
        const dir = process.argv[1], want = require(dir + "/package.json").devDependencies;
        for (const [name, version] of Object.entries(want)) {
            if (require(dir + "/node_modules/" + name + "/package.json").version !== version) process.exit(1);
        }' "$dir" 2>/dev/null
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    . "$(dirname "$0")/apt-lib.sh"
    require_apt "nodejs npm" "install Node.js 20.19+ and npm"
    has_candidate nodejs || apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
fi

if installed; then
    echo "spectral and redocly are installed in $dir/node_modules"
    exit 0
fi

node -e '
    const [major, minor] = process.versions.node.split(".").map(Number);
    if (!(major >= 22 || (major === 20 && minor >= 19))) {
        console.error("error: Node.js " + process.versions.node + " is too old for @redocly/cli (20.19+ or 22.12+)");
        process.exit(1);
    }'
# --ignore-scripts: the linters need no install scripts, and none of their dependencies runs one
npm ci --prefix "$dir" --no-audit --no-fund --ignore-scripts --loglevel=error
installed || { echo "error: npm ci did not install the pinned linters in $dir" >&2; exit 1; }
echo "installed: spectral $("$dir/node_modules/.bin/spectral" --version), redocly $("$dir/node_modules/.bin/redocly" --version 2>/dev/null | tail -n 1)"
