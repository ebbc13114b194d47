"""Memory fingerprint from SMBIOS type 17 raw entries, the EDAC layout, or MemTotal alone."""

from __future__ import annotations

from pathlib import Path

from hwpoisond.actions.fingerprint import parse_smbios_memory_device, read_fingerprint
from hwpoisond.kernelfs import KernelFS
from tests.integration.actions.fakekernel import FakeMachine, smbios_type17


def two_dimms(machine: FakeMachine, serial_b: str = "3A1B2C4E") -> None:
    machine.add_dimm(
        0,
        smbios_type17(
            "A1", "P0_Node0_Channel0_Dimm0", 16384, "Samsung", "3A1B2C4D", "M393A2K40DB3-CWE"
        ),
    )
    machine.add_dimm(
        1,
        smbios_type17(
            "B1", "P1_Node1_Channel0_Dimm0", 16384, "Samsung", serial_b, "M393A2K40DB3-CWE"
        ),
    )
    machine.add_dimm(2, smbios_type17("A2", "P0_Node0_Channel1_Dimm0", 0, "", "", ""))  # empty


def test_parse_type17_strings_and_sizes() -> None:
    d = parse_smbios_memory_device(
        smbios_type17("DIMM_A1", "BANK 0", 32768, "Micron", "F00DCAFE", "36ASF4G72PZ-3G2E1 ")
    )
    assert d is not None
    assert (d.locator, d.bank_locator, d.size_mb) == ("DIMM_A1", "BANK 0", 32768)
    assert (d.manufacturer, d.serial, d.part_number) == ("Micron", "F00DCAFE", "36ASF4G72PZ-3G2E1")
    big = parse_smbios_memory_device(smbios_type17("A", "B", 128 * 1024, "M", "S", "P"))
    assert big is not None and big.size_mb == 128 * 1024  # via Extended Size (0x7FFF marker)
    assert parse_smbios_memory_device(smbios_type17("A", "B", 0, "", "", "")) is None
    assert parse_smbios_memory_device(b"\x11\x54") is None  # truncated
    assert parse_smbios_memory_device(b"\x10" + bytes(40)) is None  # not type 17


def test_parse_type17_missing_strings_are_empty() -> None:
    d = parse_smbios_memory_device(smbios_type17("A1", "", 8192, "", "", ""))
    assert d is not None and (d.locator, d.serial, d.part_number) == ("A1", "", "")


def test_smbios_fingerprint_is_stable_and_sees_a_swapped_dimm(tmp_path: Path) -> None:
    m1 = FakeMachine(tmp_path / "a")
    two_dimms(m1)
    fp1 = read_fingerprint(KernelFS(m1.root))
    assert fp1.source == "smbios" and len(fp1.devices) == 2
    assert fp1.mem_total_gib == 32
    assert "2 DIMMs (smbios), 32 GiB total" in fp1.description
    assert "A1: 16 GiB Samsung M393A2K40DB3-CWE s/n 3A1B2C4D" in fp1.description
    m2 = FakeMachine(tmp_path / "b")
    two_dimms(m2)
    assert read_fingerprint(KernelFS(m2.root)).digest == fp1.digest
    m3 = FakeMachine(tmp_path / "c")
    two_dimms(m3, serial_b="99999999")
    assert read_fingerprint(KernelFS(m3.root)).digest != fp1.digest


def test_memtotal_jitter_does_not_change_the_fingerprint(tmp_path: Path) -> None:
    a = FakeMachine(tmp_path / "a", mem_total_kb=32 * 1024 * 1024 - 180_000)
    b = FakeMachine(tmp_path / "b", mem_total_kb=32 * 1024 * 1024 - 260_000)
    two_dimms(a)
    two_dimms(b)
    assert read_fingerprint(KernelFS(a.root)).digest == read_fingerprint(KernelFS(b.root)).digest


def test_edac_fallback_and_meminfo_only(tmp_path: Path) -> None:
    m = FakeMachine(tmp_path / "root")
    only_total = read_fingerprint(KernelFS(m.root))
    assert only_total.source == "meminfo" and only_total.devices == ()
    for i, label in enumerate(("CPU_SrcID#0_MC#0_Chan#0_DIMM#0", "CPU_SrcID#0_MC#0_Chan#1_DIMM#0")):
        d = m.root / f"sys/devices/system/edac/mc/mc0/dimm{i}"
        d.mkdir(parents=True)
        (d / "size").write_text("16384\n")
        (d / "dimm_label").write_text(label + "\n")
        (d / "dimm_location").write_text(f"channel {i} slot 0 \n")
    fp = read_fingerprint(KernelFS(m.root))
    assert fp.source == "edac" and [d.size_mb for d in fp.devices] == [16384, 16384]
    assert fp.devices[1].part_number == "CPU_SrcID#0_MC#0_Chan#1_DIMM#0"
    assert fp.digest != only_total.digest
