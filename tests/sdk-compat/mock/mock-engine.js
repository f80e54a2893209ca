#!/usr/bin/env node
// A tiny in-memory stand-in for `dps-operator engine`, written only to check that the harness itself works
// (tests/sdk-compat/mock/selftest.sh). It follows WIRE-NOTES.md; it is not the engine and is not a spec.
// usage: node mock-engine.js DATA_DIR DPS_IP HUB_IP   (listens on DPS_IP:443 and HUB_IP:443; writes DATA_DIR/engine.json)
'use strict';
const https = require('https');
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { execFileSync } = require('child_process');

const [dataDir, dpsIp, hubIp] = process.argv.slice(2);
fs.mkdirSync(dataDir, { recursive: true });
const f = (n) => path.join(dataDir, n);
const ossl = (...a) => execFileSync('openssl', a, { stdio: ['ignore', 'ignore', 'inherit'] });
ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=mock-ca',
  '-keyout', f('ca.key'), '-out', f('ca.crt'));
ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=mock-engine', '-keyout', f('tls.key'), '-out', f('tls.csr'));
fs.writeFileSync(f('ext.cnf'), `subjectAltName=IP:${dpsIp},IP:${hubIp}\nextendedKeyUsage=serverAuth\n`);
ossl('x509', '-req', '-in', f('tls.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f('ext.cnf'), '-out', f('tls.crt'));

const b64 = (n) => crypto.randomBytes(n).toString('base64');
const idScope = '0ne0000MOCK';
const dpsKey = b64(32);
const hubKey = b64(32);
const hubHost = hubIp;
fs.writeFileSync(f('engine.json'), JSON.stringify({
  idScope, caCertificate: path.resolve(f('ca.crt')),
  provisioningService: { hostName: dpsIp, endpoint: `https://${dpsIp}:443`, connectionString: `HostName=${dpsIp};SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=${dpsKey}` },
  deviceEndpoint: `https://${dpsIp}:443`,
  hubs: [{ name: 'hub1', hostName: hubHost, endpoint: `https://${hubHost}:443`, connectionString: `HostName=${hubHost};SharedAccessKeyName=iothubowner;SharedAccessKey=${hubKey}` }],
}, null, 2));

const enrollments = new Map(); const groups = new Map(); const states = new Map(); const devices = new Map(); const ops = new Map();
const now = () => new Date().toISOString();
const etag = () => `"${crypto.randomUUID()}"`;
const hmac = (key, s) => crypto.createHmac('sha256', Buffer.from(key, 'base64')).update(s).digest('base64');
const unq = (e) => (e || '').replace(/^"|"$/g, '');

function sasOk(header, key, expectSr, expectSkn) {
  if (!header || !header.startsWith('SharedAccessSignature ')) return false;
  const p = {};
  for (const kv of header.slice(22).split('&')) { const i = kv.indexOf('='); p[kv.slice(0, i)] = kv.slice(i + 1); }
  if (!p.sr || !p.sig || !p.se) return false;
  if (Number(p.se) < Date.now() / 1000) return false;
  if (expectSkn && decodeURIComponent(p.skn || '') !== expectSkn) return false;
  if (decodeURIComponent(p.sr).toLowerCase() !== expectSr.toLowerCase()) return false;
  const want = Buffer.from(hmac(key, p.sr + '\n' + p.se)); // signed over sr exactly as sent
  const got = Buffer.from(decodeURIComponent(p.sig));
  return want.length === got.length && crypto.timingSafeEqual(want, got);
}

function send(res, status, body, headers = {}) {
  const h = Object.assign({}, headers);
  let data = '';
  if (body !== undefined) { data = JSON.stringify(body); h['Content-Type'] = 'application/json; charset=utf-8'; }
  h['Content-Length'] = Buffer.byteLength(data);
  res.writeHead(status, h); res.end(data);
}
const dpsErr = (res, status, code, message) => send(res, status, { errorCode: code, trackingId: crypto.randomUUID(), message, timestampUtc: now() }, { 'x-ms-error-code': String(code) });
const hubErr = (res, status, code, message) => send(res, status, { Message: `ErrorCode:${code};${message}`, ExceptionMessage: '' }, { 'iothub-errorcode': code });

function page(req, res, items) {
  const max = Number(req.headers['x-ms-max-item-count']) || 100;
  const start = Number(req.headers['x-ms-continuation'] || 0);
  const h = { 'x-ms-item-type': 'Enrollment' };
  if (start + max < items.length) h['x-ms-continuation'] = String(start + max);
  send(res, 200, items.slice(start, start + max), h);
}

function redact(e) { const c = JSON.parse(JSON.stringify(e)); if (c.attestation && c.attestation.symmetricKey) c.attestation.symmetricKey = { primaryKey: null, secondaryKey: null }; return c; }

function putRecord(store, id, body, req, res, idField) {
  const cur = store.get(id.toLowerCase());
  const im = req.headers['if-match'];
  if (cur && !im) return dpsErr(res, 409, 409201, 'exists');
  if (cur && im !== '*' && unq(im) !== unq(cur.etag)) return dpsErr(res, 412, 412002, 'etag mismatch');
  if (!cur && im && im !== '*') return dpsErr(res, 404, 404201, 'not found');
  const rec = Object.assign({}, body, { [idField]: id, etag: etag(), provisioningStatus: body.provisioningStatus || 'enabled',
    createdDateTimeUtc: cur ? cur.createdDateTimeUtc : now(), lastUpdatedDateTimeUtc: now() });
  if (rec.attestation && rec.attestation.type === 'symmetricKey') {
    const sk = rec.attestation.symmetricKey || {};
    rec.attestation.symmetricKey = { primaryKey: sk.primaryKey || b64(64), secondaryKey: sk.secondaryKey || b64(64) };
  }
  if (rec.attestation && rec.attestation.type === 'x509') {
    const cc = rec.attestation.x509.clientCertificates;
    if (cc && cc.primary) cc.primary.info = { sha256Thumbprint: new crypto.X509Certificate(cc.primary.certificate).fingerprint256.replace(/:/g, '') };
  }
  store.set(id.toLowerCase(), rec);
  send(res, cur ? 200 : 200, rec);
}

function dpsService(req, res, url, body) {
  if (!sasOk(req.headers.authorization, dpsKey, dpsIp, 'provisioningserviceowner')) return dpsErr(res, 401, 401002, 'unauthorized');
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  const kind = (parts[0] || '').toLowerCase();
  const store = kind === 'enrollments' ? enrollments : kind === 'enrollmentgroups' ? groups : kind === 'registrations' ? states : null;
  const idField = kind === 'enrollmentgroups' ? 'enrollmentGroupId' : 'registrationId';
  if (!store) return dpsErr(res, 404, 404000, 'no route');
  if (parts.length === 1 && req.method === 'POST' && kind !== 'registrations') {
    const list = body[kind === 'enrollments' ? 'enrollments' : 'enrollmentGroups'] || [];
    const errors = [];
    for (const e of list) {
      const id = e[idField]; const k = id.toLowerCase();
      if (body.mode === 'create') { if (store.has(k)) errors.push({ [idField]: id, errorCode: 409201, errorStatus: 'exists' }); else store.set(k, Object.assign({ provisioningStatus: 'enabled' }, e, { etag: etag() })); }
      else if (body.mode === 'delete') store.delete(k);
    }
    return send(res, 200, { isSuccessful: errors.length === 0, errors });
  }
  if (parts.length === 2 && parts[1] === 'query' && req.method === 'POST') return page(req, res, [...store.values()].map(redact));
  if (parts.length === 3 && parts[2] === 'query' && kind === 'registrations' && req.method === 'POST') return page(req, res, [...states.values()].filter((s) => s.enrollmentGroupId === parts[1]));
  const id = parts[1]; const cur = store.get((id || '').toLowerCase());
  if (parts.length === 3 && parts[2] === 'attestationmechanism' && req.method === 'POST') return cur ? send(res, 200, cur.attestation) : dpsErr(res, 404, 404201, 'not found');
  if (parts.length !== 2) return dpsErr(res, 404, 404000, 'no route');
  if (req.method === 'GET') return cur ? send(res, 200, kind === 'registrations' ? cur : redact(cur)) : dpsErr(res, 404, 404201, 'not found');
  if (req.method === 'DELETE') {
    if (!cur) return dpsErr(res, 404, 404201, 'not found');
    const im = req.headers['if-match'];
    if (im && im !== '*' && unq(im) !== unq(cur.etag)) return dpsErr(res, 412, 412002, 'etag mismatch');
    store.delete(id.toLowerCase()); return send(res, 204);
  }
  if (req.method === 'PUT' && kind !== 'registrations') return putRecord(store, id, body, req, res, idField);
  return dpsErr(res, 405, 405000, 'method');
}

function dpsDevice(req, res, url, body, parts) {
  const [scope, , regId, verb, opId] = parts;
  if (scope !== idScope) return dpsErr(res, 401, 401002, 'bad scope');
  if (verb === 'operations') {
    const op = ops.get(opId);
    return op && op.registrationId === regId ? send(res, 200, op) : dpsErr(res, 404, 404000, 'no operation');
  }
  if (verb !== 'register' || req.method !== 'PUT') return dpsErr(res, 404, 404000, 'no route');
  const ind = enrollments.get(regId.toLowerCase());
  let enr = null; let key = null; let groupId;
  const peer = req.socket.getPeerX509Certificate && req.socket.getPeerX509Certificate();
  if (peer) {
    const cn = (/CN=([^\n]+)/.exec(peer.subject) || [])[1];
    if (cn !== regId) return dpsErr(res, 401, 401002, 'CN mismatch');
    if (ind && ind.attestation.type === 'x509') {
      const want = ind.attestation.x509.clientCertificates.primary.info.sha256Thumbprint;
      if (peer.fingerprint256.replace(/:/g, '') !== want) return dpsErr(res, 401, 401002, 'thumbprint');
      enr = ind;
    } else if (!ind) {
      // the chain the device sent, leaf first; a group matches when its signing certificate issued one of them
      const chain = [];
      for (let c = req.socket.getPeerCertificate(true); c && c.raw && !chain.some((x) => x.raw.equals(c.raw)); c = c.issuerCertificate) {
        chain.push(new crypto.X509Certificate(c.raw));
      }
      if (process.env.MOCK_LOG) console.error('peer chain: ' + chain.map((c) => c.subject).join(' <- ') + ' groups: ' + [...groups.keys()].join(','));
      for (const g of groups.values()) {
        const sc = g.attestation.type === 'x509' && g.attestation.x509.signingCertificates;
        if (!sc) continue;
        const ca = new crypto.X509Certificate(sc.primary.certificate);
        if (chain.some((c) => c.fingerprint256 === ca.fingerprint256 || (c.checkIssued(ca) && c.verify(ca.publicKey)))) { enr = g; groupId = g.enrollmentGroupId; break; }
      }
      if (!enr) return dpsErr(res, 401, 401002, 'no enrollment');
    } else return dpsErr(res, 401, 401002, 'no enrollment');
  } else {
    if (ind && ind.attestation.type === 'symmetricKey') { enr = ind; key = [ind.attestation.symmetricKey.primaryKey, ind.attestation.symmetricKey.secondaryKey]; }
    else if (!ind) {
      for (const g of groups.values()) {
        const sk = g.attestation.symmetricKey;
        const ks = [sk.primaryKey, sk.secondaryKey].map((k) => hmac(k, regId));
        if (ks.some((k) => sasOk(req.headers.authorization, k, `${scope}/registrations/${regId}`, 'registration'))) { enr = g; key = ks; groupId = g.enrollmentGroupId; break; }
      }
    }
    if (!enr || !key.some((k) => sasOk(req.headers.authorization, k, `${scope}/registrations/${regId}`, 'registration'))) return dpsErr(res, 401, 401002, 'unauthorized');
  }
  if (enr.provisioningStatus === 'disabled') return dpsErr(res, 401, 401002, 'disabled');
  const deviceId = enr.deviceId || regId;
  if (!devices.has(deviceId)) devices.set(deviceId, newDevice(deviceId, {}));
  const state = { registrationId: regId, createdDateTimeUtc: now(), assignedHub: hubHost, deviceId, status: 'assigned', substatus: 'initialAssignment', lastUpdatedDateTimeUtc: now(), etag: etag(), enrollmentGroupId: groupId };
  states.set(regId.toLowerCase(), state);
  const operationId = `5.${crypto.randomUUID()}`;
  ops.set(operationId, { operationId, status: 'assigned', registrationState: state, registrationId: regId });
  send(res, 202, { operationId, status: 'assigning' }, { 'Retry-After': '1' });
}

function newDevice(id, d) {
  const sk = (d.authentication && d.authentication.symmetricKey) || {};
  return Object.assign({}, d, { deviceId: id, generationId: String(Date.now()), etag: Buffer.from(crypto.randomUUID()).toString('base64'),
    status: d.status || 'enabled', statusReason: d.statusReason || null, connectionState: 'Disconnected', cloudToDeviceMessageCount: 0,
    authentication: { type: 'sas', symmetricKey: { primaryKey: sk.primaryKey || b64(32), secondaryKey: sk.secondaryKey || b64(32) }, x509Thumbprint: { primaryThumbprint: null, secondaryThumbprint: null } },
    capabilities: { iotEdge: false } });
}

function hub(req, res, url, body) {
  if (!sasOk(req.headers.authorization, hubKey, hubHost, 'iothubowner')) return hubErr(res, 401, 'IotHubUnauthorizedAccess', 'unauthorized');
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] !== 'devices') return hubErr(res, 404, 'NotFound', 'no route');
  if (parts.length === 1 && req.method === 'GET') return send(res, 200, [...devices.values()]);
  if (parts.length === 1 && req.method === 'POST') {
    const errors = [];
    for (const it of body) {
      const mode = String(it.importMode).toLowerCase();
      if (mode === 'create') { if (devices.has(it.id)) errors.push({ deviceId: it.id, errorCode: 'DeviceAlreadyExists', errorStatus: 'exists', operation: 'create' }); else devices.set(it.id, newDevice(it.id, it)); }
      else if (mode === 'delete') devices.delete(it.id);
    }
    return send(res, errors.length === body.length && errors.length ? 400 : 200, { isSuccessful: errors.length === 0, errors, warnings: [] });
  }
  if (parts.length === 2 && parts[1] === 'query' && req.method === 'POST') return page(req, res, [...devices.values()].map((d) => ({ deviceId: d.deviceId, etag: 'AAAAAAAAAAE=', status: d.status })));
  const id = parts[1]; const cur = devices.get(id);
  if (req.method === 'GET') return cur ? send(res, 200, cur) : hubErr(res, 404, 'DeviceNotFound', `Device ${id} not found`);
  if (req.method === 'DELETE') { if (!cur) return hubErr(res, 404, 'DeviceNotFound', 'not found'); devices.delete(id); return send(res, 204); }
  if (req.method === 'PUT') {
    const im = req.headers['if-match'];
    if (!im) { if (cur) return hubErr(res, 409, 'DeviceAlreadyExists', 'exists'); const d = newDevice(id, body); devices.set(id, d); return send(res, 200, d); }
    if (!cur) return hubErr(res, 404, 'DeviceNotFound', 'not found');
    const d = newDevice(id, body); d.generationId = cur.generationId; devices.set(id, d); return send(res, 200, d);
  }
  return hubErr(res, 405, 'NotAllowed', 'method');
}

function handler(which) {
  return (req, res) => {
    let raw = '';
    req.on('data', (c) => { raw += c; });
    req.on('end', () => {
      const url = new URL(req.url, 'https://x');
      let body = {};
      try { body = raw ? JSON.parse(raw) : {}; } catch (_) { return send(res, 400, { message: 'bad json' }); }
      if (process.env.MOCK_LOG) console.error(`${which} ${req.method} ${req.url} ${JSON.stringify(req.headers)} ${raw.slice(0, 300)}`);
      if (which === 'hub') return hub(req, res, url, body);
      const parts = url.pathname.split('/').filter(Boolean);
      if (parts[1] === 'registrations' && parts.length >= 4) return dpsDevice(req, res, url, body, parts);
      return dpsService(req, res, url, body);
    });
  };
}

const tls = { key: fs.readFileSync(f('tls.key')), cert: fs.readFileSync(f('tls.crt')), requestCert: true, rejectUnauthorized: false };
https.createServer(tls, handler('dps')).listen(443, dpsIp);
https.createServer(tls, handler('hub')).listen(443, hubIp, () => console.log(`mock engine ready: ${f('engine.json')}`));
