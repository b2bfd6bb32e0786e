// Independent OPC UA client (node-opcua) for tests/outputs/opcua: reads nodes, then subscribes.
// Usage: node read_subscribe.js ENDPOINT USER PASSWORD WANT TIMEOUT_MS NODEID...
// Prints JSON lines: {"read": ...} per node, {"ready": true} once subscribed, then
// {"changed": ...} per notification; exits after WANT notifications or TIMEOUT_MS.
"use strict";
const path = require("path");
const os = require("os");
const {
  OPCUAClient, MessageSecurityMode, SecurityPolicy, AttributeIds, TimestampsToReturn,
  UserTokenType, ClientSubscription, ClientMonitoredItem,
} = require("node-opcua-client");
// a dependency of node-opcua-client: keeps the client's own PKI out of $HOME
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");

function show(dv) {
  return {
    value: dv.value && dv.value.value !== undefined ? dv.value.value : null,
    dataType: dv.value ? dv.value.dataType : null,
    status: dv.statusCode.value,
    statusName: dv.statusCode.name,
    source: dv.sourceTimestamp ? dv.sourceTimestamp.toISOString() : null,
    server: dv.serverTimestamp ? dv.serverTimestamp.toISOString() : null,
  };
}

async function main() {
  const [endpoint, userName, password, wantArg, timeoutArg, ...nodeIds] = process.argv.slice(2);
  const want = parseInt(wantArg, 10);
  const timeoutMs = parseInt(timeoutArg, 10);
  const pkiRoot = process.env.NODE_OPCUA_PKI || path.join(os.tmpdir(), "edge-node-opcua-pki");
  const client = OPCUAClient.create({
    applicationName: "edge-tests-node-opcua",
    endpointMustExist: false,
    securityMode: MessageSecurityMode.None,
    securityPolicy: SecurityPolicy.None,
    connectionStrategy: { maxRetry: 2, initialDelay: 100, maxDelay: 500 },
    clientCertificateManager: new OPCUACertificateManager({ rootFolder: pkiRoot }),
  });
  const timer = setTimeout(() => { console.log(JSON.stringify({ timeout: true })); process.exit(2); }, timeoutMs);
  await client.connect(endpoint);
  const session = await client.createSession({ type: UserTokenType.UserName, userName, password });
  for (const nodeId of nodeIds) {
    const dv = await session.read({ nodeId, attributeId: AttributeIds.Value });
    console.log(JSON.stringify({ read: nodeId, ...show(dv) }));
  }
  const sub = ClientSubscription.create(session, {
    requestedPublishingInterval: 50, requestedLifetimeCount: 600, requestedMaxKeepAliveCount: 10,
    maxNotificationsPerPublish: 0, publishingEnabled: true, priority: 1,
  });
  let seen = 0;
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  for (const nodeId of nodeIds) {
    const item = ClientMonitoredItem.create(sub, { nodeId, attributeId: AttributeIds.Value },
      { samplingInterval: 0, discardOldest: true, queueSize: 10 }, TimestampsToReturn.Both);
    item.on("changed", (dv) => {
      console.log(JSON.stringify({ changed: nodeId, ...show(dv) }));
      seen += 1;
      if (seen >= want) done();
    });
  }
  await new Promise((resolve) => sub.on("started", resolve));
  await new Promise((resolve) => setTimeout(resolve, 300));
  console.log(JSON.stringify({ ready: true }));
  await finished;
  clearTimeout(timer);
  await sub.terminate();
  await session.close();
  await client.disconnect();
  process.exit(0);
}

main().catch((err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
