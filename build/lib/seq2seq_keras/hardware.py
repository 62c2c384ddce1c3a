"""What this machine's CPU can do natively: the one place `precision` and `decode_precision`
ask before choosing bfloat16.

bfloat16 pays only where the CPU has bfloat16 dot-product instructions (AVX512_BF16 or AMX:
AMD Zen 4/5, Intel Cooper Lake and later). Elsewhere — AVX2 laptops, Colab's free CPU
runtime — TensorFlow emulates it, and a bfloat16 matmul is slower than a float32 one.

oneDNN, which runs TensorFlow's CPU matmuls, can be told to use no more than a given
instruction set with `ONEDNN_MAX_CPU_ISA` (for instance `AVX2`): it then picks the kernels
such a CPU would run. That variable is honoured here too, so that a machine with bfloat16
units capped at AVX2 chooses, and computes, what an AVX2-only CPU does.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# oneDNN's environment variable capping the instruction set of its kernels.
ONEDNN_ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
# Cap values (oneDNN's names) at or above the first instruction set with bfloat16 dot
# products, AVX512_CORE_BF16; "ALL" and "DEFAULT" mean no cap. Lower caps (SSE41, AVX, AVX2,
# AVX2_VNNI, AVX2_VNNI_2, AVX512_CORE, AVX512_CORE_VNNI) leave bfloat16 emulated.
BFLOAT16_ISA_CAPS = re.compile(r"^(ALL|DEFAULT|AVX512_CORE_BF16|AVX512_CORE_FP16|AVX512_CORE_AMX"
                               r"\w*|AVX10\w*)$")
CPU_FLAGS_FILE = Path("/proc/cpuinfo")


def cpu_has_native_bfloat16() -> bool:
    """Whether matmuls can run on bfloat16 dot-product units here.

    True when the CPU advertises AVX512_BF16 or AMX (Linux `/proc/cpuinfo`; False where that
    file is missing) and `ONEDNN_MAX_CPU_ISA`, if set, does not cap oneDNN below them.
    """
    return cpu_flags_have_bfloat16() and onednn_isa_allows_bfloat16()


def cpu_flags_have_bfloat16() -> bool:
    """Whether the CPU advertises bfloat16 dot products (AVX512_BF16 or AMX_BF16)."""
    try:
        cpuinfo = CPU_FLAGS_FILE.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None


def onednn_isa_allows_bfloat16() -> bool:
    """False when `ONEDNN_MAX_CPU_ISA` caps oneDNN below the bfloat16 instructions."""
    cap = os.environ.get(ONEDNN_ISA_VARIABLE, "").strip().upper()
    return not cap or BFLOAT16_ISA_CAPS.match(cap) is not None


def describe_cpu() -> str:
    """One line saying what decides "auto" precision here, printed beside measurements."""
    cap = os.environ.get(ONEDNN_ISA_VARIABLE, "").strip()
    if cpu_flags_have_bfloat16():
        kind = "CPU with bfloat16 dot products (AVX512_BF16/AMX)"
    else:
        kind = "CPU without bfloat16 dot products"
    return kind + (f", oneDNN capped by {ONEDNN_ISA_VARIABLE}={cap}" if cap else "")
