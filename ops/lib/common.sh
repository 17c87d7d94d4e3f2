# Shared helpers for ops/ scripts. Source it; do not run it.
set -euo pipefail

AMBER_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export AMBER_ROOT

log() { printf '[amber %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[amber] error: %s\n' "$*" >&2; exit 1; }

# The Swift toolchain: on PATH, or at /opt/swift (this project's machines).
ensure_swift() {
    if ! command -v swift >/dev/null 2>&1; then
        if [ -x /opt/swift/usr/bin/swift ]; then
            export PATH="/opt/swift/usr/bin:$PATH"
        else
            die "swift is not installed; install Swift 6.1 or newer (https://www.swift.org/install/) and retry"
        fi
    fi
}

# System packages Amber builds and runs with (Debian/Ubuntu names).
AMBER_APT_PACKAGES=(libopenblas-dev libpq-dev postgresql-15 postgresql-contrib pkg-config)

# Installs whatever of AMBER_APT_PACKAGES is missing; does nothing when all are present.
ensure_system_packages() {
    local missing=()
    for package in "${AMBER_APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "system packages present"
        return
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get; install them with your package manager"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing ${missing[*]} (apt-get)"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
