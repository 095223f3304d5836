"""Writes SmolLM2-135M's token embedding (49152 x 576, dequantised to float32) to a safetensors file.

    ~/.cache/silo/venv/bin/python Benchmarks/export_embedding.py GGUF OUT.safetensors
(uses the `gguf` package, pinned 0.19.0, and safetensors/numpy from the venv)
"""
import sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

reader = GGUFReader(sys.argv[1])
tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(-1, 576)
save_file({"token_embd.weight": np.ascontiguousarray(values)}, sys.argv[2])
print(f"{sys.argv[2]}: token_embd.weight {values.shape}", file=sys.stderr)
