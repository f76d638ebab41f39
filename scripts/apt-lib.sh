# Shared by the install scripts (sourced: `. "$(dirname "$0")/apt-lib.sh"`): the checks before
# an `apt-get install`, and the package-list lookup.

# effective_uid: the kernel's word (/proc/self/status), where `id -u` may answer otherwise (in
# some containers it reports a mapped user while the process holds root).
effective_uid() {
    awk '/^Uid:/ { print $3; found = 1 } END { if (!found) exit 1 }' /proc/self/status \
        2>/dev/null || id -u
}

# require_apt WHAT HINT: exit 1 with a message unless this runs as root on a machine with
# apt-get; WHAT names what would be installed, HINT what to do without apt-get.
require_apt() {
    if [ "$(effective_uid)" -ne 0 ]; then
        echo "error: installing $1 needs root (apt-get); run this script as root" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: apt-get not found; $2" >&2
        exit 1
    fi
}

# has_candidate PACKAGE: the package lists know an installable version of PACKAGE.
has_candidate() {
    apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]'
}

# apt_install PACKAGE...: `apt-get install` them, non-interactive, keeping existing config
# files; runs `apt-get update` first only when the package lists do not know one of them.
apt_install() {
    for pkg in "$@"; do
        if ! has_candidate "$pkg"; then
            echo "package lists do not know $pkg: running apt-get update"
            apt-get update -q
            break
        fi
    done
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}
