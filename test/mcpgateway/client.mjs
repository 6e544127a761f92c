// The official TypeScript MCP client (@modelcontextprotocol/sdk) against
// acgs gateway over streamable HTTP, for the gateway's end-to-end tests.
//
//   node client.mjs URL TOKEN|- '[{"name": "...", "arguments": {...}}, ...]'
//
// Prints one JSON object: {"tools": [names], "calls": [{"result": ...} or
// {"error": "..."}]}, in the order of the calls.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, token, callsJSON] = process.argv.slice(2);
// TOKEN "-": no Authorization header (the gateway's anonymous_agent).
const headers = token && token !== "-" ? { Authorization: `Bearer ${token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
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
