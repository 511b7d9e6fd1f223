#!/usr/bin/env bash
# Installs what building and running keepalive-daemon needs on Debian 12 (as root, with
# rustup): the pinned stable and nightly toolchains and bpf-linker built against the
# nightly's LLVM. What only the tests, benchmarks and packaging need is in
# scripts/setup-tests.sh. Idempotent: a second run checks and returns quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }

STABLE=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
NIGHTLY=$(sed -n 's/^channel = "\(.*\)"/\1/p' keepalive-ebpf/rust-toolchain.toml)
BPF_LINKER_VERSION=0.13.0

if ! command -v rustup >/dev/null; then
  echo "setup: rustup is required (https://rustup.rs); install it and re-run" >&2
  exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"
# RUSTUP_AUTO_INSTALL may be 0: install the pinned toolchains explicitly.
ensure_toolchain() { # NAME COMPONENT...
  local name=$1
  shift
  local have
  have=$(rustup component list --installed --toolchain "$name" 2>/dev/null || true)
  for c in "$@"; do
    if ! grep -q "^$c" <<<"$have"; then
      log "installing Rust $name with $*"
      rustup toolchain install "$name" --profile minimal $(printf -- '-c %s ' "$@")
      return
    fi
  done
}
ensure_toolchain "$STABLE" clippy rustfmt
ensure_toolchain "$NIGHTLY" rust-src clippy

# bpf-linker must link against the same LLVM as the nightly that emits the bitcode;
# Debian's LLVM is older, so point LLVM_PREFIX at the nightly's own libLLVM.
sysroot=$(rustup run "$NIGHTLY" rustc --print sysroot)
libllvm=$(find "$sysroot/lib" -maxdepth 1 -name 'libLLVM.so.*' | head -n 1)
# bpf-linker loads libLLVM through this prefix at run time: it must stay in place.
prefix="$HOME/.cargo/bpf-linker-llvm"
mkdir -p "$prefix/lib"
ln -sfn "$libllvm" "$prefix/lib/libLLVM.so"
ln -sfn "$libllvm" "$prefix/lib/$(basename "$libllvm")"
linker_version() { bpf-linker --version 2>/dev/null | awk '{print $2}'; }
if [ "$(linker_version)" != "$BPF_LINKER_VERSION" ] || [ "$(cat "$prefix/built-for" 2>/dev/null)" != "$(basename "$libllvm")" ]; then
  log "building bpf-linker $BPF_LINKER_VERSION against $(basename "$libllvm")"
  LLVM_PREFIX="$prefix" cargo "+$STABLE" install bpf-linker --version "$BPF_LINKER_VERSION" --locked --force --quiet
  basename "$libllvm" >"$prefix/built-for"
fi
[ "$(linker_version)" = "$BPF_LINKER_VERSION" ] || { echo "setup: bpf-linker does not run: $(bpf-linker --version 2>&1)" >&2; exit 1; }
log "ready: Rust $STABLE, $NIGHTLY, bpf-linker $(linker_version)"
