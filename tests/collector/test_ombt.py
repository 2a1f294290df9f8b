"""The ombt campaign importer against the seed notebook's own code.

The notebook's Stats/TestResults classes and helper functions are copied below verbatim
(only reformatted) as the reference implementation; our aggregates must equal theirs.
"""

# ruff: noqa
# fmt: off
from __future__ import annotations

import copy
import glob
import json
import math
import statistics
from os import path
from pathlib import Path

import pytest

from collector.lineproto import encode_point
from collector.ombt import OmbtFormatError, campaign_points, read_campaign, read_controller_log

DATA = Path(__file__).resolve().parents[1] / "data" / "ombt"
RESULT_PATH = str(DATA)

# ---- reference: the seed notebook's code ------------------------------------------------

class Stats(object):
    """Manage a single statistic"""
    def __init__(self, min=None, max=None, total=0, count=0, sum_of_squares=0, distribution=None):
        self.min = min
        self.max = max
        self.total = total
        self.count = count
        self.sum_of_squares = sum_of_squares
        # distribution of values grouped by powers of 10
        self.distribution = distribution or dict()

    @classmethod
    def from_dict(cls, values):
        if 'distribution' in values:
            # hack alert!
            # when a Stats is passed via an RPC call it appears as if the
            # distribution map's keys are converted from int to str.
            # Fix that by re-indexing the distribution map:
            new_dict = dict()
            old_dict = values['distribution']
            for k in old_dict.keys():
                new_dict[int(k)] = old_dict[k];
            values['distribution'] = new_dict
        return Stats(**values)

    def to_dict(self):
        new_dict = dict()
        for a in ["min", "max", "total", "count", "sum_of_squares"]:
            new_dict[a] = getattr(self, a)
        new_dict["distribution"] = self.distribution.copy()
        return new_dict

    def update(self, value):
        self.total += value
        self.count += 1
        self.sum_of_squares += value**2
        self.min = min(self.min, value) if self.min else value
        self.max = max(self.max, value) if self.max else value
        log = int(math.log10(value)) if value >= 1.0 else 0
        base = 10**log
        index = int(value/base)  # 0..9
        if log not in self.distribution:
            self.distribution[log] = [0 for i in range(10)]
        self.distribution[log][index] += 1

    def reset(self):
        self.__init__()

    def average(self):
        return (self.total / float(self.count)) if self.count else 0

    def std_deviation(self):
        return math.sqrt((self.sum_of_squares / float(self.count))
                         - (self.average() ** 2)) if self.count else -1

    def merge(self, stats):
        if stats.min is not None and self.min is not None:
            self.min = min(self.min, stats.min)
        else:
            self.min = self.min or stats.min
        if stats.max is not None and self.max is not None:
            self.max = max(self.max, stats.max)
        else:
            self.max = self.max or stats.max

        self.total += stats.total
        self.count += stats.count
        self.sum_of_squares += stats.sum_of_squares
        for k in stats.distribution.keys():
            if k in self.distribution:
                self.distribution[k] = [z for z in map(lambda a, b: a + b,
                                                       stats.distribution[k],
                                                       self.distribution[k])]
            else:
                self.distribution[k] = stats.distribution[k]

    def __str__(self):
        return "min=%i, max=%i, avg=%f, std-dev=%f" % (self.min, self.max,
                                                       self.average(),
                                                       self.std_deviation())

    def print_distribution(self):
        keys = list(self.distribution.keys())
        keys.sort()
        for order in keys:
            row = self.distribution[order]
            # order=0, index=0 is special case as it is < 1.0, for all orders >
            # 0, index 0 is ignored since everthing < 10^order is accounted for
            # in index 9 of the (order - 1) row
            index = 0 if order == 0 else 1
            while index < len(row):
                print("[%d..<%d):  %d" %
                      ((10 ** int(order)) * index,
                       (10 ** int(order)) * (index + 1),
                       row[index]))
                index += 1

