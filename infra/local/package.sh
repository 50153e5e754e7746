#!/usr/bin/env bash
# Builds each function for Lambda's provided.al2023 runtime as a zip holding one `bootstrap`:
#   target/lambda/<arch>/<service>.zip   (arch: arm64, x86_64)
# with target/lambda/<arch>/SHA256SUMS and a size table on stdout.
#
# cargo-lambda cross-compiles with zig as the linker (both from PyPI, pinned by
# infra/local/package-requirements.txt, installed into .riffle/tools/package-venv), against
# an old enough glibc for Amazon Linux 2023; rustup adds the Rust targets.
#
# Reproducible: the same commit gives the same zips, wherever it is checked out. Paths are
# remapped out of the binaries (checkout, cargo home, rustup home), the build is --locked,
# and the zips are written here from sorted, fixed-time entries rather than by the
# packager (whose zips carry the build's time).
#
# Usage: bash infra/local/package.sh [arm64] [x86_64]   (both by default; ARCHS=... too)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="${RIFFLE_TOOLS_DIR:-$root/.riffle/tools}"
venv="$tools/package-venv"
# The functions: binary name = service name = template name under infra/services/.
services=(validator enricher aggregator archiver schema-registry view-query autoscaler)

archs=("$@")
if [[ ${#archs[@]} -eq 0 ]]; then
  read -r -a archs <<<"${ARCHS:-arm64 x86_64}"
fi
for arch in "${archs[@]}"; do
  case "$arch" in
    arm64 | x86_64) ;;
    *) echo "package.sh: unknown architecture '$arch' (arm64 or x86_64)" >&2; exit 2 ;;
  esac
done

install_packager() {
  local want stamp="$venv/.installed"
  want="$(sha256sum "$here/package-requirements.txt" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/cargo-lambda" ]]; then
    return 0
  fi
  echo "package.sh: installing cargo-lambda and zig into $venv" >&2
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/package-requirements.txt" >&2
  echo "$want" >"$stamp"
}

triple_of() {
  case "$1" in
    arm64) echo aarch64-unknown-linux-gnu ;;
    x86_64) echo x86_64-unknown-linux-gnu ;;
  esac
}

install_packager
# cargo-lambda finds zig through the `ziglang` module of the venv's python.
export PATH="$venv/bin:$PATH"
if command -v rustup >/dev/null; then
  for arch in "${archs[@]}"; do
    rustup target add "$(triple_of "$arch")" >/dev/null 2>&1 ||
      rustup target add "$(triple_of "$arch")"
  done
fi

cargo_home="${CARGO_HOME:-$HOME/.cargo}"
rustup_home="${RUSTUP_HOME:-$HOME/.rustup}"
# Where the checkout and the toolchains live must not change the bytes.
export CARGO_ENCODED_RUSTFLAGS="$(printf '%s\x1f' \
  "--remap-path-prefix=$root=/riffle" \
  "--remap-path-prefix=$cargo_home=/cargo" \
  "--remap-path-prefix=$rustup_home=/rustup" \
  "-Cstrip=symbols" | sed 's/\x1f$//')"
# A target directory of its own: other RUSTFLAGS than the workspace's builds, which would
# otherwise rebuild each other's dependencies back and forth.
export CARGO_TARGET_DIR="$root/target/package"

bin_args=()
for s in "${services[@]}"; do bin_args+=(--bin "$s"); done

out_root="$root/target/lambda"
for arch in "${archs[@]}"; do
  triple="$(triple_of "$arch")"
  echo "package.sh: building ${services[*]} for $arch ($triple, release)" >&2
  started=$SECONDS
  # The glibc suffix pins the oldest glibc the binaries may use: Amazon Linux 2023 has 2.34.
  (cd "$root" && cargo lambda build --release --locked --target "$triple.2.34" \
    "${bin_args[@]}" --lambda-dir "$CARGO_TARGET_DIR/lambda-$arch" >&2)
  echo "package.sh: built in $((SECONDS - started)) s" >&2

  dest="$out_root/$arch"
  rm -rf "$dest"
  mkdir -p "$dest"
  for s in "${services[@]}"; do
    staged="$CARGO_TARGET_DIR/lambda-$arch/$s/bootstrap"
    [[ -x "$staged" ]] || { echo "package.sh: no bootstrap for $s at $staged" >&2; exit 1; }
    python3 "$here/zip_bootstrap.py" "$staged" "$dest/$s.zip"
  done
  (cd "$dest" && sha256sum ./*.zip >SHA256SUMS)

  printf '%-16s %-7s %12s %12s  %s\n' function arch binary zip sha256
  for s in "${services[@]}"; do
    bin_size=$(stat -c %s "$CARGO_TARGET_DIR/lambda-$arch/$s/bootstrap")
    zip_size=$(stat -c %s "$dest/$s.zip")
    sum=$(sha256sum "$dest/$s.zip" | cut -c1-16)
    awk -v s="$s" -v a="$arch" -v b="$bin_size" -v z="$zip_size" -v h="$sum" \
      'BEGIN { printf "%-16s %-7s %9.1f MiB %9.1f MiB  %s\n", s, a, b / 1048576, z / 1048576, h }'
  done
done
echo "package.sh: zips under target/lambda/<arch>/ (SHA256SUMS beside them)" >&2
