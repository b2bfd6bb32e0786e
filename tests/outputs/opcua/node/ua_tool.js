// Independent OPC UA client (node-opcua) for the tests: runs a list of operations in one session.
// Usage: node ua_tool.js ENDPOINT USER PASSWORD TIMEOUT_MS 'JSON array of operations'
// USER "-" logs in anonymously. Prints one JSON line per operation result, then {"done": true}.
// Operations:
//   {"op": "read", "nodeId": "...", "attribute": "Value"|"DataType"|"UserAccessLevel"|...}
//   {"op": "historyRaw", "nodeId", "start", "end" (ISO or null), "numValuesPerNode", "returnBounds",
//    "timestamps": "Source"|"Server"|"Both", "maxPages", "releaseAfterPages"}  (follows continuation points)
//   {"op": "historyProcessed", "nodeId", "start", "end", "interval" (ms), "aggregate": "Average"|...}
//   {"op": "conditionRefresh", "waitMs"}: subscribes to events of the Server object, calls
//    ConditionRefresh, prints the conditions received between RefreshStart and RefreshEnd
//   {"op": "call", "objectId", "methodId", "args": [{"dataType": "ByteString"|"LocalizedText"|..., "value"}]}
"use strict";
const path = require("path");
const os = require("os");
const client_lib = require("node-opcua-client");
const {
  OPCUAClient, MessageSecurityMode, SecurityPolicy, AttributeIds, TimestampsToReturn, UserTokenType,
  HistoryReadRequest, ReadRawModifiedDetails, ReadProcessedDetails, resolveNodeId, ClientSubscription,
  ClientMonitoredItem, constructEventFilter, ObjectIds, DataType, Variant, LocalizedText,
} = client_lib;
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

function show(dv) {
  let value = dv.value && dv.value.value !== undefined ? dv.value.value : null;
  if (value && typeof value === "object" && value.text !== undefined) value = value.text;
  if (typeof value === "bigint") value = value.toString();
  if (Array.isArray(value) && value.length === 2 && typeof value[0] === "number" && dv.value.dataType >= 8 && dv.value.dataType <= 9) {
    value = (BigInt(value[0]) * 4294967296n + BigInt(value[1] >>> 0)).toString();
  }
  if (value && value.toString && value.constructor && value.constructor.name === "NodeId") value = value.toString();
  return {
    value,
    dataType: dv.value ? DataType[dv.value.dataType] : null,
    status: dv.statusCode.value,
    statusName: dv.statusCode.name,
    source: dv.sourceTimestamp ? dv.sourceTimestamp.toISOString() : null,
    sourcePico: dv.sourcePicoseconds || 0,
    server: dv.serverTimestamp ? dv.serverTimestamp.toISOString() : null,
  };
}

const AGG = {
  Average: ObjectIds.AggregateFunction_Average, Minimum: ObjectIds.AggregateFunction_Minimum,
  Maximum: ObjectIds.AggregateFunction_Maximum, Count: ObjectIds.AggregateFunction_Count,
  Interpolative: ObjectIds.AggregateFunction_Interpolative,
};

async function historyRaw(session, op) {
  const details = new ReadRawModifiedDetails({
    isReadModified: false,
    startTime: op.start ? new Date(op.start) : null,
    endTime: op.end ? new Date(op.end) : null,
    numValuesPerNode: op.numValuesPerNode || 0,
    returnBounds: !!op.returnBounds,
  });
  const pages = [];
  const values = [];
  let cp = null;
  let status = null;
  for (let i = 0; i < (op.maxPages || 1000); i++) {
    const response = await session.historyRead(new HistoryReadRequest({
      historyReadDetails: details, timestampsToReturn: TimestampsToReturn[op.timestamps || "Both"],
      releaseContinuationPoints: false, nodesToRead: [{ nodeId: resolveNodeId(op.nodeId), continuationPoint: cp }],
    }));
    const r = response.results[0];
    status = r.statusCode.name;
    if (r.statusCode.value !== 0) break;
    const dvs = r.historyData ? r.historyData.dataValues || [] : [];
    pages.push(dvs.length);
    for (const dv of dvs) values.push(show(dv));
    cp = r.continuationPoint && r.continuationPoint.length ? r.continuationPoint : null;
    if (!cp) break;
    if (op.releaseAfterPages && pages.length >= op.releaseAfterPages) {
      const rel = await session.historyRead(new HistoryReadRequest({
        historyReadDetails: details, timestampsToReturn: TimestampsToReturn.Both, releaseContinuationPoints: true,
        nodesToRead: [{ nodeId: resolveNodeId(op.nodeId), continuationPoint: cp }],
      }));
      const again = await session.historyRead(new HistoryReadRequest({
        historyReadDetails: details, timestampsToReturn: TimestampsToReturn.Both, releaseContinuationPoints: false,
        nodesToRead: [{ nodeId: resolveNodeId(op.nodeId), continuationPoint: cp }],
      }));
      return { op: op.op, pages, values, released: rel.results[0].statusCode.name,
               afterRelease: again.results[0].statusCode.name };
    }
  }
  return { op: op.op, status, pages, values, lastContinuationPoint: cp ? cp.toString("hex") : null };
}

