// The checkout DAG as a Node user writes an aggregator: express + Promise.all.
//
//   POST /checkout   order -> Promise.all([payment, inventory, shipping]) -> confirm
//
// The upstreams and the port come from the environment (set by `manifold bench`):
//   PORT, HOST (default 127.0.0.1), ORDER_URL, PAYMENT_URL, INVENTORY_URL, SHIPPING_URL
// Upstream calls go through node:http with a keep-alive agent (pooled connections); the
// built-in fetch (undici) with AbortSignal.timeout gave about a sixth of the throughput here
// (268 vs 1,557 checkouts/s closed loop, docs/benchmarks.md).
//
// Run by hand: PORT=3000 ORDER_URL=... PAYMENT_URL=... INVENTORY_URL=... SHIPPING_URL=... node app.js
'use strict';

const http = require('node:http');
const express = require('express');

const env = (name, fallback) => process.env[name] || fallback;
const ORDER_URL = env('ORDER_URL', 'http://127.0.0.1:7001');
const PAYMENT_URL = env('PAYMENT_URL', 'http://127.0.0.1:7002');
const INVENTORY_URL = env('INVENTORY_URL', 'http://127.0.0.1:7003');
const SHIPPING_URL = env('SHIPPING_URL', 'http://127.0.0.1:7004');
const TIMEOUT_MS = Number(env('UPSTREAM_TIMEOUT_MS', '5000'));

// One keep-alive agent for every upstream: pooled connections, as a careful Node service does.
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function post(url, body) {
  const payload = JSON.stringify(body ?? null);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: 'POST',
        agent,
        timeout: TIMEOUT_MS,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          if (res.statusCode < 200 || res.statusCode >= 300) {
            reject(new Error(`${url}: status ${res.statusCode}`));
            return;
          }
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
          } catch (err) {
            reject(err);
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${url}: timeout after ${TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(payload);
  });
}

const app = express();
app.use(express.json());

app.post('/checkout', async (req, res) => {
  const body = req.body || {};
  try {
    const order = await post(`${ORDER_URL}/orders`, body);
    const [payment, , shipping] = await Promise.all([
      post(`${PAYMENT_URL}/payments`, { order_id: order.id, amount: body.total }),
      post(`${INVENTORY_URL}/inventory/reserve`, { order_id: order.id, items: body.items }),
      post(`${SHIPPING_URL}/shipping/labels`, { order_id: order.id, address: body.address }),
    ]);
    const confirmed = await post(`${ORDER_URL}/orders/${encodeURIComponent(order.id)}/confirm`, null);
    res.status(201).json({ order: confirmed, payment: payment.status, shipping });
  } catch (err) {
    res.status(502).json({ error: String(err && err.message ? err.message : err) });
  }
});

app.get('/healthz', (_req, res) => res.send('ok\n'));

const port = Number(env('PORT', '3000'));
const host = env('HOST', '127.0.0.1');
const server = app.listen(port, host, () => {
  console.log(`node aggregator listening on http://${host}:${port}`);
});
server.keepAliveTimeout = 65000;

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
