import glob
from collections import Counter
from pathlib import Path

import pytest

from collector.lineproto import encode_point
from collector.sensors import Sample, processes
from tests.collector.sensors.captures import CTX, DATA, sample


def test_states_from_every_captured_process():
    (p,), _ = processes.parse(sample(0), CTX)
    states = Counter()
    threads = 0
    for path in glob.glob(str(DATA / "t0/proc/[0-9]*/stat")):
        after = Path(path).read_text().rsplit(")", 1)[1].split()
        states[after[0]] += 1
        threads += int(after[17])
    assert p.fields["total"] == sum(states.values())
    assert p.fields["sleeping"] == states["S"] and p.fields["idle"] == states["I"]
    assert p.fields["running"] == states["R"] and p.fields["zombies"] == states["Z"]
    assert p.fields["total_threads"] == threads
    assert "parked" not in p.fields
    encode_point(p)


def test_bad_digest_names_it():
    with pytest.raises(ValueError, match="@procs"):
        processes.parse(Sample(0, {"@procs": "S many\n"}), CTX)
