#!/usr/bin/env bash
# Installs what testing, benchmarking and packaging keepalive-daemon needs on Debian 12
# (as root, with rustup), on top of scripts/setup.sh (toolchains, bpf-linker): the
# Debian packages the tests use as peers and oracles, qemu for the kernel matrix,
# cargo-deb and cargo-deny. Idempotent: a second run checks and returns quickly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

log() { echo "setup-tests: $*" >&2; }
export PATH="$HOME/.cargo/bin:$PATH"
STABLE=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)

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

# Packaging (cargo xtask package).
CARGO_DEB_VERSION=3.8.0
[ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" = "$CARGO_DEB_VERSION" ] ||
  { log "installing cargo-deb $CARGO_DEB_VERSION"; cargo "+$STABLE" install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet; }
# Supply-chain checks in CI (cargo deny check, deny.toml). Building it takes ~7 min of
# CPU: 4-8 min on a 2-CPU machine, once.
CARGO_DENY_VERSION=0.20.2
[ "$(cargo deny --version 2>/dev/null | awk '{print $2}')" = "$CARGO_DENY_VERSION" ] ||
  { log "installing cargo-deny $CARGO_DENY_VERSION"; cargo "+$STABLE" install cargo-deny --version "$CARGO_DENY_VERSION" --locked --quiet; }
log "ready: test packages, qemu, cargo-deb $(cargo deb --version | awk '{print $2}'), cargo-deny $(cargo deny --version | awk '{print $2}')"
