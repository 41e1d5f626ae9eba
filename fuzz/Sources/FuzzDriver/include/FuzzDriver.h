#ifndef FUZZ_DRIVER_H
#define FUZZ_DRIVER_H

#include <stddef.h>
#include <stdint.h>

// libFuzzer's entry points (compiler-rt's FuzzerInterface.h); each fuzz target defines the second.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// What a target's Swift entry point calls. SwiftPM links a plain `-Xswiftc -sanitize=fuzzer` build with
// `main` aliased to that entry point, so libFuzzer's own `main` never runs: this runs its driver instead.
static inline int fuzzDriverMain(int argc, char **argv) {
    return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput);
}

#endif
