// amqplib callback-API scenarios for the differential suite.
//   node callback.js NAME URL PREFIX
// Prints the observation as one JSON line (same conventions as scenarios.js).
'use strict';
const path = require('path');
const amqp = require(path.join(__dirname, '..', '..', 'tutorials', 'javascript', 'node_modules', 'amqplib', 'callback_api'));

const [name, url, prefix] = process.argv.slice(2);
const obs = {};
const resources = {queues: [], exchanges: []};
const Q = (s) => { const n = `${prefix}.${s}`; resources.queues.push(n); return n; };
const strip = (s) => s.split(prefix).join('<prefix>');
const err = (e) => ({message: strip(String(e.message))});

let finished = false;
function finish() {
  if (finished) return;
  finished = true;
  obs._resources = resources;
  process.stdout.write(JSON.stringify(obs) + '\n');
  process.exit(0);
}

const SCENARIOS = {
  // amqplib writes connection.close through channel 0's buffer, which the
  // muxer serves ahead of channel 1's backlog: the broker gets the close with
  // publishes still behind it.  RabbitMQ answers close-ok and keeps reading
  // (and dropping) until the client closes its end; a broker that closes the
  // socket at once resets it, amqplib gets EPIPE/ECONNRESET and the close
  // callback never fires.
  'close-with-full-write-buffer'() {
    const events = [];
    obs['events'] = events;
    amqp.connect(url, (e0, conn) => {
      if (e0) { obs['connect'] = err(e0); return finish(); }
      conn.on('error', (e) => events.push(['connection error', err(e)]));
      conn.on('close', (e) => events.push(['connection close', e ? err(e) : 'no error']));
      conn.createChannel((e1, ch) => {
        if (e1) { obs['createChannel'] = err(e1); return finish(); }
        ch.on('error', (e) => events.push(['channel error', err(e)]));
        ch.on('close', () => events.push(['channel close']));
        const q = Q('q');
        ch.assertQueue(q, {durable: false}, (e2) => {
          if (e2) { obs['assertQueue'] = err(e2); return finish(); }
          const body = Buffer.alloc(1000, 'x');
          let n = 0;
          let full = false;
          while (n < 100000) {
            n++;
            if (!ch.publish('', q, body)) { full = true; break; }
          }
          // amqplib's channel buffer holds 1024 writes: deterministic
          obs['publish returned false'] = full;
          obs['publishes until false'] = n;
          conn.close((e3) => {
            events.push(['close callback', e3 ? err(e3) : 'no error']);
            // let a 'close' event that follows the callback arrive
            setTimeout(finish, 200);
          });
          setTimeout(() => { events.push(['close callback did not fire within 6 s']); finish(); }, 6000);
        });
      });
    });
  },
};

SCENARIOS[name]();
