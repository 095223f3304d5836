#!/usr/bin/env python3
"""Regenerates Silo's committed PyTorch reference fixtures.

Runs `write(out_dir)` of every module in Scripts/fixtures/ (ops, tiny_gpt2, optimizers, gguf, and any
module added later), plus the safetensors format fixtures below, with fixed seeds and one torch
thread, so a rerun reproduces every file byte for byte. Runs under the venv of Scripts/setup_venv.sh
(${SILO_HOME:-~/.cache/silo}/venv), re-executing itself with it when started from another python.

  python3 Scripts/make_fixtures.py                 regenerate everything into the repository
  python3 Scripts/make_fixtures.py ops tiny_gpt2   only these modules ("formats" for the format files)
  python3 Scripts/make_fixtures.py --check         regenerate into a temporary directory and compare
                                                   with the repository's files; exit 1 on a difference

Format fixtures (Tests/SiloTensorTests/Fixtures, for SafeTensorsTests), written by the `safetensors`
package:
  formats.safetensors         "values" (F32: edge cases of F16/BF16 rounding — ties, subnormals,
                              overflow, ±0, ±inf, NaN — then random values over many magnitudes) and
                              the same values as "values_f16", "values_bf16" (torch's round to nearest
                              even) and "values_f64"; "ints_i64", "ints_i32", "ints_u8", "flags"
                              (BOOL), "empty" (0, 3) and "scalar" (shape []); metadata {"source": ...}
  formats_{f32,f16,bf16}.safetensors   the same three tensors ("embed" (5, 2), "layer.0.bias" (4),
                              "layer.0.weight" (3, 4)) stored as F32, F16 and BF16; metadata
                              {"format": "pt"}. Silo writing the F32 values as F16/BF16 must give the
                              same bytes.
"""

import hashlib
import importlib
import os
import random
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "Scripts")
SILO_HOME = os.environ.get("SILO_HOME") or os.path.expanduser("~/.cache/silo")
VENV = os.path.join(SILO_HOME, "venv")

TENSOR_FIXTURES = os.path.join("Tests", "SiloTensorTests", "Fixtures")
MODEL_FIXTURES = os.path.join("Tests", "SiloModelsTests", "Fixtures")
# Where each module's files go (relative to the repository root); a module may set OUT_DIR instead.
OUTPUT_DIRS = {
    "formats": TENSOR_FIXTURES,
    "ops": TENSOR_FIXTURES,
    "optimizers": TENSOR_FIXTURES,
    "tiny_gpt2": MODEL_FIXTURES,
    "gguf": os.path.join(MODEL_FIXTURES, "gguf"),
}


def _ensure_venv():
    """Re-executes this script with the venv's python unless it is already running in it."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if os.environ.get("SILO_FIXTURES_REEXEC"):
        sys.exit(f"make_fixtures.py: re-executed, but still not running in {VENV} (sys.prefix {sys.prefix})")
    setup = subprocess.run(["bash", os.path.join(SCRIPTS, "setup_venv.sh")], stdout=subprocess.PIPE, text=True,
                           check=True)
    python = setup.stdout.strip().splitlines()[-1]
    os.environ["SILO_FIXTURES_REEXEC"] = "1"
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])


def write_formats(out_dir):
    """Writes the safetensors format fixtures (see the module docstring); returns their paths."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(7)
    edge = [
        0.0, -0.0, 1.0, -1.0, 0.1, 1 / 3, -2.5,
        65504.0, 65519.0, 65520.0, 1e5, -1e5,        # F16 max, the last value rounding to it, overflow
        2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25, 2.0 ** -26, -(2.0 ** -24) * 1.75,  # F16 subnormals
        1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 1 + 2.0 ** -11 + 2.0 ** -20,  # F16 ties: to even, to even, up
        1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -8 + 2.0 ** -20,     # BF16 ties
        3.4028234663852886e38, -3.4028234663852886e38, 1e-40, -1e-45,     # F32 max, F32 subnormals
        float("inf"), float("-inf"), float("nan"),
    ]
    magnitudes = 10.0 ** (torch.rand(64, generator=generator) * 14 - 9)
    values = torch.cat([torch.tensor(edge, dtype=torch.float32),
                        (torch.randn(64, generator=generator) * magnitudes).float()])
    paths = [os.path.join(out_dir, "formats.safetensors")]
    save_file({
        "values": values,
        "values_f16": values.half(),
        "values_bf16": values.bfloat16(),
        "values_f64": values.double(),
        "ints_i64": torch.tensor([[-3, 0, 7], [16777216, -100, 42]], dtype=torch.int64),
        "ints_i32": torch.tensor([-2147483648, 5, 2147483647], dtype=torch.int32),
        "ints_u8": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "flags": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
    }, paths[0], metadata={"source": "Scripts/make_fixtures.py"})

    small = {
        "embed": torch.randn(5, 2, generator=generator),
        "layer.0.bias": torch.randn(4, generator=generator) * 1e-3,
        "layer.0.weight": torch.randn(3, 4, generator=generator) * 300,
    }
    for suffix, dtype in [("f32", torch.float32), ("f16", torch.float16), ("bf16", torch.bfloat16)]:
        paths.append(os.path.join(out_dir, f"formats_{suffix}.safetensors"))
        save_file({name: value.to(dtype) for name, value in small.items()}, paths[-1], metadata={"format": "pt"})
    return paths


def _modules():
    directory = os.path.join(SCRIPTS, "fixtures")
    names = sorted(name[:-3] for name in os.listdir(directory) if name.endswith(".py") and not name.startswith("_"))
    return ["formats"] + names


def _run(name, out_root):
    """Runs one module's write() into its directory under out_root; returns the paths written."""
    import numpy
    import torch

    torch.manual_seed(0)
    numpy.random.seed(0)
    random.seed(0)
    if name == "formats":
        relative, write = OUTPUT_DIRS[name], write_formats
    else:
        module = importlib.import_module(f"fixtures.{name}")
        relative = getattr(module, "OUT_DIR", None) or OUTPUT_DIRS.get(name)
        if relative is None:
            sys.exit(f"make_fixtures.py: no output directory for Scripts/fixtures/{name}.py "
                     "(add it to OUTPUT_DIRS or set OUT_DIR in the module)")
        write = module.write
    out_dir = os.path.join(out_root, relative)
    os.makedirs(out_dir, exist_ok=True)
    written = write(out_dir)
    return [written] if isinstance(written, str) else list(written)


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(arguments):
    check = "--check" in arguments
    selected = [a for a in arguments if not a.startswith("--")]
    available = _modules()
    unknown = [name for name in selected if name not in available]
    if unknown:
        sys.exit(f"make_fixtures.py: unknown module(s) {unknown}; available: {available}")

    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    sys.path.insert(0, SCRIPTS)
    out_root = tempfile.mkdtemp(prefix="silo-fixtures-") if check else ROOT
    differences = 0
    try:
        for name in selected or available:
            for path in _run(name, out_root):
                relative = os.path.relpath(path, out_root)
                digest = _sha256(path)
                if not check:
                    print(f"{digest}  {relative}  ({os.path.getsize(path)} bytes)")
                    continue
                committed = os.path.join(ROOT, relative)
                same = os.path.exists(committed) and _sha256(committed) == digest
                differences += not same
                print(f"{'same' if same else 'DIFFERENT'}  {relative}")
    finally:
        if check:
            shutil.rmtree(out_root, ignore_errors=True)
    if differences:
        sys.exit(f"make_fixtures.py --check: {differences} file(s) differ from the repository")


if __name__ == "__main__":
    _ensure_venv()
    main(sys.argv[1:])
