"""Every measurement Wally writes, declared once.

Node measurements copy Telegraf's names, field names and field *types* exactly: InfluxDB
rejects a field whose type changes, so data from our SSH sensors and from Telegraf agents
must be interchangeable point for point. Dashboards and analysis read names from here
instead of repeating strings, and the writer validates every point against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """How a field evolves: counters only grow (rates come from deltas), gauges are levels."""

    COUNTER = "counter"
    GAUGE = "gauge"
    INFO = "info"


# Tag keys shared by every measurement they apply to. Telegraf's `host`, `name` and
# `interface` are renamed to these by the generated Telegraf configs.
TAG_NODE = "node"
TAG_ROLE = "role"
TAG_DEVICE = "device"
TAG_DEVICE_ROLE = "device_role"
COMMON_TAGS = (TAG_NODE, TAG_ROLE)

FieldType = type[int] | type[float] | type[str] | type[bool]


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    unit: str
    kind: Kind
    doc: str = ""


@dataclass(frozen=True)
class Measurement:
    name: str
    tags: tuple[str, ...]
    fields: dict[str, Field]
    doc: str
    source: str = "telegraf"
    # Measurements such as Telegraf's `ceph` have open-ended field names (one per perf
    # counter); every such field has this type.
    dynamic_type: FieldType | None = None
    dynamic_kind: Kind = Kind.GAUGE
    dynamic_unit: str = ""

    def field(self, name: str) -> Field | None:
        found = self.fields.get(name)
        if found is None and self.dynamic_type is not None:
            return Field(name, self.dynamic_type, self.dynamic_unit, self.dynamic_kind)
        return found

    def counters(self) -> list[str]:
        return [f.name for f in self.fields.values() if f.kind is Kind.COUNTER]


REGISTRY: dict[str, Measurement] = {}


def _fields(spec: Iterable[tuple]) -> dict[str, Field]:
    out: dict[str, Field] = {}
    for item in spec:
        out[item[0]] = Field(*item)
    return out


def register(
    name: str,
    tags: Iterable[str],
    fields: Iterable[tuple],
    doc: str,
    source: str = "telegraf",
    **extra,
) -> Measurement:
    if name in REGISTRY:
        raise ValueError(f"measurement {name!r} is declared twice")
    m = Measurement(name, tuple(tags), _fields(fields), doc, source, **extra)
    REGISTRY[name] = m
    return m


def get(name: str) -> Measurement:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown measurement {name!r}; known: {known}") from None


def all_measurements() -> Iterator[Measurement]:
    return iter(REGISTRY.values())


C, G, INFO = Kind.COUNTER, Kind.GAUGE, Kind.INFO

# --- node measurements (Telegraf inputs, same names and types) ------------------------

DISKIO = register(
    "diskio",
    (*COMMON_TAGS, TAG_DEVICE, TAG_DEVICE_ROLE),
    [
        ("reads", int, "ops", C, "reads completed"),
        ("writes", int, "ops", C, "writes completed"),
        ("read_bytes", int, "bytes", C),
        ("write_bytes", int, "bytes", C),
        ("read_time", int, "ms", C, "time spent reading"),
        ("write_time", int, "ms", C, "time spent writing"),
        ("io_time", int, "ms", C, "time the device had I/O in flight (utilisation)"),
        ("weighted_io_time", int, "ms", C, "queue-depth weighted I/O time"),
        ("merged_reads", int, "ops", C),
        ("merged_writes", int, "ops", C),
        ("iops_in_progress", int, "ops", G, "I/Os in flight at sample time"),
        ("io_util", float, "percent", G, "io_time delta / interval"),
        ("io_await", float, "ms", G, "(read_time + write_time) delta / ops delta"),
        ("io_svctm", float, "ms", G, "io_time delta / ops delta"),
    ],
    "Block device counters from /proc/diskstats (Telegraf inputs.diskio).",
)

CPU = register(
    "cpu",
    (*COMMON_TAGS, "cpu"),
    [
        (f"usage_{n}", float, "percent", G)
        for n in (
            "user",
            "system",
            "idle",
            "nice",
            "iowait",
            "irq",
            "softirq",
            "steal",
            "guest",
            "guest_nice",
        )
    ],
    "CPU time shares over the interval from /proc/stat, `cpu-total` and per core.",
)

_MEM_INT = (
    "total",
    "available",
    "used",
    "free",
    "buffered",
    "cached",
    "active",
    "inactive",
    "shared",
    "slab",
    "sreclaimable",
    "sunreclaim",
    "dirty",
    "write_back",
    "write_back_tmp",
    "mapped",
    "page_tables",
    "swap_total",
    "swap_free",
    "swap_cached",
    "commit_limit",
    "committed_as",
    "huge_pages_total",
    "huge_pages_free",
    "huge_page_size",
    "vmalloc_total",
    "vmalloc_used",
    "vmalloc_chunk",
    "high_total",
    "high_free",
    "low_total",
    "low_free",
)
MEM = register(
    "mem",
    COMMON_TAGS,
    [(n, int, "bytes", G) for n in _MEM_INT]
    + [("used_percent", float, "percent", G), ("available_percent", float, "percent", G)],
    "Memory from /proc/meminfo (Telegraf inputs.mem).",
)

NET = register(
    "net",
    (*COMMON_TAGS, TAG_DEVICE),
    [
        ("bytes_sent", int, "bytes", C),
        ("bytes_recv", int, "bytes", C),
        ("packets_sent", int, "packets", C),
        ("packets_recv", int, "packets", C),
        ("err_in", int, "packets", C),
        ("err_out", int, "packets", C),
        ("drop_in", int, "packets", C),
        ("drop_out", int, "packets", C),
        ("speed", int, "Mbit/s", INFO, "link speed, -1 when unknown"),
    ],
    "Network interface counters from /proc/net/dev (Telegraf inputs.net).",
)

_TCP_STATES = (
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
    "none",
)
NETSTAT = register(
    "netstat",
    COMMON_TAGS,
    [(f"tcp_{s}", int, "sockets", G) for s in _TCP_STATES] + [("udp_socket", int, "sockets", G)],
    "Socket counts by TCP state (Telegraf inputs.netstat).",
)

SYSTEM = register(
    "system",
    COMMON_TAGS,
    [
        ("load1", float, "", G),
        ("load5", float, "", G),
        ("load15", float, "", G),
        ("n_cpus", int, "cpus", INFO),
        ("n_users", int, "users", G),
        ("n_unique_users", int, "users", G),
        ("uptime", int, "s", G),
    ],
    "Load averages and uptime (Telegraf inputs.system).",
)

KERNEL = register(
    "kernel",
    COMMON_TAGS,
    [
        ("context_switches", int, "count", C),
        ("interrupts", int, "count", C),
        ("processes_forked", int, "count", C),
        ("boot_time", int, "s", INFO),
        ("disk_pages_in", int, "pages", C),
        ("disk_pages_out", int, "pages", C),
        ("entropy_avail", int, "bits", G),
    ],
    "Kernel counters from /proc/stat and /proc/vmstat (Telegraf inputs.kernel).",
)

PROCESSES = register(
    "processes",
    COMMON_TAGS,
    [
        (n, int, "processes", G)
        for n in (
            "running",
            "sleeping",
            "blocked",
            "zombies",
            "stopped",
            "paging",
            "dead",
            "idle",
            "parked",
            "unknown",
            "total",
            "total_threads",
        )
    ],
    "Process counts by state (Telegraf inputs.processes).",
)

PROCSTAT = register(
    "procstat",
    (*COMMON_TAGS, "process_name", "exe", "pattern", "pid"),
    [
        ("pid", int, "", INFO),
        ("cpu_time_user", float, "s", C),
        ("cpu_time_system", float, "s", C),
        ("cpu_time_iowait", float, "s", C, "block I/O delay (delayacct), in gopsutil's cpu total"),
        ("cpu_usage", float, "percent", G, "of one core over the interval"),
        ("memory_rss", int, "bytes", G),
        ("memory_vms", int, "bytes", G),
        ("memory_swap", int, "bytes", G),
        ("memory_data", int, "bytes", G),
        ("memory_stack", int, "bytes", G),
        ("memory_locked", int, "bytes", G),
        ("minor_faults", int, "count", C),
        ("major_faults", int, "count", C),
        ("num_threads", int, "threads", G),
        ("num_fds", int, "fds", G),
        ("read_bytes", int, "bytes", C),
        ("write_bytes", int, "bytes", C),
        ("read_count", int, "ops", C),
        ("write_count", int, "ops", C),
        ("voluntary_context_switches", int, "count", C),
        ("involuntary_context_switches", int, "count", C),
        ("created_at", int, "ns", INFO),
    ],
    "Per-process resources for processes matched by name or pattern (Telegraf inputs.procstat).",
)

CEPH = register(
    "ceph",
    (*COMMON_TAGS, "type", "id", "collection"),
    [],
    "Ceph daemon perf counters from admin sockets (Telegraf inputs.ceph): every field a "
    "float, nested keys joined by '.', e.g. op_w_latency.sum, op_w_latency.avgcount.",
    dynamic_type=float,
    dynamic_kind=C,
)

# Cluster-level Ceph (Telegraf inputs.ceph gather_cluster_stats): every field a float.
CEPH_POOL_STATS = register(
    "ceph_pool_stats",
    (*COMMON_TAGS, "name"),
    [
        (n, float, u, G)
        for n, u in (
            ("read_bytes_sec", "bytes/s"),
            ("write_bytes_sec", "bytes/s"),
            ("read_op_per_sec", "ops/s"),
            ("write_op_per_sec", "ops/s"),
            ("recovering_objects_per_sec", "objects/s"),
            ("recovering_bytes_per_sec", "bytes/s"),
            ("recovering_keys_per_sec", "keys/s"),
        )
    ],
    "Per pool client IO and recovery rates from `ceph osd pool stats` (tag name = pool).",
)

CEPH_PGMAP = register(
    "ceph_pgmap",
    COMMON_TAGS,
    [
        ("num_pgs", float, "pgs", G),
        ("data_bytes", float, "bytes", G),
        ("bytes_used", float, "bytes", G),
        ("bytes_avail", float, "bytes", G),
        ("bytes_total", float, "bytes", G),
        ("read_bytes_sec", float, "bytes/s", G),
        ("write_bytes_sec", float, "bytes/s", G),
        ("op_per_sec", float, "ops/s", G),
    ],
    "Cluster-wide PG and capacity summary from `ceph pg stat`.",
)

CEPH_PGMAP_STATE = register(
    "ceph_pgmap_state",
    (*COMMON_TAGS, "state"),
    [("count", float, "pgs", G)],
    "Number of PGs in each state combination (e.g. active+clean) from `ceph pg stat`.",
)

_OP_STAGES = ("receive", "queue", "pg", "execute", "reply")
CEPH_OP_STAGES = register(
    "ceph_op_stages",
    (*COMMON_TAGS, "type", "id", "op_type"),
    [
        ("ops", int, "ops", G, "ops that completed in the interval and were kept in history"),
        ("history_size", int, "ops", INFO, "how many ops the OSD keeps (the sample cap)"),
        ("duration_sum", float, "s", G),
        ("duration_max", float, "s", G),
    ]
    + [
        (f"{st}_{agg}", typ, unit, G)
        for st in _OP_STAGES
        for agg, typ, unit in (("sum", float, "s"), ("max", float, "s"), ("count", int, "ops"))
    ],
    "Where inside the OSD time goes, from `dump_historic_ops`: per interval and op type, "
    "stage durations of the ops Ceph kept (its slowest recent ops): receive = initiated->"
    "queued_for_pg, queue = ->reached_pg, pg = ->started, execute = ->op_commit (or done), "
    "reply = op_commit->done. Means are sum/count, derived in analysis.",
    source="wally",
)

CEPH_OPS_IN_FLIGHT = register(
    "ceph_ops_in_flight",
    (*COMMON_TAGS, "type", "id"),
    [
        ("num_ops", int, "ops", G, "ops the OSD is working on at sample time"),
        ("oldest_age", float, "s", G, "age of the oldest op in flight, 0 if none"),
    ],
    "OSD ops in flight from `dump_ops_in_flight`.",
    source="wally",
)

RABBITMQ_OVERVIEW = register(
    "rabbitmq_overview",
    (*COMMON_TAGS, "url"),
    [
        (n, int, "count", G)
        for n in (
            "channels",
            "connections",
            "consumers",
            "exchanges",
            "queues",
            "messages",
            "messages_ready",
            "messages_unacked",
        )
    ]
    + [
        (n, int, "messages", C)
        for n in (
            "messages_acked",
            "messages_delivered",
            "messages_delivered_get",
            "messages_published",
            "return_unroutable",
        )
    ]
    + [
        ("clustering_listeners", int, "listeners", G),
        ("amqp_listeners", int, "listeners", G),
        ("return_unroutable_rate", float, "msg/s", G),
    ],
    "Broker-wide counts from the management API /api/overview (Telegraf inputs.rabbitmq).",
)

# /api/nodes/NAME/memory breakdown, as Telegraf names it (`mem_` + key, plus mem_total).
RABBITMQ_MEMORY_KINDS = (
    "connection_readers",
    "connection_writers",
    "connection_channels",
    "connection_other",
    "queue_procs",
    "queue_slave_procs",
    "plugins",
    "other_proc",
    "metrics",
    "mgmt_db",
    "mnesia",
    "other_ets",
    "binary",
    "msg_index",
    "code",
    "atom",
    "other_system",
    "allocated_unused",
    "reserved_unallocated",
    "total",
)
RABBITMQ_NODE = register(
    "rabbitmq_node",
    (*COMMON_TAGS, "url", "rabbit_node"),
    [
        ("mem_used", int, "bytes", G),
        ("mem_limit", int, "bytes", INFO),
        ("mem_alarm", int, "bool", G),
        ("disk_free", int, "bytes", G),
        ("disk_free_limit", int, "bytes", INFO),
        ("disk_free_alarm", int, "bool", G),
        ("fd_used", int, "fds", G),
        ("fd_total", int, "fds", INFO),
        ("sockets_used", int, "sockets", G),
        ("sockets_total", int, "sockets", INFO),
        ("proc_used", int, "processes", G),
        ("proc_total", int, "processes", INFO),
        ("run_queue", int, "processes", G),
        ("uptime", int, "ms", G),
        ("running", int, "bool", G),
        ("mnesia_disk_tx_count", int, "transactions", C),
        ("mnesia_disk_tx_count_rate", float, "tx/s", G),
        ("mnesia_ram_tx_count", int, "transactions", C),
        ("mnesia_ram_tx_count_rate", float, "tx/s", G),
        ("gc_num", int, "count", C),
        ("gc_num_rate", float, "1/s", G),
        ("gc_bytes_reclaimed", int, "bytes", C),
        ("gc_bytes_reclaimed_rate", float, "bytes/s", G),
        ("io_read_avg_time", float, "ms", G),
        ("io_read_avg_time_rate", float, "", G),
        ("io_read_bytes", int, "bytes", C),
        ("io_read_bytes_rate", float, "bytes/s", G),
        ("io_write_avg_time", float, "ms", G),
        ("io_write_avg_time_rate", float, "", G),
        ("io_write_bytes", int, "bytes", C),
        ("io_write_bytes_rate", float, "bytes/s", G),
    ]
    + [(f"mem_{n}", int, "bytes", G) for n in RABBITMQ_MEMORY_KINDS],
    "Per broker node resources from /api/nodes (Telegraf inputs.rabbitmq). Telegraf's "
    "`node` tag (the Erlang node) is stored as `rabbit_node`: `node` is ours.",
)

RABBITMQ_QUEUE = register(
    "rabbitmq_queue",
    (*COMMON_TAGS, "url", "queue", "vhost", "rabbit_node", "durable", "auto_delete"),
    [
        ("consumers", int, "count", G),
        ("consumer_utilisation", float, "ratio", G),
        ("idle_since", str, "", INFO, "when the queue went idle, as RabbitMQ prints it"),
        ("slave_nodes", int, "nodes", G),
        ("synchronised_slave_nodes", int, "nodes", G),
        ("memory", int, "bytes", G),
        ("message_bytes_ram", int, "bytes", G),
        ("message_bytes_persist", int, "bytes", G),
        ("message_bytes", int, "bytes", G),
        ("message_bytes_ready", int, "bytes", G),
        ("message_bytes_unacked", int, "bytes", G),
        ("messages", int, "messages", G),
        ("messages_ready", int, "messages", G),
        ("messages_unack", int, "messages", G),
        ("messages_ack", int, "messages", C),
        ("messages_ack_rate", float, "msg/s", G),
        ("messages_deliver", int, "messages", C),
        ("messages_deliver_rate", float, "msg/s", G),
        ("messages_deliver_get", int, "messages", C),
        ("messages_deliver_get_rate", float, "msg/s", G),
        ("messages_publish", int, "messages", C),
        ("messages_publish_rate", float, "msg/s", G),
        ("messages_redeliver", int, "messages", C),
        ("messages_redeliver_rate", float, "msg/s", G),
    ],
    "Per queue depth and rates from /api/queues (Telegraf inputs.rabbitmq).",
)

# --- Wally's own measurements ---------------------------------------------------------

WALLY_NODE = register(
    "wally_node",
    (*COMMON_TAGS,),
    [
        ("roles", str, "", INFO, "all roles of the node, comma separated"),
        ("cores", int, "cpus", INFO),
        ("cpu_model", str, "", INFO),
        ("memory", int, "bytes", INFO),
        ("kernel", str, "", INFO),
        ("os", str, "", INFO),
        ("info", str, "json", INFO, "full discovered hardware/software description"),
    ],
    "One record per node per run: what the node is.",
    source="wally",
)

WALLY_DEVICE = register(
    "wally_device",
    (*COMMON_TAGS, TAG_DEVICE, TAG_DEVICE_ROLE, "kind"),
    [
        ("size", int, "bytes", INFO),
        ("model", str, "", INFO),
        ("rotational", bool, "", INFO),
        ("scheduler", str, "", INFO),
        ("mountpoint", str, "", INFO),
        ("speed", int, "Mbit/s", INFO),
    ],
    "One record per device (kind=disk|nic) per node: the tag index analysis resolves roles by.",
    source="wally",
)

WALLY_EVENT = register(
    "wally_event",
    (*COMMON_TAGS, "kind"),
    [
        ("message", str, "", INFO),
        ("gap_seconds", float, "s", G, "how long a sensor stream was interrupted"),
    ],
    "Things that happened: a sensor connection lost and re-established, a node failing.",
    source="wally",
)

WALLY_TEST = register(
    "wally_test",
    ("run", "test", "node", "kind", "status"),
    [
        ("start", int, "ns", INFO),
        ("end", int, "ns", INFO),
        ("iteration", int, "", INFO),
        ("params", str, "json", INFO),
        ("ramp", float, "s", INFO),
    ],
    "One record per test iteration and node: its window and parameters. Sensor data for "
    "a test is selected by this window, never by a run tag.",
    source="wally",
)

FIO = register(
    "fio",
    ("run", "test", "node", "op", "bs", "qd"),
    [
        ("iops", float, "IOPS", G),
        ("bw", float, "KiB/s", G),
    ],
    "Per second client IOPS and bandwidth from fio's epoch-stamped logs.",
    source="wally",
)

FIO_LAT = register(
    "fio_lat",
    ("run", "test", "node", "op", "bs", "qd"),
    [
        ("p50", float, "ns", G),
        ("p90", float, "ns", G),
        ("p95", float, "ns", G),
        ("p99", float, "ns", G),
        ("p99_9", float, "ns", G),
        ("count", int, "ios", G, "completions in the interval"),
    ],
    "Per second completion latency percentiles from fio's clat histogram logs.",
    source="wally",
)

FIO_HIST = register(
    "fio_hist",
    ("run", "test", "node", "op", "le"),
    [("count", int, "ios", G)],
    "Per second completion latency histogram, coarse log2 buckets (tag le = bucket top, ns).",
    source="wally",
)

FIO_HIST_FINE = register(
    "fio_hist_fine",
    ("run", "test", "node", "op"),
    [
        ("bins", str, "", G, "non-empty bins as 'index:count' pairs joined by ','"),
        ("coarseness", int, "", INFO, "fio log_hist_coarseness: 1856 >> it bins"),
        ("count", int, "ios", G, "completions in the interval"),
    ],
    "Per second completion latency histogram in fio's own bins, sparse: summed over nodes "
    "and seconds it gives percentiles equal to fio's JSON (fio_hist is too coarse).",
    source="wally",
)

FIO_SUMMARY = register(
    "fio_summary",
    ("run", "test", "node", "op", "bs", "qd"),
    [
        ("iops", float, "IOPS", G),
        ("bw_bytes", float, "bytes/s", G),
        ("io_bytes", int, "bytes", G),
        ("runtime_ms", int, "ms", G),
        ("clat_mean", float, "ns", G),
        ("clat_stddev", float, "ns", G),
        ("clat_min", int, "ns", G),
        ("clat_max", int, "ns", G),
        ("clat_p50", float, "ns", G),
        ("clat_p95", float, "ns", G),
        ("clat_p99", float, "ns", G),
        ("clat_p99_9", float, "ns", G),
        ("usr_cpu", float, "percent", G),
        ("sys_cpu", float, "percent", G),
        ("ctx", int, "count", G),
    ],
    "Per iteration result from fio's own json+ output, per node and direction.",
    source="wally",
)

RPC = register(
    "rpc",
    ("run", "test", "node", "agent", "side", "call_type"),
    [
        ("msgs_ok", int, "messages", G),
        ("msgs_fail", int, "messages", G),
        ("rate", float, "msg/s", G),
        ("lat_p50", float, "ms", G),
        ("lat_p90", float, "ms", G),
        ("lat_p99", float, "ms", G),
        ("lat_p99_9", float, "ms", G),
        ("lat_mean", float, "ms", G),
        ("lat_max", float, "ms", G),
        ("lat_min", float, "ms", G),
        ("lat_stddev", float, "ms", G, "population standard deviation, as ombt computes it"),
    ],
    "Per second (and, with test=…/summary, per iteration) RPC agent results.",
    source="wally",
)

RPC_ERRORS = register(
    "rpc_errors",
    ("run", "test", "node", "agent", "side", "call_type", "error_type"),
    [("count", int, "messages", G, "failed messages of this exception type")],
    "RPC messages that failed, by exception type (tag error_type): per second and, with "
    "test=…/summary, per iteration, per agent and merged (agent=all). Only types that "
    "occurred are written.",
    source="wally",
)

RPC_HIST = register(
    "rpc_hist",
    ("run", "test", "node", "side", "call_type", "le"),
    [
        ("count", int, "messages", G),
        ("lower", float, "ms", INFO, "the bucket's lower bound (tag le: its upper bound, ms)"),
    ],
    "Per iteration latency distribution of all agents of a side in ombt's buckets (power "
    "of ten x leading digit), from the merged HDR histogram or a legacy ombt campaign.",
    source="wally",
)
