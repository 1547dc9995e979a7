// METAPS_VECTORIZE: compiles a hot loop for AVX-512, AVX2 and baseline x86-64 and picks the best at
// load time (GCC/Clang function multiversioning), since the project builds for the baseline ISA.
// Use it on free functions holding plain float loops; elsewhere it expands to nothing.
#pragma once

// Not under ThreadSanitizer (GCC defines __SANITIZE_THREAD__): the clones' ifunc resolvers run
// before its runtime is set up and crash the process before main (as in ps/optimizer.cc).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__INTEL_COMPILER) && \
    !defined(__SANITIZE_THREAD__)
#define METAPS_VECTORIZE __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define METAPS_VECTORIZE
#endif
