#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz, libFuzzer) of every parser that takes bytes from outside.
#
#   infra/local/fuzz.sh [seconds-per-target] [target...]
#
# Installs cargo-fuzz if it is missing, builds every target in fuzz/ and runs each for a short
# fixed time (default 20 s), starting from the committed seeds in fuzz/corpus/<target>/. Fails on
# the first crash (a panic, a failed property, a sanitizer report), printing the input that did it.
# Needs no database or emulator. The build lives under $CARGO_TARGET_DIR/fuzz, so a CI machine
# that keeps its target folder rebuilds only what changed.
#
# The machine has one stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the -Z flags cargo fuzz
# passes (sanitizer coverage, AddressSanitizer).
#
# FUZZ_BUILD_ARGS picks the build: empty (the default) is cargo fuzz's own, optimised with
# AddressSanitizer, for long runs. CI passes "--dev --sanitizer none": unoptimised and without
# ASan it builds several times faster from cold, and a short run on safe Rust still finds the
# panics, failed properties and overflows (debug assertions are on) it is there to find.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds="${1:-20}"
shift || true
read -r -a build_args <<<"${FUZZ_BUILD_ARGS:-}"

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
fuzz_target_dir="$CARGO_TARGET_DIR/fuzz"
# New corpus entries and crash inputs go here, not into the committed seeds.
work="$fuzz_target_dir/work"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version "^0.13"
fi

cd "$root"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

echo "== cargo fuzz build (${#targets[@]} targets)"
# Unset: the main build's flags (if any) would change every fuzz crate's hash for nothing.
env -u RUSTFLAGS cargo fuzz build "${build_args[@]}" --fuzz-dir fuzz --target-dir "$fuzz_target_dir"

failed=()
for target in "${targets[@]}"; do
  corpus="$work/corpus/$target"
  artifacts="$work/artifacts/$target/"
  mkdir -p "$corpus" "$artifacts"
  echo "== fuzz $target for ${seconds}s"
  # The working corpus first: libFuzzer adds what it finds there, the seeds stay as committed.
  # Progress lines are dropped (pipefail keeps cargo fuzz's exit status).
  if ! env -u RUSTFLAGS cargo fuzz run "${build_args[@]}" --fuzz-dir fuzz --target-dir "$fuzz_target_dir" \
    "$target" "$corpus" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -artifact_prefix="$artifacts" -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=4096 2>&1 | { grep -v -E '^#[0-9]+\s+(NEW|REDUCE|pulse)' || true; }; then
    failed+=("$target")
    for input in "$artifacts"*; do
      [ -f "$input" ] || continue
      echo "-- $target: input that failed, $input (base64):"
      base64 -w0 "$input"
      echo
    done
  fi
done

cat <<EOF
== a long run: one target, no time limit, both cores (stop it with Ctrl-C):
   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --target-dir "$fuzz_target_dir" \\
     <target> "$work/corpus/<target>" fuzz/corpus/<target> -- -jobs=2 -workers=2
   or every target for an hour each: infra/local/fuzz.sh 3600
   reproduce a failure: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --target-dir "$fuzz_target_dir" <target> <input file>
EOF

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
