// amqplib (promise API) scenarios for the differential suite.
//   node scenarios.js NAME URL PREFIX
// Prints the observation as one JSON line.  amqplib comes from
// ../../tutorials/javascript/node_modules (installed by run.sh with npm ci).
'use strict';
const path = require('path');
const {spawn} = require('child_process');
const amqp = require(path.join(__dirname, '..', '..', 'tutorials', 'javascript', 'node_modules', 'amqplib'));

const [name, url, prefix] = process.argv.slice(2);
const obs = {};
const resources = {queues: [], exchanges: []};
const Q = (s) => { const n = `${prefix}.${s}`; resources.queues.push(n); return n; };
const X = (s) => { const n = `${prefix}.${s}`; resources.exchanges.push(n); return n; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const strip = (s) => s.split(prefix).join('<prefix>');

function err(e) {
  const d = {message: strip(String(e.message))};
  for (const k of ['code', 'classId', 'methodId']) if (e[k] !== undefined) d[k] = e[k];
  return d;
}
function msg(m) {
  if (!m) return false;
  const p = {};
  for (const [k, v] of Object.entries(m.properties)) if (v !== undefined) p[k] = v;
  const f = Object.assign({}, m.fields);
  if (f.consumerTag !== undefined && !String(f.consumerTag).startsWith(prefix)) f.consumerTag = 'amqp-generated';
  f.exchange = strip(f.exchange); f.routingKey = strip(f.routingKey);
  return {fields: f, properties: p, content: m.content.toString()};
}
async function channel(conn, confirm) {
  const ch = confirm ? await conn.createConfirmChannel() : await conn.createChannel();
  ch.on('error', () => {});  // errors are observed through the rejected promises
  return ch;
}
async function attempt(key, fn) {
  try { const r = await fn(); obs[key] = {ok: r === undefined ? null : r}; } catch (e) { obs[key] = err(e); }
}
// Restart the broker with the runner's hook (COMPAT_RESTART_CMD, a shell
// command that returns when the broker is back); its output goes to stderr and
// it runs in its own session (a scenario timeout must not kill it half-way).
function restartBroker() {
  const cmd = process.env.COMPAT_RESTART_CMD;
  if (!cmd) return Promise.reject(new Error('no restart hook: COMPAT_RESTART_CMD is not set'));
  return new Promise((resolve, reject) => {
    const p = spawn('sh', ['-c', cmd], {stdio: ['ignore', 2, 2], detached: true});
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`restart command exited with ${code}`))));
  });
}
async function connectRetrying(tries, delayMs) {
  for (let i = 1; ; i++) {
    try { return await amqp.connect(url); } catch (e) { if (i >= tries) throw e; await sleep(delayMs); }
  }
}
const declareOk = (r) => ({queue: strip(r.queue), messageCount: r.messageCount, consumerCount: r.consumerCount});

