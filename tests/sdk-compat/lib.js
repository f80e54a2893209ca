// Shared helpers for the SDK compatibility scripts. Only engine.json is read; nothing is hard-coded.
'use strict';
const fs = require('fs');
const crypto = require('crypto');

function loadEngine(p) {
  if (!p) {
    console.error('usage: node ' + require('path').basename(process.argv[1]) + ' ENGINE_JSON ...');
    process.exit(2);
  }
  const cfg = JSON.parse(fs.readFileSync(p, 'utf8'));
  for (const k of ['idScope', 'caCertificate', 'provisioningService', 'deviceEndpoint', 'hubs']) {
    if (cfg[k] === undefined) throw new Error(`engine.json has no '${k}'`);
  }
  // Node reads NODE_EXTRA_CA_CERTS only at start-up, so it cannot be set from here; warn when it lacks the CA.
  let trusted = false;
  try {
    const ca = fs.readFileSync(cfg.caCertificate, 'utf8').trim();
    trusted = !!process.env.NODE_EXTRA_CA_CERTS && fs.readFileSync(process.env.NODE_EXTRA_CA_CERTS, 'utf8').includes(ca);
  } catch (_) { /* reported below */ }
  if (!trusted) {
    console.error(`warning: NODE_EXTRA_CA_CERTS (${process.env.NODE_EXTRA_CA_CERTS || 'unset'}) does not contain ${cfg.caCertificate}; TLS to the engine will fail`);
  }
  return cfg;
}

// Host part of an https endpoint. The Node SDKs take a bare host name and always connect to 443.
function hostOf(endpoint, what) {
  const u = new URL(endpoint);
  if (u.protocol !== 'https:') throw new Error(`${what} endpoint ${endpoint} is not https`);
  if (u.port && u.port !== '443') {
    throw new Error(`${what} endpoint ${endpoint} uses port ${u.port}; the Node SDKs cannot take a port (they always use 443)`);
  }
  return u.hostname;
}

