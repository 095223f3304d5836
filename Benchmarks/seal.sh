#!/usr/bin/env bash
# Seal/open throughput of sealed sessions (Sources/SiloFederation/Session): 3 MiB payloads (786,432
# Float32 activations), AES-GCM-256 and ChaCha20-Poly1305, in GB/s (10^9 bytes/s), release build.
# Runs SessionTests.testSealThroughputBenchmark, which is skipped unless SILO_BENCHMARK_SEAL=1.
#
#   Benchmarks/seal.sh        (first run builds the package in release: several minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
SILO_BENCHMARK_SEAL=1 swift test -c release -Xswiftc -enable-testing --scratch-path .build-crypto-rel \
  --filter SessionTests.testSealThroughputBenchmark 2>&1 | grep -E "seal-benchmark|error|failed"