async function historyProcessed(session, op) {
  const details = new ReadProcessedDetails({
    startTime: new Date(op.start), endTime: new Date(op.end), processingInterval: op.interval,
    aggregateType: [resolveNodeId(AGG[op.aggregate])],
  });
  const values = [];
  let cp = null;
  let status = null;
  for (let i = 0; i < 1000; i++) {
    const response = await session.historyRead(new HistoryReadRequest({
      historyReadDetails: details, timestampsToReturn: TimestampsToReturn.Source, releaseContinuationPoints: false,
      nodesToRead: [{ nodeId: resolveNodeId(op.nodeId), continuationPoint: cp }],
    }));
    const r = response.results[0];
    status = r.statusCode.name;
    if (r.statusCode.value !== 0) break;
    for (const dv of r.historyData.dataValues || []) values.push(show(dv));
    cp = r.continuationPoint && r.continuationPoint.length ? r.continuationPoint : null;
    if (!cp) break;
  }
  return { op: op.op, status, values };
}

async function conditionRefresh(session, op) {
  const fields = ["EventId", "ConditionName", "SourceName", "Severity", "Retain", "ActiveState", "ActiveState.Id",
    "AckedState", "AckedState.Id", "ConfirmedState.Id", "ShelvingState.CurrentState", "EventType", "ConditionId",
    "Message", "BranchId", "LimitState.CurrentState", "ClientUserId", "Comment"];
  const sub = ClientSubscription.create(session, {
    requestedPublishingInterval: 50, requestedLifetimeCount: 600, requestedMaxKeepAliveCount: 10,
    maxNotificationsPerPublish: 0, publishingEnabled: true, priority: 1,
  });
  await new Promise((resolve) => sub.on("started", resolve));
  const events = [];
  const item = ClientMonitoredItem.create(sub, { nodeId: resolveNodeId("i=2253"), attributeId: AttributeIds.EventNotifier },
    { samplingInterval: 0, discardOldest: true, queueSize: 1000, filter: constructEventFilter(fields) },
    TimestampsToReturn.Both);
  item.on("changed", (values) => {
    const ev = {};
    fields.forEach((f, i) => {
      const v = values[i] ? values[i].value : null;
      if (v && v.text !== undefined) ev[f] = v.text;
      else if (v && v.toString && typeof v === "object" && v.constructor && v.constructor.name === "NodeId") ev[f] = v.toString();
      else if (Buffer.isBuffer(v)) ev[f] = v.toString("hex");
      else ev[f] = v;
    });
    events.push(ev);
  });
  await new Promise((resolve) => setTimeout(resolve, 300));
  const before = events.length;
  const result = await session.call({
    objectId: resolveNodeId("i=2782"), methodId: resolveNodeId("i=3875"),
    inputArguments: [new Variant({ dataType: DataType.UInt32, value: sub.subscriptionId })],
  });
  await new Promise((resolve) => setTimeout(resolve, op.waitMs || 1000));
  await sub.terminate();
  return { op: op.op, status: result.statusCode.name, events: events.slice(before) };
}

async function call(session, op) {
  const inputArguments = (op.args || []).map((a) => {
    if (a.dataType === "ByteString") return new Variant({ dataType: DataType.ByteString, value: Buffer.from(a.value, "hex") });
    if (a.dataType === "LocalizedText") return new Variant({ dataType: DataType.LocalizedText, value: new LocalizedText({ text: a.value }) });
    return new Variant({ dataType: DataType[a.dataType], value: a.value });
  });
  const result = await session.call({ objectId: resolveNodeId(op.objectId), methodId: resolveNodeId(op.methodId), inputArguments });
  return { op: op.op, status: result.statusCode.name };
}

async function main() {
  const [endpoint, userName, password, timeoutArg, opsJson] = process.argv.slice(2);
  const ops = JSON.parse(opsJson);
  const pkiRoot = process.env.NODE_OPCUA_PKI || path.join(os.tmpdir(), "edge-node-opcua-pki");
  const client = OPCUAClient.create({
    applicationName: "edge-tests-node-opcua", endpointMustExist: false,
    securityMode: MessageSecurityMode.None, securityPolicy: SecurityPolicy.None,
    connectionStrategy: { maxRetry: 2, initialDelay: 100, maxDelay: 500 },
    clientCertificateManager: new OPCUACertificateManager({ rootFolder: pkiRoot }),
  });
  const timer = setTimeout(() => { console.log(JSON.stringify({ timeout: true })); process.exit(2); }, parseInt(timeoutArg, 10));
  await client.connect(endpoint);
  const session = userName === "-" ? await client.createSession()
    : await client.createSession({ type: UserTokenType.UserName, userName, password });
  for (const op of ops) {
    let out;
    if (op.op === "read") {
      const dv = await session.read({ nodeId: resolveNodeId(op.nodeId), attributeId: AttributeIds[op.attribute || "Value"] });
      out = { op: "read", nodeId: op.nodeId, attribute: op.attribute || "Value", ...show(dv) };
    } else if (op.op === "historyRaw") {
      out = await historyRaw(session, op);
    } else if (op.op === "historyProcessed") {
      out = await historyProcessed(session, op);
    } else if (op.op === "conditionRefresh") {
      out = await conditionRefresh(session, op);
    } else if (op.op === "call") {
      out = await call(session, op);
    } else {
      out = { op: op.op, error: "unknown operation" };
    }
    console.log(JSON.stringify(out));
  }
  console.log(JSON.stringify({ done: true }));
  clearTimeout(timer);
  await session.close();
  await client.disconnect();
  process.exit(0);
}

main().catch((err) => { console.log(JSON.stringify({ error: String(err && err.stack || err) })); process.exit(1); });
