#!/usr/bin/env node
// DPS device registration over HTTP through the official ProvisioningDeviceClient, unchanged.
// usage: NODE_EXTRA_CA_CERTS=<ca> node device.js ENGINE_JSON REGISTRATION_ID KEY
//        NODE_EXTRA_CA_CERTS=<ca> node device.js ENGINE_JSON --x509 CERT_PEM KEY_PEM
// CERT_PEM may hold the device certificate followed by its chain; the registration ID is the leaf's CN.
// Prints "assigned <hub> <deviceId>" and exits 0; prints the error and exits 3 when the service refuses;
// exits 1 when the service could not be reached or answered something the SDK cannot read, 2 on bad usage.
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
    console.log(`refused ${describe(err)}`);
    // A refusal is any answer of the service: an HTTP error status, or a status of failed/disabled/unassigned.
    const answered = statusOf(err) !== undefined || err.result !== undefined;
    process.exit(answered ? 3 : 1);
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
