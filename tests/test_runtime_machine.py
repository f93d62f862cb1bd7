"""runtime.machine reads the CPU's generation from /proc/cpuinfo, so that two hosts a VM
names alike ("AMD EPYC", same tracked flags) get different fingerprints and a tuning made
on one is not reused on the other; x86 and Arm layouts of the file."""
from __future__ import annotations

import pytest

from runtime import machine

FLAGS = "fpu sse2 avx2 fma avx512f avx512_vnni avx512_bf16"
ZEN4 = f"""processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: {FLAGS}

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
"""
ZEN5 = ZEN4.replace("cpu family\t: 25", "cpu family\t: 26").replace("model\t\t: 17", "model\t\t: 2")
ARM = """processor\t: 0
BogoMIPS\t: 2000.00
Features\t: fp asimd bf16 i8mm sve
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Point runtime.machine at a cpuinfo text of the test's choosing."""
    def use(text: str):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(machine, "_CPUINFO", path)
        machine._cpuinfo.cache_clear()
    yield use
    machine._cpuinfo.cache_clear()


def test_cpu_model_reads_the_generation_of_x86_and_arm(cpuinfo):
    cpuinfo(ZEN5)
    assert machine.cpu_model() == "AuthenticAMD cpu family 26 model 2 stepping 1"
    assert machine.cpu_name() == "AMD EPYC" and machine.has_bf16()
    cpuinfo(ARM)
    assert machine.cpu_model() == ("CPU implementer 0x41 CPU architecture 8 CPU variant 0x1 "
                                   "CPU part 0xd40 CPU revision 1")
    cpuinfo("")
    assert machine.cpu_model() == ""


def test_two_generations_with_one_name_and_the_same_flags_have_different_fingerprints(cpuinfo):
    cpuinfo(ZEN4)
    zen4 = machine.fingerprint()
    cpuinfo(ZEN5)
    zen5 = machine.fingerprint()
    assert zen4["cpu"] == zen5["cpu"] == "AMD EPYC" and zen4["flags"] == zen5["flags"]
    assert zen4 != zen5 and zen4["cpu_model"] != zen5["cpu_model"]
    cpuinfo(ZEN4)
    assert machine.fingerprint() == zen4
