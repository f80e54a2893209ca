#!/usr/bin/env node
// DPS device registration over HTTP through the official ProvisioningDeviceClient, unchanged.
// usage: NODE_EXTRA_CA_CERTS=<ca> node device.js ENGINE_JSON REGISTRATION_ID KEY
//        NODE_EXTRA_CA_CERTS=<ca> node device.js ENGINE_JSON --x509 CERT_PEM KEY_PEM
// CERT_PEM may hold the device certificate followed by its chain; the registration ID is the leaf's CN.
// Prints "assigned <hub> <deviceId>" and exits 0. Exits 3 after printing "refused <how> <error>" when the service
// refused the device in one of the ways Azure does: "at-register" (HTTP 401 with errorCode 401002 to the PUT),
// "disabled" or "failed" (the operation's final status). Any other answer (500, 404, a body the SDK cannot read)
// or no answer exits 1; bad usage exits 2.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { loadEngine, hostOf, describe, statusOf } = require('./lib');

function usage() {
  console.error('usage: device.js ENGINE_JSON REGISTRATION_ID KEY | device.js ENGINE_JSON --x509 CERT_PEM KEY_PEM');
  process.exit(2);
}

// How the service refused the device, or undefined when the error is not one of Azure's refusals.
function refusal(err) {
  // A final status comes with the 200 that carried it, so it is read before the HTTP status.
  const status = err && err.result && typeof err.result.status === 'string' ? err.result.status.toLowerCase() : '';
  if (status === 'disabled' || status === 'failed') return status;
  if (statusOf(err) === 401 && errorCodeOf(err) === 401002) return 'at-register';
  return undefined;
}

function errorCodeOf(err) {
  let body = err.responseBody;
  if (typeof body === 'string') {
    try { body = JSON.parse(body); } catch (_) { return undefined; }
  }
  return body && typeof body === 'object' ? Number(body.errorCode) : undefined;
}

async function main() {
  const [enginePath, a1, a2, a3] = process.argv.slice(2);
  if (!enginePath || !a1 || !a2) usage();
  const cfg = loadEngine(enginePath);
  const provisioningHost = hostOf(cfg.deviceEndpoint, 'device');
  let security;
  if (a1 === '--x509') {
    if (!a3) usage();
    const { X509Security } = require('azure-iot-security-x509');
    const certPem = fs.readFileSync(a2, 'utf8');
    const keyPem = fs.readFileSync(a3, 'utf8');
    const leaf = new crypto.X509Certificate(certPem); // first certificate of the file
    const cn = /(?:^|\n)CN=([^\n]+)/.exec(leaf.subject);
    if (!cn) throw new Error(`certificate subject has no CN: ${leaf.subject}`);
    security = new X509Security(cn[1], { cert: certPem, key: keyPem });
  } else {
    const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
    security = new SymmetricKeySecurityClient(a1, a2);
  }
  const client = ProvisioningDeviceClient.create(provisioningHost, cfg.idScope, new Http(), security);
  let result;
  try {
    result = await client.register();
  } catch (err) {
    const how = refusal(err);
    if (how) {
      console.log(`refused ${how} ${describe(err)}`);
      process.exit(3);
    }
    console.log(`error ${describe(err)}`);
    process.exit(1);
  }
  if (!result || !result.assignedHub || !result.deviceId) {
    console.log(`unexpected registrationState ${JSON.stringify(result)}`);
    process.exit(1);
  }
  console.log(`assigned ${result.assignedHub} ${result.deviceId}`);
  process.exit(0);
}

process.on('beforeExit', () => { console.log('device: the SDK call never completed (event loop drained)'); process.exit(1); });
main().catch((err) => { console.error('device: crashed:', describe(err)); process.exit(1); });
