#!/usr/bin/env node
// DPS service API (2021-10-01) through the official ProvisioningServiceClient, unchanged.
// usage: NODE_EXTRA_CA_CERTS=<ca> node service.js ENGINE_JSON
'use strict';
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { loadEngine, unique, randomKey, Steps, assert, expectStatus, httpStatus, truncate } = require('./lib');

async function main() {
  const cfg = loadEngine(process.argv[2]);
  const client = ProvisioningServiceClient.fromConnectionString(cfg.provisioningService.connectionString);
  const s = new Steps('service');
  const regId = unique('sdk-svc-enr');
  const groupId = unique('sdk-svc-grp');
  const pageIds = [unique('sdk-svc-page'), unique('sdk-svc-page')];
  const groupPrimary = randomKey(64);
  const groupSecondary = randomKey(32);
  let created, fetched, updated, createdGroup;

  s.onCleanup(() => client.deleteIndividualEnrollment(regId));
  s.onCleanup(() => client.deleteEnrollmentGroup(groupId));

  await s.step(`create individual enrollment ${regId} (symmetric key, service-generated keys)`, async () => {
    const r = await client.createOrUpdateIndividualEnrollment({
      registrationId: regId,
      attestation: { type: 'symmetricKey' },
    });
    created = r.responseBody;
    assert(created && typeof created === 'object', `PUT response body is not parsed JSON (content-type ${r.httpResponse.headers['content-type']}): ${truncate(created)}`);
    assert(created.registrationId === regId, `registrationId ${created.registrationId}`);
    assert(created.attestation && created.attestation.type === 'symmetricKey', `attestation ${JSON.stringify(created.attestation)}`);
    assert(created.etag, 'no etag in the PUT response body');
    assert(created.provisioningStatus === 'enabled', `provisioningStatus ${created.provisioningStatus} (default must be enabled)`);
    const sk = created.attestation.symmetricKey || {};
    assert(sk.primaryKey && sk.secondaryKey, 'PUT response carries no generated symmetric keys');
    assert(Buffer.from(sk.primaryKey, 'base64').length >= 16, 'primaryKey is not base64 of >=16 bytes');
    return `HTTP ${httpStatus(r)}, etag ${created.etag}`;
  });

  await s.step('get the attestation mechanism (keys)', async () => {
    const r = await client.getIndividualEnrollmentAttestationMechanism(regId);
    const am = r.responseBody;
    assert(am && am.type === 'symmetricKey', `body ${truncate(am)}`);
    assert(am.symmetricKey && am.symmetricKey.primaryKey === created.attestation.symmetricKey.primaryKey, 'primaryKey differs from the PUT response');
    return `HTTP ${httpStatus(r)}`;
  });

  await s.step('get individual enrollment', async () => {
    const r = await client.getIndividualEnrollment(regId);
    fetched = r.responseBody;
    assert(fetched && fetched.registrationId === regId, `body ${truncate(fetched)}`);
    assert(fetched.etag === created.etag, `etag ${fetched.etag} != ${created.etag}`);
    assert(fetched.provisioningStatus === 'enabled', `provisioningStatus ${fetched.provisioningStatus}`);
    return `HTTP ${httpStatus(r)}`;
  });

  await s.step('create again without etag is refused with 409', async () => {
    await expectStatus(client.createOrUpdateIndividualEnrollment({ registrationId: regId, attestation: { type: 'symmetricKey' } }), 409, 'PUT without If-Match on an existing enrollment');
  });

  await s.step('update with its etag (disable)', async () => {
    const e = Object.assign({}, fetched, { provisioningStatus: 'disabled' });
    const r = await client.createOrUpdateIndividualEnrollment(e);
    updated = r.responseBody;
    assert(updated && updated.provisioningStatus === 'disabled', `body ${truncate(updated)}`);
    assert(updated.etag && updated.etag !== fetched.etag, `etag did not change (${updated.etag})`);
    const g = (await client.getIndividualEnrollment(regId)).responseBody;
    assert(g.provisioningStatus === 'disabled', `GET after update says ${g.provisioningStatus}`);
    return `HTTP ${httpStatus(r)}, If-Match ${fetched.etag}`;
  });

  await s.step('update with a stale etag is refused with 412', async () => {
    const e = Object.assign({}, fetched, { provisioningStatus: 'enabled' });
    await expectStatus(client.createOrUpdateIndividualEnrollment(e), 412, 'PUT with a stale If-Match');
  });

  // Query.next() in promise form forgets the stored continuation token (SDK bug: with no arguments it sends
  // none and returns page 1 again), so every loop passes q.continuationToken explicitly.
  await s.step('query individual enrollments (SELECT *), following x-ms-continuation', async () => {
    const q = client.createIndividualEnrollmentQuery({ query: 'SELECT *' }, 100);
    const ids = [];
    let pages = 0;
    while (q.hasMoreResults && pages < 1000) {
      const r = await q.next(q.continuationToken);
      pages++;
      assert(Array.isArray(r.responseBody), `query page is not a JSON array: ${truncate(r.responseBody)}`);
      for (const e of r.responseBody) ids.push(e.registrationId);
    }
    assert(ids.includes(regId), `${regId} not among ${ids.length} results`);
    return `${ids.length} result(s) in ${pages} page(s)`;
  });

  await s.step('query with page size 1 pages through x-ms-continuation (3+ enrollments)', async () => {
    for (const id of pageIds) {
      s.onCleanup(() => client.deleteIndividualEnrollment(id));
      await client.createOrUpdateIndividualEnrollment({ registrationId: id, attestation: { type: 'symmetricKey' } });
    }
    const q = client.createIndividualEnrollmentQuery({ query: 'SELECT *' }, 1);
    let total = 0;
    let pages = 0;
    const seen = [];
    while (q.hasMoreResults && pages < 1000) {
      const r = await q.next(q.continuationToken);
      pages++;
      assert(Array.isArray(r.responseBody) && r.responseBody.length <= 1, `page of ${truncate(r.responseBody)}`);
      for (const e of r.responseBody) seen.push(e.registrationId);
      total += r.responseBody.length;
    }
    assert(total >= 3 && pages >= total, `${total} results in ${pages} pages`);
    for (const id of [regId, ...pageIds]) assert(seen.includes(id), `${id} missing from the pages (${seen.join(',')})`);
    assert(new Set(seen).size === seen.length, `a registration ID came twice: ${seen.join(',')}`);
    for (const id of pageIds) await client.deleteIndividualEnrollment(id);
    return `${total} result(s) in ${pages} page(s)`;
  });

  await s.step(`create enrollment group ${groupId} (symmetric key, supplied keys)`, async () => {
    const r = await client.createOrUpdateEnrollmentGroup({
      enrollmentGroupId: groupId,
      attestation: { type: 'symmetricKey', symmetricKey: { primaryKey: groupPrimary, secondaryKey: groupSecondary } },
    });
    createdGroup = r.responseBody;
    assert(createdGroup && createdGroup.enrollmentGroupId === groupId, `body ${truncate(createdGroup)}`);
    assert(createdGroup.etag, 'no etag');
    assert(createdGroup.provisioningStatus === 'enabled', `provisioningStatus ${createdGroup.provisioningStatus}`);
    return `HTTP ${httpStatus(r)}`;
  });

  await s.step('get enrollment group and its attestation mechanism', async () => {
    const r = await client.getEnrollmentGroup(groupId);
    const g = r.responseBody;
    assert(g && g.enrollmentGroupId === groupId && g.etag === createdGroup.etag, `body ${truncate(g)}`);
    // The SDK sends this one as POST /enrollmentgroups/{id}/attestationmechanism (lower-case g).
    const am = (await client.getEnrollmentGroupAttestationMechanism(groupId)).responseBody;
    assert(am && am.symmetricKey && am.symmetricKey.primaryKey === groupPrimary, `attestation mechanism ${truncate(am)}`);
    return `HTTP ${httpStatus(r)}`;
  });

  await s.step('query enrollment groups', async () => {
    const q = client.createEnrollmentGroupQuery({ query: 'SELECT *' });
    const ids = [];
    while (q.hasMoreResults) {
      const r = await q.next(q.continuationToken);
      assert(Array.isArray(r.responseBody), `page ${truncate(r.responseBody)}`);
      for (const g of r.responseBody) ids.push(g.enrollmentGroupId);
    }
    assert(ids.includes(groupId), `${groupId} not among ${ids.join(',')}`);
    return `${ids.length} group(s)`;
  });

  await s.step('query registration states of the group (none yet)', async () => {
    const q = client.createEnrollmentGroupDeviceRegistrationStateQuery({ query: 'SELECT *' }, groupId);
    const r = await q.next(q.continuationToken);
    assert(Array.isArray(r.responseBody) && r.responseBody.length === 0, `page ${truncate(r.responseBody)}`);
    return `HTTP ${httpStatus(r)}`;
  });

  await s.step('get registration state of a never-registered device -> 404', async () => {
    const err = await expectStatus(client.getDeviceRegistrationState(regId), 404, 'GET /registrations/{id}');
    return `error ${err.name}, x-ms-error-code ${err.response.headers['x-ms-error-code']}`;
  });

  await s.step('bulk create and bulk delete two enrollments', async () => {
    const ids = [unique('sdk-svc-bulk'), unique('sdk-svc-bulk')];
    const enrollments = ids.map((id) => ({ registrationId: id, attestation: { type: 'symmetricKey' } }));
    ids.forEach((id) => s.onCleanup(() => client.deleteIndividualEnrollment(id)));
    // runBulkEnrollmentOperation's promise form never settles (SDK bug: it only calls back when given a
    // callback), so it is called with a callback here.
    const bulk = (op) => new Promise((resolve, reject) => client.runBulkEnrollmentOperation(op,
      (err, responseBody, httpResponse) => (err ? reject(err) : resolve({ responseBody, httpResponse }))));
    const c = await bulk({ mode: 'create', enrollments });
    assert(c.responseBody && c.responseBody.isSuccessful === true, `create result ${truncate(c.responseBody)}`);
    for (const id of ids) await client.getIndividualEnrollment(id);
    const d = await bulk({ mode: 'delete', enrollments });
    assert(d.responseBody && d.responseBody.isSuccessful === true, `delete result ${truncate(d.responseBody)}`);
    for (const id of ids) await expectStatus(client.getIndividualEnrollment(id), 404, 'GET after bulk delete');
    return `HTTP ${httpStatus(c)} / ${httpStatus(d)}`;
  });

  await s.step('delete individual enrollment with its etag', async () => {
    await client.deleteIndividualEnrollment(regId, updated.etag);
    await expectStatus(client.getIndividualEnrollment(regId), 404, 'GET after DELETE');
  });

  await s.step('delete enrollment group (unconditional)', async () => {
    await client.deleteEnrollmentGroup(groupId);
    await expectStatus(client.getEnrollmentGroup(groupId), 404, 'GET after DELETE');
  });

  await s.step('delete of a missing enrollment -> 404', async () => {
    await expectStatus(client.deleteIndividualEnrollment(regId), 404, 'DELETE of a missing enrollment');
  });

  s.cleanups = [];
  s.done();
  process.exit(0);
}

main().catch((err) => { console.error('service: crashed:', err); process.exit(1); });
