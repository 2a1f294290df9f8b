import pytest

from collector.lineproto import encode_point
from collector.sensors import Sample, kernel
from tests.collector.sensors.captures import CTX, raw, sample


def test_kernel_counters_from_real_stat():
    (p,), _ = kernel.parse(sample(0), CTX)
    words = {line.split()[0]: line.split()[1:] for line in raw(0, "proc/stat").splitlines()}
    assert p.fields["context_switches"] == int(words["ctxt"][0])
    assert p.fields["interrupts"] == int(words["intr"][0])
    assert p.fields["processes_forked"] == int(words["processes"][0])
    assert p.fields["boot_time"] == int(words["btime"][0])
    assert p.fields["entropy_avail"] == int(raw(0, "proc/sys/kernel/random/entropy_avail"))
    assert "disk_pages_in" not in p.fields  # modern kernels have no 'page' line
    encode_point(p)


def test_page_line_of_old_kernels():
    text = "intr 5 1 2\nctxt 7\nbtime 100\nprocesses 9\npage 11 12\n"
    (p,), _ = kernel.parse(
        Sample(0, {"proc/stat": text, "proc/sys/kernel/random/entropy_avail": "256\n"}), CTX
    )
    assert (p.fields["disk_pages_in"], p.fields["disk_pages_out"]) == (11, 12)


def test_missing_line_names_it():
    with pytest.raises(ValueError, match="'ctxt'"):
        kernel.parse(Sample(0, {"proc/stat": "intr 1\n"}), CTX)
