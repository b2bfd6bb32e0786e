"""The HTTP API (FastAPI): devices, tags, history, writes, alarms, rules, health, metrics, status page.

Every route reads the live appliance through the :class:`edge.intelligence.service.Intelligence` object
(so a configuration reload is seen at once). Authentication: ``Authorization: Bearer <token>``
(:mod:`edge.api.tokens`), roles viewer (read) and operator (also write, acknowledge, shelve).
Writes go through the appliance's one write path (role check, audit log) and are rate-limited
per token. Errors are JSON ``{"detail": "..."}`` saying what is wrong and what is allowed;
nothing the caller sends can produce a 5xx, except a device that fails a write (502/504).
"""
import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import numpy as np
import swagger_ui_bundle
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from edge.aggregate import downsample_arrays
from edge.api.limits import BodyLimit
from edge.core.model import QUALITY_NAMES, DeviceState, TagInfo, WriteStatus
from edge.intelligence.alarms import AlarmError
from edge.intelligence.expressions import INTEGER_TYPES
from edge.security.users import Role

if TYPE_CHECKING:
    from edge.intelligence.service import Intelligence
    from edge.outputs.manager import Outputs

STATIC = Path(__file__).parent / "static"
SWAGGER_UI = Path(str(swagger_ui_bundle.swagger_ui_path))  # the swagger-ui dist files, shipped by the package
SWAGGER_URL = "/static/swagger-ui"
MAX_NS = 2**62
INT_BOUNDS = {"int16": (-2**15, 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-2**31, 2**31 - 1),
              "uint32": (0, 2**32 - 1), "int64": (-2**63, 2**63 - 1), "uint64": (0, 2**64 - 1)}
WRITE_HTTP = {WriteStatus.GOOD: 200, WriteStatus.BAD_USER_ACCESS_DENIED: 403, WriteStatus.BAD_NOT_WRITABLE: 409,
              WriteStatus.BAD_OUT_OF_RANGE: 422, WriteStatus.BAD_TYPE_MISMATCH: 422,
              WriteStatus.BAD_CONFIG_ERROR: 409, WriteStatus.BAD_COMM_ERROR: 502, WriteStatus.BAD_TIMEOUT: 504,
              WriteStatus.BAD_TOO_MANY_OPERATIONS: 429, WriteStatus.BAD_NODE_ID_UNKNOWN: 404}


# ----------------------------------------------------------------------------- models


class Caller(BaseModel):
    name: str
    role: str


class TagOut(BaseModel):
    key: str = Field(description="device.tag")
    device: str
    name: str
    dtype: str
    unit: str | None
    writable: bool
    value: bool | int | float | str | None = Field(
        description="latest value in the tag's type (bools true/false, unscaled integers whole numbers, as in the "
        "history); null when there is none (never polled or NaN)")
    quality: str = Field(description="OPC UA quality name, e.g. Good, Bad_NoCommunication")
    quality_code: int
    ts_ns: int | None = Field(description="source timestamp, ns since the epoch (UTC)")
    state: str | None = Field(None, description="enum name of the value, for enumerated tags; the names of the "
                              "set bits (comma-separated), for tags with named bits")
    resolution: float | None = Field(None, description="smallest step of a scaled value (0.1: one decimal)")


class DeviceOut(BaseModel):
    name: str
    bus: str
    state: str
    polls_ok: int
    polls_failed: int
    requests: int
    timeouts: int
    crc_errors: int
    overruns: int = Field(0, description="poll cycles skipped because the one before overran its slot")
    jitter_p99_ms: float = Field(0.0, description="how late poll cycles start against their schedule (p99)")
    latency_p50_ms: float
    latency_p99_ms: float
    last_error: str
    last_ok_ns: int
    plugin: str | None
    line: str | None = None
    line_utilisation_pct: float | None = None
    holes: int = Field(0, description="learned address holes (exception 2), re-probed on a back-off")
    unreadable_points: int = Field(0, description="points refused even alone (Bad_ConfigurationError)")
    holes_detail: list[str] = Field(default_factory=list, description="each hole: table, span, refusals")


