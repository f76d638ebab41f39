#!/bin/sh
# Installs Debian's headless Chromium and its WebDriver (packages `chromium` and
# `chromium-driver`) when they are missing, for the browser tests of the pages
# (tests/pages/test_pages_browser.py drives them with selenium).
#
# Idempotent: does nothing when both are on PATH. Runs `apt-get update` only when the package
# lists do not know the packages. Must run as root; non-interactive.
set -eu

export DEBIAN_FRONTEND=noninteractive

need=""
command -v chromium >/dev/null 2>&1 || need="$need chromium"
command -v chromedriver >/dev/null 2>&1 || need="$need chromium-driver"

if [ -z "$need" ]; then
    echo "chromium and chromedriver are installed: $(command -v chromium), $(command -v chromedriver)"
    exit 0
fi

. "$(dirname "$0")/apt-lib.sh"
require_apt "${need# }" "install Chromium and its chromedriver of the same version yourself"

# shellcheck disable=SC2086 # $need is a space-separated list of package names
apt_install $need

for tool in chromium chromedriver; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool still not on PATH after installing$need" >&2
        exit 1
    fi
done
echo "installed: $(chromium --version 2>&1 | head -n 1); $(chromedriver --version 2>&1 | head -n 1)"
