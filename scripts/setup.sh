#!/usr/bin/env bash
# Installs what building and testing keepalive-daemon needs on Debian 12 (as root, with
# rustup): Debian packages, the pinned stable and nightly toolchains, and bpf-linker
# built against the nightly's LLVM. Idempotent: a second run checks and returns quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "setup: $*" >&2; }

STABLE=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
NIGHTLY=$(sed -n 's/^channel = "\(.*\)"/\1/p' keepalive-ebpf/rust-toolchain.toml)
BPF_LINKER_VERSION=0.13.0
# redis-server and python3-redis: the third-party keepalive test (tests/tests/third_party.rs).
PACKAGES=(iproute2 nftables tshark tcpdump bpftool curl ca-certificates openssl iperf3 prometheus strace
  redis-server python3-redis)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The kernel matrix (cargo xtask vm-test): qemu from bookworm-backports (bookworm's own
# qemu-system-x86 conflicts with the newer qemu-utils these machines carry), a static
# busybox and cpio for the initramfs.
if ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q "install ok installed" ||
  ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" ||
  ! command -v cpio >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding the bookworm-backports apt source"
    cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'EOS'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
  fi
  log "installing qemu-system-x86 (bookworm-backports), busybox-static, cpio"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
  apt-get install -y -qq --no-install-recommends busybox-static cpio xz-utils >/dev/null
fi

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
# Packaging (cargo xtask package).
CARGO_DEB_VERSION=3.8.0
[ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" = "$CARGO_DEB_VERSION" ] ||
  { log "installing cargo-deb $CARGO_DEB_VERSION"; cargo "+$STABLE" install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet; }
# Supply-chain checks in CI (cargo deny check, deny.toml). Building it takes ~7 min of
# CPU: 4-8 min on a 2-CPU machine, once.
CARGO_DENY_VERSION=0.20.2
[ "$(cargo deny --version 2>/dev/null | awk '{print $2}')" = "$CARGO_DENY_VERSION" ] ||
  { log "installing cargo-deny $CARGO_DENY_VERSION"; cargo "+$STABLE" install cargo-deny --version "$CARGO_DENY_VERSION" --locked --quiet; }
log "ready: Rust $STABLE, $NIGHTLY, bpf-linker $(linker_version)"