class WriteIn(BaseModel):
    value: bool | int | float | str = Field(description="the new value, in engineering units")


class WriteOut(BaseModel):
    tag: str
    ok: bool
    status: str
    message: str
    read_back: float | str | None


class AckIn(BaseModel):
    comment: str = Field("", max_length=500)


class ShelveIn(BaseModel):
    duration_s: float = Field(gt=0, le=7 * 86400, description="how long the alarm stays shelved")
    comment: str = Field("", max_length=500)


class ErrorOut(BaseModel):
    detail: str | list[Any] = Field(description="what is wrong and what is allowed (a list for schema errors)")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the request body is not valid JSON"},
    401: {"model": ErrorOut, "description": "no token or an unknown token"},
    403: {"model": ErrorOut, "description": "the token's role may not do this"},
    422: {"model": ErrorOut, "description": "the request does not match the schema, or the value cannot be used"},
    413: {"model": ErrorOut, "description": "the request body is larger than api.max_body_bytes"},
}


class HistoryOut(BaseModel):
    tag: str
    ts_ns: list[int]
    values: list[float | int | bool | str | None] = Field(
        description="engineering values in the tag's type (text for string tags); null where there is none")
    quality: list[int]
    raw_samples: int | None = Field(None, description="with max_points: how many raw samples the points were "
                                    "selected from")
    truncated: bool = Field(False, description="with max_points: the range held more raw samples than "
                            "api.history_downsample_max_samples; the points cover the oldest ones only")


# ----------------------------------------------------------------------------- helpers


def clean(v: Any) -> Any:
    """JSON has no NaN or infinity: such floats become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def tag_out(intel: "Intelligence", tag: TagInfo) -> TagOut:
    value, quality, ts = intel.app.store.get(tag.id)
    state = None
    if (tag.enum or tag.bits) and isinstance(value, float) and math.isfinite(value):
        state = tag.text_of(value)
    return TagOut(key=tag.key, device=tag.device, name=tag.name, dtype=tag.dtype, unit=tag.unit,
                  writable=tag.writable, value=value if isinstance(value, str) else engineering(tag, value),
                  quality=QUALITY_NAMES[int(quality)],
                  quality_code=int(quality), ts_ns=ts or None, state=state,
                  resolution=tag.resolution if tag.raw_dtype is not None else None)


def engineering(tag: TagInfo, value: float) -> float | int | bool | None:
    """A stored float64 as the tag's type: bools true/false, unscaled integers whole numbers, NaN null."""
    if not math.isfinite(value):
        return None
    if tag.dtype == "bool":
        return value != 0.0
    if tag.dtype in INTEGER_TYPES and value.is_integer():
        return int(value)
    return value


def history_values(tag: TagInfo, values: np.ndarray, texts: list[str | None] | None) -> list:
    """History values for JSON: texts for a string tag, else :func:`engineering` of each value."""
    if tag.dtype == "string":
        return list(texts) if texts is not None else [None] * len(values)
    return [engineering(tag, v) for v in np.asarray(values, dtype=np.float64).tolist()]


def device_out(intel: "Intelligence", d) -> DeviceOut:
    rt = intel.app.devices.get(d.name)
    line = rt.line if rt is not None else None
    util = intel.app.line_utilisation().get(line) if line else None
    return DeviceOut(name=d.name, bus=d.bus, state=DeviceState(d.state).name, polls_ok=d.polls_ok,
                     polls_failed=d.polls_failed, requests=d.requests, timeouts=d.timeouts, crc_errors=d.crc_errors,
                     overruns=d.overruns, jitter_p99_ms=d.jitter_p99_ms, latency_p50_ms=d.latency_p50_ms, latency_p99_ms=d.latency_p99_ms, last_error=d.last_error,
                     last_ok_ns=d.last_ok_ns, plugin=d.plugin, line=line, line_utilisation_pct=util,
                     holes=d.holes, unreadable_points=d.unreadable_points, holes_detail=list(d.holes_detail))


