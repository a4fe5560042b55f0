# Shell functions shared by the scripts/bench-* benchmark scripts. Source it after
# `set -euo pipefail` and after setting `root` to the repository's root directory.

# Exits with status 2 unless the environment variable named $1 is unset, empty or a positive
# integer.
require_positive_integer() {
    local name="$1"
    local value="${!name:-}"
    if [ -n "$value" ] && ! [[ "$value" =~ ^[1-9][0-9]*$ ]]; then
        echo "error: $name must be a positive integer, got '$value'" >&2
        exit 2
    fi
}

# Builds `switchyard` and `switchyard-loadgen` in release mode and sets `server_bin` and
# `loadgen_bin` to their paths, under CARGO_TARGET_DIR when it is set.
build_release_binaries() {
    echo "building switchyard and switchyard-loadgen (release)" >&2
    # From the repository's root, so that Cargo reads its .cargo/config.toml, which a build
    # through --manifest-path from elsewhere would not.
    (cd "$root" && cargo build --release -p switchyard -p switchyard-loadgen) >&2
    local target_dir="${CARGO_TARGET_DIR:-$root/target}"
    server_bin="$target_dir/release/switchyard"
    loadgen_bin="$target_dir/release/switchyard-loadgen"
}

# Creates a temporary directory named after $1 under TMPDIR (or /tmp) and sets `tmp` to it.
make_bench_tmp() {
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
}

# Removes the directory in `tmp`, or keeps it and prints its path when KEEP_TMP=1.
remove_bench_tmp() {
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "kept $tmp" >&2
    else
        rm -rf "$tmp"
    fi
}