function unique(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${crypto.randomBytes(3).toString('hex')}`;
}

function randomKey(bytes = 64) {
  return crypto.randomBytes(bytes).toString('base64');
}

// Symmetric-key group device key: base64(HMAC-SHA256(base64decode(groupKey), registrationId)).
function deriveDeviceKey(groupKey, registrationId) {
  return crypto.createHmac('sha256', Buffer.from(groupKey, 'base64')).update(registrationId, 'utf8').digest('base64');
}

// A step runner: one line per step, stops at the first unexpected result.
class Steps {
  constructor(name) {
    this.name = name;
    this.passed = 0;
    this.cleanups = [];
    this.current = null;
    // If an SDK promise never settles the event loop drains and node would exit 0: make that a failure.
    process.on('beforeExit', () => {
      console.log(`FAIL ${this.name}: ${this.current || 'after the last step'} -- the SDK call never completed (event loop drained)`);
      process.exit(1);
    });
  }
  async step(title, fn) {
    this.current = title;
    try {
      const note = await fn();
      this.passed++;
      console.log(`PASS ${this.name}: ${title}${note ? ' -- ' + note : ''}`);
    } catch (err) {
      console.log(`FAIL ${this.name}: ${title} -- ${describe(err)}`);
      if (process.env.SDK_COMPAT_CONTINUE) { this.failed = (this.failed || 0) + 1; return; }
      await this.cleanup();
      console.log(`${this.name}: ${this.passed} passed, 1 failed`);
      process.exit(1);
    }
  }
  onCleanup(fn) { this.cleanups.push(fn); }
  async cleanup() {
    for (const fn of this.cleanups.reverse()) {
      try { await fn(); } catch (_) { /* best effort */ }
    }
    this.cleanups = [];
  }
  done() {
    console.log(`${this.name}: ${this.passed} passed, ${this.failed || 0} failed`);
    if (this.failed) process.exit(1);
  }
}

function statusOf(err) {
  if (!err) return undefined;
  if (err.response && err.response.statusCode) return err.response.statusCode;
  if (err.transportObject && err.transportObject.statusCode) return err.transportObject.statusCode;
  return undefined;
}

// Describe an SDK error with as much of the HTTP exchange as the SDK kept.
function describe(err) {
  if (!(err instanceof Error)) return String(err);
  let s = `${err.name}: ${err.message}`;
  const res = err.response || err.transportObject;
  if (res && res.statusCode) {
    s += ` [HTTP ${res.statusCode} ${res.statusMessage || ''}`;
    if (res.req) s += ` for ${res.req.method} ${res.req.path}`;
    s += ']';
    const h = res.headers || {};
    const hs = ['content-type', 'x-ms-error-code', 'iothub-errorcode', 'retry-after', 'etag']
      .filter((k) => h[k] !== undefined).map((k) => `${k}: ${h[k]}`);
    if (hs.length) s += ` headers {${hs.join('; ')}}`;
  }
  if (err.responseBody !== undefined) s += ` body ${truncate(err.responseBody)}`;
  if (err.result !== undefined) s += ` result ${truncate(JSON.stringify(err.result))}`;
  if (err.code) s += ` code ${err.code}`;
  if (!res && err.stack && process.env.SDK_COMPAT_STACK) s += '\n' + err.stack;
  return s;
}

function truncate(s, n = 600) {
  s = typeof s === 'string' ? s : JSON.stringify(s);
  return s && s.length > n ? s.slice(0, n) + '...' : s;
}

function assert(cond, msg) {
  if (!cond) throw new Error('unexpected: ' + msg);
}

// Expect a promise to reject with a given HTTP status; returns the error.
async function expectStatus(promise, status, what) {
  let result;
  try {
    result = await promise;
  } catch (err) {
    const got = statusOf(err);
    if (got === status) return err;
    throw Object.assign(err, { message: `${what}: expected HTTP ${status}, got ${got === undefined ? 'no HTTP status' : got}: ${err.message}` });
  }
  const code = result && result.httpResponse ? result.httpResponse.statusCode : '?';
  throw new Error(`${what}: expected HTTP ${status}, got success (HTTP ${code}) ${truncate(JSON.stringify(result && result.responseBody))}`);
}

function httpStatus(result) {
  return result && result.httpResponse ? result.httpResponse.statusCode : undefined;
}

module.exports = { loadEngine, hostOf, unique, randomKey, deriveDeviceKey, Steps, describe, statusOf, assert, expectStatus, httpStatus, truncate };

// SDK_COMPAT_TRACE=1 prints every HTTP exchange the SDKs make (request line, headers, body; status, headers, body)
// to stderr. The SDKs call https.request through the module object, so wrapping it here catches their calls.
if (process.env.SDK_COMPAT_TRACE) {
  const https = require('https');
  const original = https.request;
  https.request = function tracedRequest(options, cb) {
    const req = original.call(this, options, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        console.error(`<<< ${res.statusCode} ${res.statusMessage} ${JSON.stringify(res.headers)}\n<<< ${truncate(body, 2000)}`);
      });
      if (cb) cb(res);
    });
    const chunks = [];
    const write = req.write;
    req.write = function (c, ...rest) { chunks.push(String(c)); return write.call(this, c, ...rest); };
    const end = req.end;
    req.end = function (...args) {
      if (args[0] && typeof args[0] !== 'function') chunks.push(String(args[0]));
      const h = Object.assign({}, options.headers);
      if (h.Authorization) h.Authorization = String(h.Authorization).replace(/sig=[^&]+/, 'sig=<redacted>');
      console.error(`>>> ${options.method} https://${options.host}${options.path} ${JSON.stringify(h)}${options.cert ? ' [client certificate]' : ''}\n>>> ${truncate(chunks.join(''), 2000)}`);
      return end.apply(this, args);
    };
    return req;
  };
}
