// The reference "everything" MCP server (@modelcontextprotocol/server-everything)
// over streamable HTTP on a loopback address, for the gateway's end-to-end
// tests. The package's own HTTP launcher listens on every interface; this one
// binds 127.0.0.1 only, on PORT (0: a free port), and prints
// "listening <port>" on stdout once it accepts connections.
import http from "node:http";
import { randomUUID } from "node:crypto";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { createServer } from "@modelcontextprotocol/server-everything/dist/server/index.js";

const transports = new Map();

const server = http.createServer(async (req, res) => {
  if (new URL(req.url, "http://127.0.0.1").pathname !== "/mcp") {
    res.writeHead(404).end();
    return;
  }
  try {
    const sid = req.headers["mcp-session-id"];
    let transport = sid ? transports.get(sid) : undefined;
    if (!transport) {
      if (sid) {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ jsonrpc: "2.0", error: { code: -32001, message: "unknown session" }, id: null }));
        return;
      }
      const { server: mcp, cleanup } = createServer();
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => transports.set(id, transport),
      });
      transport.onclose = () => {
        if (transport.sessionId) transports.delete(transport.sessionId);
        cleanup();
      };
      await mcp.connect(transport);
    }
    await transport.handleRequest(req, res);
  } catch (err) {
    console.error("everything-http:", err);
    if (!res.headersSent) res.writeHead(500).end();
  }
});

server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(0));
