#!/bin/sh
# Installs what the Spark adapter's tests (tests/spark, pyspark in `local[2]` mode) need beside
# pyspark itself (a PyPI package of the dev extra): a Java runtime, 17 or newer, from Debian
# (`openjdk-17-jre-headless`; where the release no longer has it, `openjdk-21-jre-headless`,
# which Spark 4 supports too).
#
# Idempotent: does nothing when `java` on PATH is 17 or newer. Runs `apt-get update` only when
# the package lists do not know the package. Must run as root; non-interactive.
set -eu

export DEBIAN_FRONTEND=noninteractive

java_major() {
    # `openjdk version "17.0.15" ...` -> 17 (and "1.8.0" -> 1); empty when no java
    command -v java >/dev/null 2>&1 || return 0
    java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1
}

have=$(java_major)
if [ -n "$have" ] && [ "$have" -ge 17 ]; then
    echo "java $have is installed: $(command -v java)"
    exit 0
fi

. "$(dirname "$0")/apt-lib.sh"
require_apt "a Java runtime (openjdk-17-jre-headless)" \
    "install a Java 17 runtime and put java on PATH"

pick() {
    for pkg in openjdk-17-jre-headless openjdk-21-jre-headless; do
        if has_candidate "$pkg"; then
            echo "$pkg"
            return 0
        fi
    done
    return 1
}
if ! pkg=$(pick); then
    echo "package lists do not know openjdk-17-jre-headless: running apt-get update"
    apt-get update -q
    pkg=$(pick) || { echo "error: no openjdk-17-jre-headless or openjdk-21-jre-headless in the package lists" >&2; exit 1; }
fi

# the JRE's maintainer scripts install man pages; slim images drop the folder
mkdir -p /usr/share/man/man1
apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$pkg"

have=$(java_major)
if [ -z "$have" ] || [ "$have" -lt 17 ]; then
    echo "error: java on PATH is still not 17 or newer after installing $pkg" >&2
    exit 1
fi
echo "installed: $(java -version 2>&1 | head -n 1)"
