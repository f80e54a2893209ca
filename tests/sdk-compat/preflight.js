#!/usr/bin/env node
// Checks engine.json and the engine's TLS the way the Node SDKs will use them, before any SDK call:
// bare host names on port 443, connection strings naming the same hosts, and a server certificate that verifies
// against caCertificate alone for each host (IP SANs for IP hosts; no SNI is sent for IPs).
// usage: node preflight.js ENGINE_JSON
'use strict';
const fs = require('fs');
const tls = require('tls');
const net = require('net');
const { loadEngine } = require('./lib');

function csHost(cs) {
  const m = /(?:^|;)HostName=([^;]+)/.exec(cs || '');
  return m && m[1];
}

function probe(host, ca) {
  return new Promise((resolve) => {
    const opts = { host, port: 443, ca, rejectUnauthorized: false };
    if (!net.isIP(host)) opts.servername = host;
    const s = tls.connect(opts, () => {
      const cert = s.getPeerCertificate(true);
      let err = s.authorizationError ? String(s.authorizationError) : null;
      if (!err) {
        const idErr = tls.checkServerIdentity(host, cert);
        if (idErr) err = idErr.message;
      }
      s.end();
      resolve({ ok: !err, err, subject: cert.subject && cert.subject.CN, san: cert.subjectaltname });
    });
    s.setTimeout(5000, () => { s.destroy(); resolve({ ok: false, err: 'timeout' }); });
    s.on('error', (e) => resolve({ ok: false, err: `${e.code || ''} ${e.message}` }));
  });
}

async function main() {
  const cfg = loadEngine(process.argv[2]);
  let failed = 0;
  const check = (ok, msg) => { console.log(`${ok ? 'PASS' : 'FAIL'} preflight: ${msg}`); if (!ok) failed++; };
  check(fs.existsSync(cfg.caCertificate), `caCertificate ${cfg.caCertificate} exists`);
  const ca = fs.existsSync(cfg.caCertificate) ? fs.readFileSync(cfg.caCertificate) : undefined;
  const targets = [
    ['provisioningService', cfg.provisioningService.endpoint, cfg.provisioningService.hostName, cfg.provisioningService.connectionString],
    ['deviceEndpoint', cfg.deviceEndpoint, null, null],
    ...cfg.hubs.map((h, i) => [`hubs[${i}] ${h.name}`, h.endpoint, h.hostName, h.connectionString]),
  ];
  for (const [what, endpoint, hostName, cs] of targets) {
    let u;
    try { u = new URL(endpoint); } catch (_) { check(false, `${what}: endpoint '${endpoint}' is not a URL`); continue; }
    check(u.protocol === 'https:' && (!u.port || u.port === '443'), `${what}: endpoint ${endpoint} is https on 443 (the Node SDKs cannot use another port)`);
    if (hostName !== null) {
      check(hostName === u.hostname, `${what}: hostName '${hostName}' is the endpoint's host`);
      check(csHost(cs) === hostName, `${what}: connection string HostName '${csHost(cs)}' is the bare hostName (no scheme, no port)`);
    }
    const r = await probe(u.hostname, ca);
    check(r.ok, `${what}: TLS to ${u.hostname}:443 verifies against caCertificate alone${r.ok ? '' : ' -- ' + r.err}${r.san ? ` (CN ${r.subject}, SAN ${r.san})` : ''}`);
  }
  console.log(`preflight: ${failed ? 'FAILED' : 'ok'}`);
  process.exit(failed ? 1 : 0);
}

main().catch((err) => { console.error('preflight: crashed:', err); process.exit(1); });
