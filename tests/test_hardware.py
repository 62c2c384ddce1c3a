"""The CPU check behind precision "auto": the flags, and oneDNN's instruction-set cap."""

from __future__ import annotations

import pytest

from seq2seq_keras import hardware

ZEN5_FLAGS = "flags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 avx512_vnni\n"
AVX2_FLAGS = "flags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE_RAPIDS_FLAGS = "flags\t\t: avx2 avx512f amx_bf16 amx_tile amx_int8\n"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Point the check at a cpuinfo file of the test's choosing, with no oneDNN cap."""
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(hardware, "CPU_FLAGS_FILE", path)
    monkeypatch.delenv(hardware.ONEDNN_ISA_VARIABLE, raising=False)
    return path


def test_bfloat16_is_native_only_with_avx512_bf16_or_amx(cpuinfo):
    for flags, native in ((ZEN5_FLAGS, True), (SAPPHIRE_RAPIDS_FLAGS, True), (AVX2_FLAGS, False)):
        cpuinfo.write_text(flags)
        assert hardware.cpu_has_native_bfloat16() is native, flags


def test_a_missing_cpuinfo_means_no_bfloat16(cpuinfo):
    assert not cpuinfo.exists()
    assert hardware.cpu_has_native_bfloat16() is False


@pytest.mark.parametrize("cap, native", [
    ("AVX2", False), ("avx2", False), ("AVX512_CORE", False), ("AVX512_CORE_VNNI", False),
    ("AVX2_VNNI_2", False), ("SSE41", False),
    ("AVX512_CORE_BF16", True), ("AVX512_CORE_AMX", True), ("AVX10_1_512_AMX", True),
    ("ALL", True), ("DEFAULT", True), ("", True),
])
def test_a_onednn_cap_below_bfloat16_makes_the_cpu_choose_as_one_without_it(
    cpuinfo, monkeypatch, cap, native
):
    cpuinfo.write_text(ZEN5_FLAGS)
    monkeypatch.setenv(hardware.ONEDNN_ISA_VARIABLE, cap)
    assert hardware.cpu_has_native_bfloat16() is native
    assert (hardware.ONEDNN_ISA_VARIABLE in hardware.describe_cpu()) is bool(cap)