def value_problem(tag: TagInfo, value: bool | int | float | str) -> str | None:
    """Why ``value`` cannot be written to ``tag`` (None if it can): checked before the device is asked."""
    if tag.dtype == "string":
        return None if isinstance(value, str) else f"{tag.key} is a string tag: send text"
    if isinstance(value, str):
        return f"{tag.key} is {tag.dtype}: send a number" + (" or true/false" if tag.dtype == "bool" else "")
    if tag.dtype == "bool":
        return None if value in (0, 1) else f"{tag.key} is bool: send true/false or 0/1"
    f = float(value)
    if not math.isfinite(f):
        return f"{tag.key}: the value must be finite"
    if tag.dtype in INTEGER_TYPES:
        if isinstance(value, float) and not value.is_integer():
            return f"{tag.key} is {tag.dtype}: send a whole number"
        lo, hi = INT_BOUNDS[tag.dtype]
        if tag.low is None and not lo <= int(value) <= hi:
            return f"{tag.key} is {tag.dtype}: the value must be in [{lo}, {hi}]"
    elif tag.dtype == "float32" and abs(f) > 3.4e38:
        return f"{tag.key} is float32: |value| must be below 3.4e38"
    if tag.low is not None and tag.high is not None and not tag.low <= f <= tag.high:
        return f"{tag.key}: {value} is outside the tag's range [{tag.low:g}, {tag.high:g}]"
    return None


# ----------------------------------------------------------------------------- the app


def _query_names(dependant: Any) -> set[str]:
    """Names of the query parameters of an operation, its dependencies included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def strict_query(request: Request) -> None:
    """Reject undeclared or repeated query parameters (a typo or a duplicate must not be silently ignored)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = _query_names(dependant)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise HTTPException(422, f"unknown query parameter(s) {', '.join(unknown)}; allowed: "
                            f"{', '.join(sorted(allowed)) or 'none'}")
    keys = [k for k, _ in request.query_params.multi_items()]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise HTTPException(422, f"query parameter(s) {', '.join(repeated)} given more than once; give each once")