class TestResults(object):
    __test__ = False  # not a pytest class

    """Client results of a test run.
    """
    def __init__(self, start_time=None, stop_time=None, latency=None,
                 msgs_ok=0, msgs_fail=0, errors=None):
        super(TestResults, self).__init__()
        self.start_time = start_time
        self.stop_time = stop_time
        self.latency = latency or Stats()
        self.msgs_ok = msgs_ok  # count of successful msg transfers
        self.msgs_fail = msgs_fail  # count of failed msg transfers
        self.errors = errors or dict()  # error msgs and counts

    @classmethod
    def from_dict(cls, values):
        if 'latency' in values:
            values['latency'] = Stats.from_dict(values['latency'])
        if 'errors' in values:
            values['errors'] = values['errors'].copy()
        return TestResults(**values)

    def to_dict(self):
        new_dict = dict()
        for a in ['start_time', 'stop_time', 'msgs_ok', 'msgs_fail']:
            new_dict[a] = getattr(self, a)
        new_dict['latency'] = self.latency.to_dict()
        new_dict['errors'] = self.errors.copy()
        return new_dict

    def error(self, reason):
        key = str(reason)
        self.errors[key] = self.errors.get(key, 0) + 1

    def reset(self):
        self.__init__()

    def merge(self, results):
        self.start_time = (min(self.start_time, results.start_time)
                           if self.start_time and results.start_time
                           else (self.start_time or results.start_time))
        self.stop_time = (max(self.stop_time, results.stop_time)
                              if self.stop_time and results.stop_time
                          else (self.stop_time or results.stop_time))
        self.msgs_ok += results.msgs_ok
        self.msgs_fail += results.msgs_fail
        self.latency.merge(results.latency)
        for err in results.errors:
            self.errors[err] = self.errors.get(err, 0) + results.errors[err]

    def print_results(self):
        if self.msgs_fail:
            print("Error: %d message transfers failed"
                  % self.msgs_fail)
        if self.errors:
            print("Error: errors detected:")
            for err in self.errors:
                print("  '%s' (occurred %d times)" % (err, self.errors[err]))

        total = self.msgs_ok + self.msgs_fail
        print("Total Messages: %d" % total)

        delta_time = self.stop_time - self.start_time
        print("Test Interval: %f - %f (%f secs)" % (self.start_time,
                                                    self.stop_time,
                                                    delta_time))

        if delta_time > 0.0:
            print("Aggregate throughput: %f msgs/sec" % (float(total)/delta_time))

        latency = self.latency
        if latency.count:
            print("Latency %d samples (msecs): Average %f StdDev %f"
                  " Min %f Max %f"
                  % (latency.count,
                     latency.average(), latency.std_deviation(),
                     latency.min, latency.max))
            print("Latency Distribution: ")
            latency.print_distribution()


def load_stats(param):
    """Loads the stats for the controller output file."""
    try:
        all_controller = path.join(RESULT_PATH, param["backup_dir"], "*controller*.log")
        all_controller_docker = path.join(RESULT_PATH, param["backup_dir"], "*controller*_docker.log")
        # beware of the files _docker.log that would also match
        # and contains the global stats in a human readable format.
        allfiles = glob.glob(all_controller)
        alldocker = glob.glob(all_controller_docker)
        controller_logs = set(allfiles) - set(alldocker)

        stats_clients = {}
        stats_servers = {}
        # We build aggregates on all shards
        for controller_log in controller_logs:
            with open(controller_log) as f:
                a = f.readlines()
                # NOTE make sure rpc client|server names are different accros shards
                stats_clients.update(json.loads(a[0]))
                stats_servers.update(json.loads(a[1]))
        return stats_clients, stats_servers
    except:
        return False
    
def build_agg_results(results):
    agg = TestResults()
    for result in results:
        result["latency"] = Stats(**result["latency"])
        agg.merge(TestResults(**result))
        
    duration = agg.stop_time - agg.start_time
    total = agg.msgs_ok + agg.msgs_fail
    rate = float(total)/duration
    result = agg.to_dict()
    result["rate"] = rate
    result["latency_avg"] = agg.latency.average()
    result["latency_stdev"] = agg.latency.std_deviation()
    return result

