# Sourced by scripts/sanitize.sh and scripts/fuzz.sh: how the sanitizers run.
# - halt_on_error / -fno-sanitize-recover=all (CMake): the first report fails the run.
# - detect_leaks stays on; leaks that LibTorch (uninstrumented) keeps on purpose are
#   suppressed by library in lsan.supp, so a leak in olm's own code still fails.
# - detect_odr_violation=0: libtorch_cpu.so and libtorch.so both carry some of c10's globals.
# - UBSan is compiled with -fno-sanitize=vptr (LibTorch's hidden-visibility typeinfo).
_olm_san_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:detect_odr_violation=0:strict_string_checks=0:detect_stack_use_after_return=0:allocator_may_return_null=1:print_summary=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:report_error_type=1}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$_olm_san_dir/lsan.supp:print_suppressions=0}"
