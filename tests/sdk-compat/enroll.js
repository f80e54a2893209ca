#!/usr/bin/env node
// Small helper for run-all.sh, using the same official service SDKs as service.js / registry.js.
// usage: node enroll.js ENGINE_JSON COMMAND ARGS...
//   individual-sym ID [disabled]   create an individual symmetric-key enrollment (service-generated keys); prints the primary key
//   individual-x509 ID CERT_PEM    create an individual X.509 enrollment with CERT_PEM as primary client certificate
//   group-x509 ID CA_PEM           create an X.509 enrollment group with CA_PEM as primary signing certificate
//   group-sym ID                   create a symmetric-key enrollment group with a supplied key; prints the group key
//   derive GROUP_KEY REG_ID        prints the device key derived from a group key
//   group-regs GROUP_ID            prints "<registrationId>:<status> ..." of the group's registration states
//   regstate ID                    prints "<status> <assignedHub> <deviceId>" of a registration state
//   hub-device HUB_HOST DEVICE_ID  prints "<status> <authentication.type>" of a device in the hub with that host name
//   delete-regstate ID             deletes a registration state with its etag and checks that GET then gives 404
//   cleanup-individual ID          deletes the enrollment, the registration state and the hub device (errors ignored)
//   cleanup-group ID               deletes the group (errors ignored)
'use strict';
const fs = require('fs');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { Registry } = require('azure-iothub');
const { loadEngine, randomKey, deriveDeviceKey, describe } = require('./lib');

async function main() {
  const [enginePath, cmd, a1, a2] = process.argv.slice(2);
  if (cmd === 'derive') { console.log(deriveDeviceKey(a1, a2)); return; }
  const cfg = loadEngine(enginePath);
  const dps = ProvisioningServiceClient.fromConnectionString(cfg.provisioningService.connectionString);
  const registryFor = (host) => {
    const hub = cfg.hubs.find((h) => h.hostName === host || h.name === host);
    if (!hub) throw new Error(`no hub ${host} in engine.json`);
    return Registry.fromConnectionString(hub.connectionString);
  };
  switch (cmd) {
    case 'individual-sym': {
      const r = await dps.createOrUpdateIndividualEnrollment({
        registrationId: a1,
        attestation: { type: 'symmetricKey' },
        provisioningStatus: a2 === 'disabled' ? 'disabled' : 'enabled',
      });
      // GET never returns keys; the attestation mechanism call does.
      const am = (await dps.getIndividualEnrollmentAttestationMechanism(a1)).responseBody;
      const key = am && am.symmetricKey && am.symmetricKey.primaryKey;
      if (!key) throw new Error(`no primary key from attestationmechanism: ${JSON.stringify(am)} (PUT gave ${JSON.stringify(r.responseBody)})`);
      console.log(key);
      break;
    }
    case 'individual-x509': {
      const pem = fs.readFileSync(a2, 'utf8');
      await dps.createOrUpdateIndividualEnrollment({
        registrationId: a1,
        attestation: { type: 'x509', x509: { clientCertificates: { primary: { certificate: pem } } } },
      });
      console.log('created');
      break;
    }
    case 'group-x509': {
      const pem = fs.readFileSync(a2, 'utf8');
      await dps.createOrUpdateEnrollmentGroup({
        enrollmentGroupId: a1,
        attestation: { type: 'x509', x509: { signingCertificates: { primary: { certificate: pem } } } },
      });
      console.log('created');
      break;
    }
    case 'group-sym': {
      const key = randomKey(64);
      await dps.createOrUpdateEnrollmentGroup({
        enrollmentGroupId: a1,
        attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: key, secondaryKey: randomKey(64) } },
      });
      console.log(key);
      break;
    }
    case 'regstate': {
      const s = (await dps.getDeviceRegistrationState(a1)).responseBody;
      console.log(`${s.status} ${s.assignedHub} ${s.deviceId}`);
      break;
    }
    case 'group-regs': {
      const q = dps.createEnrollmentGroupDeviceRegistrationStateQuery({ query: 'SELECT *' }, a1);
      const ids = [];
      while (q.hasMoreResults) {
        const r = await q.next(q.continuationToken);
        for (const st of r.responseBody) ids.push(`${st.registrationId}:${st.status}`);
      }
      console.log(ids.join(' '));
      break;
    }
    case 'hub-device': {
      const d = (await registryFor(a1).get(a2)).responseBody;
      console.log(`${d.status} ${d.authentication && d.authentication.type}`);
      break;
    }
    case 'delete-regstate': {
      const st = (await dps.getDeviceRegistrationState(a1)).responseBody;
      await dps.deleteDeviceRegistrationState(a1, st.etag);
      try {
        await dps.getDeviceRegistrationState(a1);
      } catch (err) {
        if (err.response && err.response.statusCode === 404) { console.log('deleted'); break; }
        throw err;
      }
      throw new Error('registration state still there after DELETE');
    }
    case 'cleanup-individual': {
      let state;
      try { state = (await dps.getDeviceRegistrationState(a1)).responseBody; } catch (_) { /* none */ }
      for (const f of [() => dps.deleteIndividualEnrollment(a1), () => dps.deleteDeviceRegistrationState(a1)]) {
        try { await f(); } catch (_) { /* ignore */ }
      }
      if (state && state.assignedHub && state.deviceId) {
        try { await registryFor(state.assignedHub).delete(state.deviceId); } catch (_) { /* ignore */ }
      }
      break;
    }
    case 'cleanup-group': {
      try { await dps.deleteEnrollmentGroup(a1); } catch (_) { /* ignore */ }
      break;
    }
    default:
      console.error('unknown command; see the header of enroll.js');
      process.exit(2);
  }
}

main().then(() => process.exit(0), (err) => { console.error(`enroll ${process.argv[3]}: ${describe(err)}`); process.exit(1); });