def build_msgs_stats(results, msg_type):
    # NOTE(msimonin): we don't expect a TestResult here
    msgs = [r[msg_type] for r in results]
    return {
        "mean": statistics.mean(msgs),
        #"stdev": statistics.stdev(msgs),
        "min": min(msgs),
        "max": max(msgs)
    }

def augment(mydict, myparams, in_key, out_key=None):
    out_key = out_key or in_key
    mydict.update({out_key: [p[in_key] for p in myparams]})


def notebook_params() -> list[dict]:
    """The notebook's PARAMS computation, verbatim in substance."""
    with open(path.join(RESULT_PATH, "params.json")) as f:
        params = json.load(f)
    PARAMS = []
    for param in params:
        stats = load_stats(param)
        if not stats:
            continue
        clients, servers = stats
        param["_ombt_clients"] = len(clients.values())
        param["_ombt_servers"] = len(servers.values())
        param["_ombt_msgs_sent_ok"] = build_msgs_stats(clients.values(), "msgs_ok")
        param["_ombt_msgs_received_ok"] = build_msgs_stats(servers.values(), "msgs_ok")
        param["_ombt_msgs_sent_fail"] = build_msgs_stats(clients.values(), "msgs_fail")
        param["_ombt_msgs_received_fail"] = build_msgs_stats(servers.values(), "msgs_fail")
        param["_agg_servers"] = build_agg_results(servers.values())
        param["_agg_clients"] = build_agg_results(clients.values())
        PARAMS.append(param)
    return PARAMS


# fmt: on
# ---- tests ------------------------------------------------------------------------------


def _normalise(agg: dict) -> dict:
    """The notebook keeps distribution keys as str (from JSON); ours are ints."""
    out = copy.deepcopy(agg)
    out["latency"]["distribution"] = {int(k): v for k, v in out["latency"]["distribution"].items()}
    return out


def test_aggregates_equal_the_notebook() -> None:
    reference = notebook_params()
    ours = read_campaign(DATA)
    assert [it.name for it in ours] == [p["backup_dir"] for p in reference]
    assert len(ours) == 3
    for it, ref in zip(ours, reference, strict=True):
        mine = it.summary()
        for key in (
            "_ombt_clients",
            "_ombt_servers",
            "_ombt_msgs_sent_ok",
            "_ombt_msgs_received_ok",
            "_ombt_msgs_sent_fail",
            "_ombt_msgs_received_fail",
        ):
            assert mine[key] == ref[key], key
        for side in ("_agg_servers", "_agg_clients"):
            theirs = _normalise(ref[side])
            for key in ("start_time", "stop_time", "msgs_ok", "msgs_fail", "errors"):
                assert mine[side][key] == theirs[key], (side, key)
            # the notebook merges shards in set order: float sums may differ in the last bit
            lat, ref_lat = mine[side]["latency"], theirs["latency"]
            for key in ("min", "max", "count", "distribution"):
                assert lat[key] == ref_lat[key], (side, key)
            for key in ("total", "sum_of_squares"):
                assert lat[key] == pytest.approx(ref_lat[key], rel=1e-12), (side, key)
            for key in ("rate", "latency_avg", "latency_stdev"):
                assert mine[side][key] == pytest.approx(theirs[key], rel=1e-12), (side, key)