def create_app(intel: "Intelligence") -> FastAPI:  # noqa: C901 - the routes are listed in one place
    """The API over one Intelligence (and its appliance).

    Every route and dependency that reads or changes appliance state (devices, tags, alarms,
    rules, tokens, counters) is ``async def``: FastAPI runs those on the appliance's loop, which
    owns that state (docs/decisions.md, "Concurrency contract"); a plain ``def`` would run in
    FastAPI's worker threads, next to the loop mutating the same objects. Blocking work (the
    spool's history query) goes to a thread from there (``asyncio.to_thread``)."""
    api = FastAPI(dependencies=[Depends(strict_query)], title="Edge appliance API", version="1", description=__doc__,
                  openapi_url="/openapi.json", docs_url=None, redoc_url=None, responses=ERRORS)
    api.add_middleware(BodyLimit, limit=lambda: intel.config.max_body_bytes, count=intel.count_refused)
    bearer = HTTPBearer(auto_error=False, description="an API token (edge.api.tokens)")

    async def caller(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
        if creds is not None:
            entry = intel.tokens.find(creds.credentials)
            if entry is None:
                intel.api_counters["auth_failed"] = intel.api_counters.get("auth_failed", 0) + 1
                intel.count_refused("unknown_token")
                raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
            return Caller(name=entry.name, role=entry.role.value)
        if intel.config.anonymous_role == "viewer":
            return Caller(name="anonymous", role=Role.VIEWER.value)
        intel.count_refused("no_token")
        raise HTTPException(401, "a token is required: send 'Authorization: Bearer <token>'",
                            headers={"WWW-Authenticate": "Bearer"})

    async def operator(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.role != Role.OPERATOR.value:
            intel.count_refused("role")
            raise HTTPException(403, f"role {who.role!r} may not do this: the operator role is needed")
        return who

    Viewer = Annotated[Caller, Depends(caller)]
    Operator = Annotated[Caller, Depends(operator)]

    def find_tag(key: str) -> TagInfo:
        tag = intel.app.plant.tag_by_key().get(key)
        if tag is None:
            raise HTTPException(404, f"no tag {key!r}: write 'device.tag' (GET /api/tags lists them)")
        return tag

    # -------------------------------------------------------------- health

    @api.get("/api/health", tags=["health"], summary="liveness: the process answers")
    async def health() -> dict:
        return {"status": "ok", "uptime_s": intel.app.stats()["uptime_s"]}

    @api.get("/api/ready", tags=["health"], summary="readiness: started and polling; 'degraded' while data "
             "do not reach the time-series server", responses={503: {"description": "not ready yet"}})
    async def ready() -> JSONResponse:
        why = intel.not_ready()
        delivery = intel.delivery()
        degraded = delivery["degraded"] if delivery is not None else None
        status = "starting" if why is not None else ("degraded" if degraded else "ready")
        body = {"ready": why is None, "status": status, "reason": why or degraded}
        return JSONResponse(body, status_code=200 if why is None else 503)

    @api.get("/metrics", tags=["health"], summary="Prometheus metrics (text format)",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics(request: Request) -> Response:
        if not intel.config.metrics_public:
            await caller(bearer_credentials(request))
        from edge.api.metrics import metrics_text

        return Response(metrics_text(intel), media_type="text/plain; version=0.0.4; charset=utf-8")

    def bearer_credentials(request: Request) -> HTTPAuthorizationCredentials | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return HTTPAuthorizationCredentials(scheme=scheme, credentials=token) if scheme.lower() == "bearer" else None

    @api.get("/api/whoami", tags=["health"])
    async def whoami(who: Viewer) -> Caller:
        return who

    # -------------------------------------------------------------- devices and tags

    @api.get("/api/devices", tags=["devices"], summary="devices with state and diagnostics")
    async def devices(who: Viewer) -> list[DeviceOut]:
        return [device_out(intel, d) for d in intel.app.diagnostics()]

    @api.get("/api/devices/{name}", tags=["devices"], responses={404: {"description": "no such device"}})
    async def device(name: str, who: Viewer) -> DeviceOut:
        for d in intel.app.diagnostics():
            if d.name == name:
                return device_out(intel, d)
        raise HTTPException(404, f"no device {name!r}; devices: {', '.join(intel.app.devices)}")

    @api.get("/api/tags", tags=["tags"], summary="tags with latest value, quality and timestamp")
    async def tags(who: Viewer, device: Annotated[str | None, Query(max_length=200)] = None) -> list[TagOut]:
        return [tag_out(intel, t) for t in intel.app.plant.tags if device is None or t.device == device]

    @api.get("/api/tags/{key}", tags=["tags"], responses={404: {"description": "no such tag"}})
    async def tag(key: str, who: Viewer) -> TagOut:
        return tag_out(intel, find_tag(key))

    @api.get("/api/tags/{key}/history", tags=["tags"], summary="raw history from the ring buffer or the spool",
             responses={404: {"description": "no such tag"}, 400: {"description": "bad time range"}})
    async def history(key: str, who: Viewer,
                      start_ns: Annotated[int | None, Query(ge=0, le=MAX_NS)] = None,
                      end_ns: Annotated[int | None, Query(ge=0, le=MAX_NS)] = None,
                      max_values: Annotated[int, Query(ge=1, le=1_000_000)] = 1000,
                      max_points: Annotated[int | None, Query(
                          ge=4, le=100_000, description="downsample [start_ns, end_ns) to at most this many good "
                          "samples for plotting (the compiled M4 or MinMaxLTTB of edge.aggregate); max_values "
                          "then does not apply")] = None,
                      method: Annotated[Literal["m4", "minmaxlttb"], Query(
                          description="with max_points: m4 keeps the first, min, max and last sample of each of "
                          "max_points // 4 equal time buckets; minmaxlttb keeps the shape")] = "m4") -> HistoryOut:
        t = find_tag(key)
        end = end_ns if end_ns is not None else time.time_ns()
        start = start_ns if start_ns is not None else end - 600 * 10**9
        if start > end:
            raise HTTPException(400, f"start_ns {start} is after end_ns {end}")
        outputs = intel.app.outputs
        if outputs is None:
            raise HTTPException(404, "this appliance keeps no history (outputs disabled)")
        if max_points is not None:
            return await downsampled_history(outputs, t, max(start, 0), end, max_points, method)
        h = await outputs.history(t.id, max(start, 0), end, min(max_values, intel.config.history_max_values))
        return HistoryOut(tag=t.key, ts_ns=[int(x) for x in h.ts], values=history_values(t, h.values, h.texts),
                          quality=[int(q) for q in h.quality])

    async def downsampled_history(outputs: "Outputs", t: TagInfo, start: int, end: int, max_points: int,
                                  method: str) -> HistoryOut:
        """At most ``max_points`` good samples of [start, end) that draw like all of them (a trend)."""
        if t.dtype == "string":
            raise HTTPException(422, f"{t.key} is a string tag: max_points downsamples numbers; leave it out")
        if end <= start:
            return HistoryOut(tag=t.key, ts_ns=[], values=[], quality=[], raw_samples=0)
        cap = intel.config.history_downsample_max_samples
        h = await outputs.history(t.id, start, end, cap)
        n = len(h.ts)
        ts, values, quality = downsample_arrays(h.ts, h.values, h.quality, start, end, max_points, method)
        return HistoryOut(tag=t.key, ts_ns=ts.tolist(), values=history_values(t, values, None),
                          quality=quality.tolist(), raw_samples=n, truncated=n >= cap)

    @api.post("/api/tags/{key}/write", tags=["tags"], summary="write a tag (operator role, rate-limited)",
              responses={403: {"description": "role may not write"}, 404: {"description": "no such tag"},
                         409: {"description": "tag not writable or device not running"},
                         422: {"description": "value of the wrong type or out of range"},
                         429: {"description": "rate limit"}, 502: {"description": "the device refused or failed"},
                         504: {"description": "the device did not answer"}})
    async def write(key: str, body: WriteIn, request: Request,
                    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> JSONResponse:
        """Every attempt is in the audit log, refused ones too (issue 15): the checks run here, in
        order, and each refusal is recorded with the caller's address before it is answered."""
        address = request.client.host if request.client else ""
        user, role = "anonymous", ""

        def refuse(code: int, status: WriteStatus, detail: str, headers: Mapping[str, str] | None = None) -> NoReturn:
            intel.app.writes.refuse(key, body.value, user, "api", role, status, detail, address=address,
                                    http_status=code)
            raise HTTPException(code, detail, headers=dict(headers) if headers else None)

        try:
            who = await operator(await caller(creds))
        except HTTPException as exc:
            entry = intel.tokens.find(creds.credentials) if creds is not None else None
            user = entry.name if entry else ("unknown token" if creds is not None else "anonymous")
            role = entry.role.value if entry else ""
            refuse(exc.status_code, WriteStatus.BAD_USER_ACCESS_DENIED, str(exc.detail), exc.headers)
        user, role = who.name, who.role
        t = intel.app.plant.tag_by_key().get(key)
        if t is None:
            refuse(404, WriteStatus.BAD_NODE_ID_UNKNOWN, f"no tag {key!r}: write 'device.tag' (GET /api/tags lists them)")
        if not t.writable:
            refuse(409, WriteStatus.BAD_NOT_WRITABLE, f"{t.key} is not writable")
        problem = value_problem(t, body.value)
        if problem:
            refuse(422, WriteStatus.BAD_TYPE_MISMATCH if "send" in problem else WriteStatus.BAD_OUT_OF_RANGE, problem)
        wait = intel.limiter.take(who.name)
        if wait:
            intel.count("rate_limited")
            intel.count_refused("rate_limited")
            refuse(429, WriteStatus.BAD_TOO_MANY_OPERATIONS,
                   f"write rate limit: {intel.config.write_rate_per_min}/min, burst {intel.config.write_burst}; "
                   f"retry in {wait:.1f} s", headers={"Retry-After": str(math.ceil(wait))})
        value = bool(body.value) if t.dtype == "bool" else body.value
        try:
            result = await intel.app.writes.write(t.id, value, user=who.name, source="api", role=who.role,
                                                  address=address)
        except (ValueError, TypeError, OverflowError) as exc:
            intel.count("rejected")
            refuse(422, WriteStatus.BAD_TYPE_MISMATCH, f"{t.key}: cannot encode {body.value!r}: {exc}")
        intel.count(result.status.name)
        out = WriteOut(tag=t.key, ok=result.ok, status=result.status.name, message=result.message,
                       read_back=clean(result.read_back))
        return JSONResponse(out.model_dump(), status_code=WRITE_HTTP.get(result.status, 502))

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A write whose body does not match the schema is a refused write attempt too: audited."""
        route = request.scope.get("route")
        if getattr(route, "name", None) == "write" and request.method == "POST":
            key = request.path_params.get("key", "?")
            creds = bearer_credentials(request)
            entry = intel.tokens.find(creds.credentials) if creds is not None else None
            intel.app.writes.refuse(
                key, None, entry.name if entry else "anonymous", "api", entry.role.value if entry else "",
                WriteStatus.BAD_TYPE_MISMATCH, f"the request does not match the schema: {exc.errors()[:3]}",
                address=request.client.host if request.client else "", http_status=422)
        return await request_validation_exception_handler(request, exc)

    # -------------------------------------------------------------- alarms and rules

    def alarm_call(fn, *args):
        try:
            alarm = fn(*args)
        except AlarmError as exc:
            code = 404 if str(exc).startswith("no alarm") else 409
            raise HTTPException(code, str(exc)) from None
        return _clean_dict(alarm.snapshot(time.time_ns()))

    @api.get("/api/alarms", tags=["alarms"], summary="alarms with their ISA-18.2 state")
    async def alarms(who: Viewer, active: bool | None = None) -> list[dict[str, Any]]:
        rows = [_clean_dict(a) for a in intel.alarms.snapshot()]
        if active is not None:
            rows = [a for a in rows if (a["state"] != "NORMAL") == active]
        return rows

    @api.get("/api/alarms/events", tags=["alarms"], summary="latest alarm state changes, newest first")
    async def alarm_events(who: Viewer, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[dict[str, Any]]:
        return [_clean_dict(e.to_dict()) for e in list(intel.events)[::-1][:limit]]

    @api.get("/api/alarms/{name}", tags=["alarms"], responses={404: {"description": "no such alarm"}})
    async def alarm(name: str, who: Viewer) -> dict[str, Any]:
        return alarm_call(intel.alarms.get, name)

    @api.post("/api/alarms/{name}/ack", tags=["alarms"], summary="acknowledge (operator role)",
              responses={404: {"description": "no such alarm"}, 409: {"description": "nothing to acknowledge"}})
    async def ack(name: str, who: Operator, body: AckIn | None = None) -> dict[str, Any]:
        return alarm_call(intel.alarms.acknowledge, name, who.name, body.comment if body else "")

    @api.post("/api/alarms/{name}/shelve", tags=["alarms"], summary="shelve for a time (operator role)",
              responses={404: {"description": "no such alarm"}})
    async def shelve(name: str, body: ShelveIn, who: Operator) -> dict[str, Any]:
        return alarm_call(intel.alarms.shelve, name, body.duration_s, who.name, body.comment)

    @api.post("/api/alarms/{name}/unshelve", tags=["alarms"], summary="unshelve (operator role)",
              responses={404: {"description": "no such alarm"}, 409: {"description": "not shelved"}})
    async def unshelve(name: str, who: Operator) -> dict[str, Any]:
        return alarm_call(intel.alarms.unshelve, name, who.name)

    @api.get("/api/rules", tags=["rules"], summary="rules with state, status and counters")
    async def rules(who: Viewer) -> list[dict[str, Any]]:
        return intel.rules.snapshot()

    # -------------------------------------------------------------- status page

    def status_body(who: Caller) -> dict[str, Any]:
        now = time.time_ns()
        return {"site": intel.app.plant.site, "time_ns": now, "caller": who.model_dump(),
                "devices": [device_out(intel, d).model_dump() for d in intel.app.diagnostics()],
                "lines": {k: round(v, 2) for k, v in intel.app.line_utilisation().items()},
                "outputs": ({k: _clean_dict(v) for k, v in intel.app.outputs.status().items()}
                            if intel.app.outputs is not None else {}),
                "alarms": [_clean_dict(a) for a in intel.alarms.snapshot() if a["state"] != "NORMAL"],
                "tags": [tag_out(intel, t).model_dump() for t in intel.app.plant.tags],
                "delivery": _clean_nested(intel.delivery()),
                "reload": intel.app.last_reload.as_dict() if intel.app.last_reload is not None else None,
                "refresh_ms": intel.config.status_refresh_ms}

    @api.get("/api/status", tags=["status"], summary="everything the status page shows, in one call")
    async def status(who: Viewer) -> dict[str, Any]:
        return status_body(who)

    @api.get("/api/status/stream", tags=["status"], response_class=StreamingResponse,
             summary="the same, pushed: server-sent events (text/event-stream), one 'status' event every "
                     "status_refresh_ms until the client goes away",
             responses={200: {"content": {"text/event-stream": {}}}})
    async def status_stream(request: Request, who: Viewer) -> StreamingResponse:
        return StreamingResponse(status_events(request, who), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def status_events(request: Request, who: Caller) -> AsyncIterator[str]:
        """``status`` events until the client disconnects or the appliance stops (checked every 0.2 s)."""
        yield "retry: 2000\n\n"
        while intel.started:
            body = json.dumps(status_body(who), separators=(",", ":"), allow_nan=False)
            yield f"event: status\ndata: {body}\n\n"
            deadline = time.monotonic() + intel.config.status_refresh_ms / 1000
            while intel.started and time.monotonic() < deadline:
                if await request.is_disconnected():
                    return
                await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    @api.get("/api/security", tags=["status"], summary="security policy and counters (OPC UA and API)")
    async def security(who: Viewer) -> dict[str, Any]:
        return intel.security_snapshot()

    @api.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @api.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """Swagger UI from the files of the swagger-ui-bundle-v2 package: no CDN (air-gapped plants)."""
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{api.title} - Swagger UI",
                                   swagger_js_url=f"{SWAGGER_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{SWAGGER_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{SWAGGER_URL}/favicon-32x32.png")

    api.mount(SWAGGER_URL, StaticFiles(directory=str(SWAGGER_UI)), name="swagger-ui")
    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    return api


def _clean_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {k: clean(v) for k, v in d.items()}


def _clean_nested(v: Any) -> Any:
    """JSON-safe copy of nested dicts (NaN and infinity become null)."""
    if isinstance(v, dict):
        return {k: _clean_nested(x) for k, x in v.items()}
    return clean(v)
