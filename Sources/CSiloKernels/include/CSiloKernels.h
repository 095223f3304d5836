// CSiloKernels: hand-vectorised CPU kernels with run-time dispatch (AVX2/FMA, AVX-512), called from SiloTensor.
#ifndef CSILOKERNELS_H
#define CSILOKERNELS_H

/// Which instruction set the kernels dispatch to on this CPU: 0 baseline (SSE2), 1 AVX2+FMA, 2 AVX-512.
int silo_kernels_isa(void);

#endif