const SCENARIOS = {
  async 'confirm-wait-for-confirms'(conn) {
    const ch = await channel(conn, true);
    const q = Q('q');
    await ch.assertQueue(q, {durable: false});
    const cbs = [];
    for (let i = 0; i < 10; i++) {
      ch.sendToQueue(q, Buffer.from(`m${i}`), {persistent: i % 2 === 0, headers: {i}},
        (e) => cbs.push([i, e ? String(e) : null]));
    }
    ch.publish('', Q('nowhere'), Buffer.from('unroutable'), {}, (e) => cbs.push(['unroutable', e ? String(e) : null]));
    await attempt('waitForConfirms', () => ch.waitForConfirms().then(() => 'all confirmed'));
    obs['publish callbacks (sorted)'] = cbs.map((c) => JSON.stringify(c)).sort();
    obs['checkQueue'] = declareOk(await ch.checkQueue(q));
    const got = await ch.get(q, {noAck: true});
    obs['first'] = msg(got);
  },

  async 'consume-prefetch-nack-requeue'(conn) {
    const ch = await channel(conn, false);
    const q = Q('q');
    await ch.assertQueue(q);
    for (let i = 0; i < 5; i++) ch.sendToQueue(q, Buffer.from(`m${i}`));
    await ch.prefetch(2);
    const seen = [];
    const held = [];
    let nacked = false;
    const ok = await ch.consume(q, (m) => {
      seen.push([m.content.toString(), m.fields.deliveryTag, m.fields.redelivered]);
      if (m.content.toString() === 'm1' && !nacked) { nacked = true; ch.nack(m, false, true); return; }
      held.push(m);
    }, {consumerTag: `${prefix}.ctag`});
    obs['consume-ok tag'] = strip(ok.consumerTag);
    await sleep(300);
    obs['delivered with prefetch 2 (m1 nacked+requeued)'] = seen.slice();
    for (let round = 0; round < 10 && seen.length < 6; round++) {
      while (held.length) ch.ack(held.shift());
      await sleep(150);
    }
    while (held.length) ch.ack(held.shift());
    obs['all deliveries'] = seen;
    await ch.cancel(`${prefix}.ctag`);
    await sleep(150);
    obs['after'] = declareOk(await ch.checkQueue(q));
  },

  async 'assert-check-errors'(conn) {
    let ch = await channel(conn, false);
    await attempt('checkQueue missing', () => ch.checkQueue(Q('missing')));
    ch = await channel(conn, false);
    await attempt('checkExchange missing', () => ch.checkExchange(X('missing')));
    ch = await channel(conn, false);
    const q = Q('q');
    await ch.assertQueue(q, {durable: true, arguments: {'x-max-length': 10}});
    await attempt('assertQueue different durable', () => ch.assertQueue(q, {durable: false}));
    ch = await channel(conn, false);
    await attempt('assertQueue different args', () => ch.assertQueue(q, {durable: true, maxLength: 20}));
    ch = await channel(conn, false);
    await attempt('assertExchange amq. name', () => ch.assertExchange('amq.compat-nope', 'direct'));
    ch = await channel(conn, false);
    await attempt('operation on closed channel', async () => {
      await ch.checkQueue(Q('missing2')).catch(() => {});
      return ch.checkQueue(q);
    });
    ch = await channel(conn, false);
    await attempt('checkQueue existing', async () => declareOk(await ch.checkQueue(q)));
    // an unknown exchange type is a connection error (503): use a connection of its own
    const c3 = await amqp.connect(url);
    const events = [];
    c3.on('error', (e) => events.push(['error', err(e)]));
    c3.on('close', (e) => events.push(['close', e ? err(e) : 'clean']));
    const ch3 = await channel(c3, false);
    await attempt('assertExchange bad type', () => ch3.assertExchange(X('bad'), 'no-such-type'));
    await sleep(100);
    obs['bad type connection events'] = events;
  },

  async 'exchange-bindings'(conn) {
    const ch = await channel(conn, true);
    const src = X('src'); const dst = X('dst'); const q = Q('q'); const q2 = Q('q2');
    await ch.assertExchange(src, 'topic', {durable: false});
    await ch.assertExchange(dst, 'fanout', {durable: false});
    await ch.assertQueue(q); await ch.assertQueue(q2);
    await attempt('bindExchange', () => ch.bindExchange(dst, src, 'a.*'));
    await ch.bindQueue(q, dst, '');
    await ch.bindQueue(q2, src, '#');
    ch.publish(src, 'a.b', Buffer.from('ab'));
    ch.publish(src, 'x.y', Buffer.from('xy'));
    await ch.waitForConfirms();
    await attempt('unbindExchange', () => ch.unbindExchange(dst, src, 'a.*'));
    ch.publish(src, 'a.c', Buffer.from('ac'));
    await ch.waitForConfirms();
    for (const [k, n] of [['q', q], ['q2', q2]]) {
      const out = [];
      for (;;) { const m = await ch.get(n, {noAck: true}); if (!m) break; out.push(m.content.toString() + ' ' + m.fields.routingKey); }
      obs[k] = out;
    }
    const ch2 = await channel(conn, false);
    await attempt('bindExchange missing source', () => ch2.bindExchange(dst, X('missing'), 'k'));
  },

  async 'get-purge-counts'(conn) {
    const ch = await channel(conn, true);
    const q = Q('q');
    obs['assertQueue'] = declareOk(await ch.assertQueue(q, {exclusive: false}));
    for (let i = 0; i < 6; i++) ch.sendToQueue(q, Buffer.from(`m${i}`), {priority: i, expiration: '60000'});
    await ch.waitForConfirms();
    obs['checkQueue'] = declareOk(await ch.checkQueue(q));
    const m1 = await ch.get(q, {noAck: false});
    obs['get (ack mode)'] = msg(m1);
    const m2 = await ch.get(q, {noAck: true});
    obs['get (noAck)'] = msg(m2);
    obs['purgeQueue'] = await ch.purgeQueue(q);
    ch.nack(m1, false, true);
    await sleep(150);
    obs['after nack requeue'] = declareOk(await ch.checkQueue(q));
    obs['get requeued'] = msg(await ch.get(q, {noAck: true}));
    obs['get empty'] = await ch.get(q, {noAck: true});
    obs['deleteQueue'] = await ch.deleteQueue(q);
    const q2 = Q('q2');
    await ch.assertQueue(q2);
    ch.sendToQueue(q2, Buffer.from('x'));
    await ch.waitForConfirms();
    await attempt('deleteQueue ifEmpty (not empty)', () => ch.deleteQueue(q2, {ifEmpty: true}));
  },

  async 'connection-close-and-server-properties'(conn) {
    const sp = conn.connection.serverProperties;
    obs['server capabilities'] = sp.capabilities;
    obs['frameMax'] = conn.connection.frameMax;
    obs['channelMax'] = conn.connection.channelMax;
    obs['heartbeat'] = conn.connection.heartbeat;
    const ch = await channel(conn, false);
    const q = Q('q');
    await ch.assertQueue(q, {exclusive: true});
    const c2 = await amqp.connect(url);
    c2.on('error', () => {});
    const ch2 = await channel(c2, false);
    await attempt('exclusive queue from another connection', () => ch2.checkQueue(q));
    const closes = [];
    c2.on('close', (e) => closes.push(e ? err(e) : 'clean'));
    await c2.close();
    obs['other connection close'] = closes;
    await attempt('channel.close', () => ch.close());
  },

  // (restart) the broker restarts under a confirm channel; returns the new
  // connection for the driver to close
  async 'reconnect-after-restart'(conn) {
    const events = [];
    conn.on('error', (e) => events.push({'connection error event': err(e)}));
    conn.on('close', (e) => events.push({'connection close event': e ? err(e) : 'no error'}));
    const ch = await channel(conn, true);
    ch.on('close', () => events.push('channel close event'));
    const dq = Q('durable'), tq = Q('transient'), x = X('x');
    await ch.assertExchange(x, 'topic', {durable: true});
    await ch.assertQueue(dq, {durable: true});
    await ch.assertQueue(tq, {durable: false});
    await ch.bindQueue(dq, x, 'k.#');
    await ch.bindQueue(tq, x, 'k.#');
    for (let i = 0; i < 3; i++) {
      ch.publish(x, `k.${i}`, Buffer.from(`p${i}`),
        {persistent: true, headers: {i}, contentType: 'text/plain', messageId: `m${i}`});
    }
    ch.publish(x, 'k.t', Buffer.from('not-persistent'), {persistent: false});
    await ch.waitForConfirms();
    const held = await ch.get(dq, {noAck: false});
    obs['held (unacked)'] = msg(held);
    obs['before restart'] = {durable: declareOk(await ch.checkQueue(dq)), transient: declareOk(await ch.checkQueue(tq))};
    await restartBroker();
    await sleep(300);
    obs['events'] = events;
    await attempt('old channel: checkQueue', () => ch.checkQueue(dq));
    await attempt('old channel: ack the held message', () => ch.ack(held));
    await attempt('old connection: createChannel', () => conn.createChannel());
    const c2 = await connectRetrying(50, 200);
    c2.on('error', (e) => { obs['new connection error'] = err(e); });
    let ch2 = await channel(c2, false);
    obs['durable queue after restart'] = declareOk(await ch2.checkQueue(dq));
    await attempt('transient queue after restart (checkQueue)', () => ch2.checkQueue(tq));
    ch2 = await channel(c2, false);
    await attempt('durable exchange after restart (checkExchange)', () => ch2.checkExchange(x));
    ch2.publish(x, 'k.after', Buffer.from('after'), {persistent: true});
    const got = [];
    for (let i = 0; i < 10; i++) {
      const m = await ch2.get(dq, {noAck: true});
      if (!m) break;
      got.push(msg(m));
    }
    obs['durable queue messages after restart'] = got;
    return c2;
  },
};

(async () => {
  let conn;
  try {
    conn = await amqp.connect(url);
    conn.on('error', (e) => { obs['connection error'] = err(e); });
    const replacement = await SCENARIOS[name](conn);
    if (replacement && replacement !== conn) conn = replacement;
  } catch (e) {
    obs['uncaught'] = err(e);
  }
  try { if (conn) await conn.close(); } catch (e) { obs['close error'] = err(e); }
  obs._resources = resources;
  process.stdout.write(JSON.stringify(obs) + '\n');
})();