def test_points_for_influx() -> None:
    points = campaign_points(DATA, run="legacy")
    tests = [p for p in points if p.measurement == "wally_test"]
    assert len(tests) == 3
    assert json.loads(tests[0].fields["params"])["nbr_clients"] == 2
    reference = notebook_params()
    merged = {
        (p.tags["test"], p.tags["side"]): p.fields
        for p in points
        if p.measurement == "rpc" and p.tags["agent"] == "all"
    }
    for ref in reference:
        client = merged[(ref["backup_dir"] + "/summary", "client")]
        assert client["rate"] == pytest.approx(ref["_agg_clients"]["rate"])
        assert client["lat_mean"] == pytest.approx(ref["_agg_clients"]["latency_avg"])
        assert client["lat_stddev"] == pytest.approx(ref["_agg_clients"]["latency_stdev"])
        assert client["msgs_ok"] == ref["_agg_clients"]["msgs_ok"]
    # failures by ombt's error text: merged per side as the notebook merges them, and per agent
    errors: dict[tuple[str, str, str], dict[str, int]] = {}
    for p in points:
        if p.measurement == "rpc_errors":
            key = (p.tags["test"], p.tags["side"], p.tags["agent"])
            errors.setdefault(key, {})[p.tags["error_type"]] = p.fields["count"]
    assert errors, "the test data has failed calls"
    for ref in reference:
        test = ref["backup_dir"] + "/summary"
        for side, agg in (("client", "_agg_clients"), ("server", "_agg_servers")):
            assert errors.get((test, side, "all"), {}) == _normalise(ref[agg])["errors"]
    for it in read_campaign(DATA):
        for name, result in it.clients.items():
            assert errors.get((it.name + "/summary", "client", name), {}) == result["errors"]
    for p in points:
        encode_point(p)


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(OmbtFormatError, match="params.json: not found"):
        read_campaign(tmp_path)
    log = tmp_path / "x-controller.log"
    log.write_text('{"c": {"start_time": 1}}\n{}\n')
    with pytest.raises(
        OmbtFormatError, match=r"x-controller.log:1: clients 'c' has no 'stop_time'"
    ):
        read_controller_log(log)
    log.write_text("{}\n")
    with pytest.raises(OmbtFormatError, match="expected 2 JSON lines"):
        read_controller_log(log)


def run_cli(module: str, args: list[str], influx, tmp_path: Path):
    """One of the console scripts against the test's database, in a subprocess."""
    import os
    import subprocess
    import sys

    return subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            *args,
            "--influx-url",
            influx.url,
            "--database",
            influx.database,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "WALLY_STATE_DIR": str(tmp_path / "state")},
    )


def test_cli_ingest_reads_back_the_notebook_aggregates(influx, tmp_path: Path) -> None:
    r = run_cli("collector", ["ingest", "ombt", str(DATA), "--run", "legacy"], influx, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "imported 3 iteration(s)" in r.stderr
    merged = influx.query_df("SELECT * FROM rpc WHERE run = 'legacy' AND agent = 'all'")
    hist = influx.query_df("SELECT * FROM rpc_hist WHERE run = 'legacy'")
    per_agent = influx.query_df("SELECT * FROM rpc WHERE run = 'legacy' AND agent != 'all'")
    for ref in notebook_params():
        test = ref["backup_dir"] + "/summary"
        for side, agg, per in (
            ("client", ref["_agg_clients"], ref["_ombt_msgs_sent_ok"]),
            ("server", ref["_agg_servers"], ref["_ombt_msgs_received_ok"]),
        ):
            row = merged[(merged["test"] == test) & (merged["side"] == side)].iloc[0]
            assert row["msgs_ok"] == agg["msgs_ok"] and row["msgs_fail"] == agg["msgs_fail"]
            assert row["rate"] == pytest.approx(agg["rate"], rel=1e-12)
            assert row["lat_mean"] == pytest.approx(agg["latency_avg"], rel=1e-12)
            assert row["lat_stddev"] == pytest.approx(agg["latency_stdev"], rel=1e-12)
            agents = per_agent[(per_agent["test"] == test) & (per_agent["side"] == side)]
            assert (agents["msgs_ok"].min(), agents["msgs_ok"].max()) == (per["min"], per["max"])
            assert agents["msgs_ok"].mean() == pytest.approx(per["mean"])
            h = hist[(hist["test"] == test) & (hist["side"] == side)]
            dist = agg["latency"]["distribution"]
            expected = {
                str((i + 1) * 10 ** int(k)): n
                for k, row_ in dist.items()
                for i, n in enumerate(row_)
                if n
            }
            assert dict(zip(h["le"], h["count"], strict=True)) == expected
