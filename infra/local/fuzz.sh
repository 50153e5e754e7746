#!/usr/bin/env bash
# Runs every fuzz target under tests/fuzz for a short, bounded time (the `make fuzz` target).
#
#   FUZZ_SECONDS   seconds per target (default 20)
#   FUZZ_RUNS      inputs per target instead of a time (the long runs reported on issues:
#                  FUZZ_RUNS=10000000 make fuzz)
#   FUZZ_TARGETS   space-separated subset of targets (default: all of `cargo fuzz list`)
#   FUZZ_SANITIZER cargo-fuzz sanitizer (default none: the fuzzed crates forbid `unsafe`, so
#                  AddressSanitizer would mostly slow a short run down)
#
# cargo-fuzz is installed into the git-ignored .riffle/tools/cargo-fuzz on first use, pinned to
# CARGO_FUZZ_VERSION, so nothing is installed by hand. libFuzzer needs nightly-only rustc flags:
# the `nightly` toolchain is used when rustup has it; without it the pinned stable toolchain is
# asked to accept them (RUSTC_BOOTSTRAP=1), because no toolchain can be downloaded here.
# libFuzzer runs as one process on one core (no -jobs/-workers): the two cores are shared.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="${RIFFLE_TOOLS_DIR:-$root/.riffle/tools}"
fuzz_dir="$root/tests/fuzz"
seconds="${FUZZ_SECONDS:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
version="${CARGO_FUZZ_VERSION:-0.13.1}"
cargo_fuzz="$tools/cargo-fuzz/bin/cargo-fuzz"

if [[ ! -x "$cargo_fuzz" ]] || ! "$cargo_fuzz" --version 2>/dev/null | grep -qF "$version"; then
  echo "fuzz.sh: installing cargo-fuzz $version into $tools/cargo-fuzz" >&2
  cargo install --locked --quiet --version "$version" --root "$tools/cargo-fuzz" cargo-fuzz
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  echo "fuzz.sh: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
  export RUSTC_BOOTSTRAP=1
fi

# Calling the binary as a cargo subcommand keeps `cargo +nightly` choosing the toolchain.
export PATH="$tools/cargo-fuzz/bin:$PATH"
cd "$root"
read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo "${toolchain[@]}" fuzz list --fuzz-dir "$fuzz_dir" | tr '\n' ' ')}"

if [[ -n "${FUZZ_RUNS:-}" ]]; then
  limit=(-runs="$FUZZ_RUNS")
  what="$FUZZ_RUNS inputs"
else
  limit=(-max_total_time="$seconds")
  what="${seconds}s"
fi

cargo "${toolchain[@]}" fuzz build --fuzz-dir "$fuzz_dir" -s "$sanitizer" >&2
for target in "${targets[@]}"; do
  echo "fuzz.sh: $target for $what" >&2
  # The checked-in seeds are read-only input; what the run discovers goes to a scratch corpus
  # so a CI run leaves the work tree clean. Crashes land in tests/fuzz/artifacts/<target>/.
  scratch="$fuzz_dir/corpus-run/$target"
  mkdir -p "$scratch"
  cargo "${toolchain[@]}" fuzz run --fuzz-dir "$fuzz_dir" -s "$sanitizer" "$target" "$scratch" "$fuzz_dir/seeds/$target" -- \
    "${limit[@]}" -print_final_stats=1
done
echo "fuzz.sh: ${#targets[@]} targets ran $what each without a crash" >&2
