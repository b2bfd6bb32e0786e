"""The runtime data model shared by every stage: quality codes, tag metadata, sample batches.

Samples move between stages as :class:`SampleBatch` objects: one per poll (one device,
one source timestamp), holding numpy arrays of tag ids, values and quality codes. No stage
creates one Python object per value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class Quality(IntEnum):
    """Quality of a sample; maps one to one onto an OPC UA StatusCode (see ``STATUS_CODES``)."""

    GOOD = 0
    UNCERTAIN_LAST_USABLE = 1  # stale: the last good value, kept while a refresh is overdue
    BAD_NO_COMMUNICATION = 2  # the device is offline
    BAD_COMM_ERROR = 3  # this poll failed (timeout, exception response, bad frame)
    BAD_CONFIG_ERROR = 4  # decode or plugin failure
    BAD_OUT_OF_RANGE = 5  # decoded value outside the tag's configured range
    BAD_SENSOR_FAILURE = 6  # the device's own "no valid value": a declared sentinel (not implemented, error value)

    @property
    def status_code(self) -> int:
        return STATUS_CODES[self]

    @property
    def is_good(self) -> bool:
        return self is Quality.GOOD


#: OPC UA StatusCode values (checked against asyncua.ua.StatusCodes in the tests).
STATUS_CODES: dict[Quality, int] = {
    Quality.GOOD: 0x00000000,
    Quality.UNCERTAIN_LAST_USABLE: 0x40900000,
    Quality.BAD_NO_COMMUNICATION: 0x80310000,
    Quality.BAD_COMM_ERROR: 0x80050000,
    Quality.BAD_CONFIG_ERROR: 0x80890000,
    Quality.BAD_OUT_OF_RANGE: 0x803C0000,
    Quality.BAD_SENSOR_FAILURE: 0x808C0000,
}

#: Names used in logs, the InfluxDB ``q_*`` fields' documentation and dashboards.
QUALITY_NAMES: dict[int, str] = {
    Quality.GOOD: "Good",
    Quality.UNCERTAIN_LAST_USABLE: "Uncertain_LastUsableValue",
    Quality.BAD_NO_COMMUNICATION: "Bad_NoCommunication",
    Quality.BAD_COMM_ERROR: "Bad_CommunicationError",
    Quality.BAD_CONFIG_ERROR: "Bad_ConfigurationError",
    Quality.BAD_OUT_OF_RANGE: "Bad_OutOfRange",
    Quality.BAD_SENSOR_FAILURE: "Bad_SensorFailure",
}

QUALITY_DTYPE = np.uint8
VALUE_DTYPE = np.float64
TAG_ID_DTYPE = np.int32


@dataclass(frozen=True, slots=True)
class TagInfo:
    """Everything downstream stages need to know about one tag (built once from the config)."""

    id: int  # index into Plant.tags; stable for the life of one loaded configuration
    device: str
    name: str
    bus: str
    dtype: str  # the engineering value's type: bool, int16..uint64 (unscaled integers), float32, float64, string
    unit: str | None = None
    low: float | None = None  # engineering range (EURange); values outside are Bad_OutOfRange
    high: float | None = None
    writable: bool = False
    deadband: float = 0.0  # absolute, in engineering units; applied at the source by outputs
    description: str = ""
    enum: dict[int, str] | None = None  # enumerated states (status words, modes)
    bits: dict[int, str] | None = None  # named bits of an integer value: its text lists the set ones
    interval_ms: int = 1000
    group: str = "default"  # tag group used to lay out dashboards
    plugin: str | None = None
    raw_dtype: str | None = None  # the type the device holds, when it differs (a scaled int16 is float64 here)
    resolution: float | None = None  # smallest step of the value (a scale of 0.1: 0.1); None: continuous
    type_range: tuple[float, float] | None = None  # what the device's type can hold, in engineering units,
    # when no range is configured (a uint16 x 0.1: 0..6553.5; from the driver): the OPC UA EURange

    @property
    def key(self) -> str:
        """``device.tag``: the OPC UA string NodeId and the unique name across the site."""
        return f"{self.device}.{self.name}"

    def text_of(self, value: float) -> str | None:
        """The state name of an enumeration, or the names of the set bits of a bit field; else None."""
        if value != value or not float(value).is_integer():
            return None
        if self.enum is not None:
            return self.enum.get(int(value))
        if self.bits is not None:
            return ",".join(name for bit, name in sorted(self.bits.items()) if int(value) >> bit & 1)
        return None

    @property
    def is_discrete(self) -> bool:
        return self.dtype == "bool" or self.enum is not None


@dataclass(slots=True)
class SampleBatch:
    """What one poll of one device produced: all values share one source timestamp.

    ``values`` is float64 for every numeric and boolean tag (bools are 0.0/1.0); string tags
    carry NaN there and their text in ``texts`` (tag id -> str). Values whose quality is not
    Good are NaN unless the stage that set the quality kept a last usable value.
    """

    device: str
    ts_ns: int  # wall clock, taken when the response arrived
    tag_ids: np.ndarray  # int32
    values: np.ndarray  # float64
    quality: np.ndarray  # uint8 (Quality)
    texts: dict[int, str] | None = None

    def __post_init__(self) -> None:
        n = len(self.tag_ids)
        if len(self.values) != n or len(self.quality) != n:
            raise ValueError("SampleBatch arrays must have the same length")

    def __len__(self) -> int:
        return len(self.tag_ids)

    @classmethod
    def bad(cls, device: str, ts_ns: int, tag_ids: np.ndarray, quality: Quality) -> SampleBatch:
        """A batch in which every tag has the same bad quality and no value."""
        n = len(tag_ids)
        return cls(
            device=device,
            ts_ns=ts_ns,
            tag_ids=np.asarray(tag_ids, dtype=TAG_ID_DTYPE),
            values=np.full(n, np.nan, dtype=VALUE_DTYPE),
            quality=np.full(n, int(quality), dtype=QUALITY_DTYPE),
        )


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    name: str
    bus: str
    address: str  # where the device is on its bus, in words ("unit 3"): from its driver
    plugin: str | None
    plugin_version: str | None
    tag_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BusInfo:
    name: str
    kind: str  # modbus_tcp, modbus_rtu, rtu_over_tcp
    devices: tuple[str, ...]


@dataclass(slots=True)
class Plant:
    """The site as the runtime sees it: buses, devices and a flat tag table indexed by id."""

    site: str
    buses: list[BusInfo] = field(default_factory=list)
    devices: list[DeviceInfo] = field(default_factory=list)
    tags: list[TagInfo] = field(default_factory=list)

    def tag_by_key(self) -> dict[str, TagInfo]:
        return {t.key: t for t in self.tags}

    def device(self, name: str) -> DeviceInfo:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)


class WriteStatus(IntEnum):
    """Outcome of a write to a device tag, whoever asked (OPC UA, a rule, the API, the CLI)."""

    GOOD = 0
    BAD_OUT_OF_RANGE = 1  # the value is outside the tag's range, or the device refused it (exception 3)
    BAD_COMM_ERROR = 2  # the device answered with an error, or the read-back differs
    BAD_TIMEOUT = 3  # no answer in time
    BAD_USER_ACCESS_DENIED = 4  # the caller's role may not write
    BAD_NOT_WRITABLE = 5  # the tag is not writable
    BAD_TYPE_MISMATCH = 6  # the value cannot be converted to the tag's type
    BAD_CONFIG_ERROR = 7  # the device or its plugin is in error
    BAD_TOO_MANY_OPERATIONS = 8  # refused by a rate limit (HTTP 429)
    BAD_NODE_ID_UNKNOWN = 9  # no such tag


@dataclass(frozen=True, slots=True)
class WriteResult:
    status: WriteStatus
    message: str = ""
    read_back: float | str | None = None  # the value read back from the device after the write

    @property
    def ok(self) -> bool:
        return self.status is WriteStatus.GOOD


@dataclass(slots=True)
class WindowBatch:
    """Closed aggregation windows of one window length, one row per (tag, window).

    ``stats`` maps a statistic name (count, min, max, mean, first, last, sum, std, twa,
    good_ratio, bad_count) to an array with one entry per row.
    """

    window: str  # the configured label, e.g. "10s"
    window_ns: int
    tag_ids: np.ndarray  # int32
    start_ns: np.ndarray  # int64, wall-clock aligned window start
    stats: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.tag_ids)


class DeviceState(IntEnum):
    CONNECTING = 0  # not polled successfully yet
    ONLINE = 1
    OFFLINE = 2  # stopped answering: probed at a back-off interval
    QUARANTINED = 3  # configuration or plugin error: not polled
    DISABLED = 4


@dataclass(slots=True)
class DeviceDiagnostics:
    """Counters and state of one device, updated by its poller, read by every output."""

    name: str
    bus: str
    state: DeviceState = DeviceState.CONNECTING
    polls_ok: int = 0
    polls_failed: int = 0
    requests: int = 0
    timeouts: int = 0
    exceptions: dict[int, int] = field(default_factory=dict)  # Modbus exception code -> count
    crc_errors: int = 0  # bad frames: CRC errors, garbage, wrong length
    overruns: int = 0  # polls that started late by more than one interval
    hook_errors: int = 0  # plugin hook calls that raised or returned nonsense
    hook_slow: int = 0  # plugin hook calls that outran their budget
    hooks_disabled: int = 0  # hooks switched off (repeated overruns, SystemExit, hung): their tags Bad_ConfigurationError
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0
    jitter_p99_ms: float = 0.0  # how late poll cycles start against their schedule
    holes: int = 0  # learned address holes (exception 2) currently remembered and re-probed
    holes_healed: int = 0  # learned holes forgotten because their addresses read again
    unreadable_points: int = 0  # points refused even alone: Bad_ConfigurationError until a re-probe reads them
    holes_detail: list[str] = field(default_factory=list)  # e.g. "holding 4+3 unreadable (2 refusals)"
    last_error: str = ""
    last_error_ns: int = 0
    last_ok_ns: int = 0
    plugin: str | None = None
    plugin_version: str | None = None
