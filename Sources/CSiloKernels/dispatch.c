#include "CSiloKernels.h"
#include <stdlib.h>

static int silo_detect_isa(void) {
    int isa = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) isa = 2;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = 1;
#endif
    const char *forced = getenv("SILO_KERNELS_ISA");
    if (forced && forced[0] >= '0' && forced[0] <= '2' && forced[0] - '0' < isa) isa = forced[0] - '0';
    return isa;
}

int silo_kernels_isa(void) {
    static int cached = -1;
    if (cached < 0) cached = silo_detect_isa();
    return cached;
}
