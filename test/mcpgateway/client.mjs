// The official TypeScript MCP client (@modelcontextprotocol/sdk) against
// acgs gateway, for the gateway's end-to-end tests: over streamable HTTP,
// or over stdio with the gateway as its child (as a desktop agent runs it).
//
//   node client.mjs URL TOKEN|- '[{"name": "...", "arguments": {...}}, ...]'
//   node client.mjs --stdio '["acgs", "gateway", "--config", "..."]' CALLS
//
// Prints one JSON object: {"tools": [names], "calls": [{"result": ...} or
// {"error": "..."}]}, in the order of the calls.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, callsJSON] = process.argv.slice(2);
let transport;
if (url === "--stdio") {
  const [command, ...args] = JSON.parse(token);
  transport = new StdioClientTransport({ command, args, env: process.env, stderr: "inherit" });
} else {
  // TOKEN "-": no Authorization header (the gateway's anonymous_agent).
  const headers = token && token !== "-" ? { Authorization: `Bearer ${token}` } : {};
  transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
}
const client = new Client({ name: "acgs-ts-agent", version: "1.0.0" });
await client.connect(transport);
const { tools } = await client.listTools();
const calls = [];
for (const c of JSON.parse(callsJSON || "[]")) {
  try {
    calls.push({ result: await client.callTool({ name: c.name, arguments: c.arguments ?? {} }) });
  } catch (err) {
    calls.push({ error: String(err && err.message ? err.message : err) });
  }
}
process.stdout.write(JSON.stringify({ tools: tools.map((t) => t.name), calls }) + "\n");
await client.close();
