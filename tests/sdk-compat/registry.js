#!/usr/bin/env node
// IoT Hub identity registry (2021-04-12) of hub 1 through the official azure-iothub Registry, unchanged.
// usage: NODE_EXTRA_CA_CERTS=<ca> node registry.js ENGINE_JSON
'use strict';
const { Registry } = require('azure-iothub');
const { loadEngine, unique, randomKey, Steps, assert, expectStatus, httpStatus, truncate } = require('./lib');

async function main() {
  const cfg = loadEngine(process.argv[2]);
  const hub = cfg.hubs[0];
  assert(hub && hub.connectionString, 'engine.json has no hub');
  const registry = Registry.fromConnectionString(hub.connectionString);
  const s = new Steps('registry');
  const deviceId = unique('sdk-reg-dev');
  const bulkIds = [unique('sdk-reg-bulk'), unique('sdk-reg-bulk')];
  const pageIds = [unique('sdk-reg-page'), unique('sdk-reg-page')];
  const suppliedPrimary = randomKey(32);
  const suppliedSecondary = randomKey(32);
  let created, fetched, updated;

  s.onCleanup(() => registry.delete(deviceId));
  bulkIds.forEach((id) => s.onCleanup(() => registry.delete(id)));

  await s.step(`create device ${deviceId} (no authentication given: SDK sends sas with empty keys)`, async () => {
    const r = await registry.create({ deviceId });
    created = r.responseBody;
    assert(created.deviceId === deviceId, `deviceId ${created.deviceId} (content-type ${r.httpResponse.headers['content-type']})`);
    assert(created.etag, 'no etag');
    assert(created.generationId, 'no generationId');
    assert(created.status === 'enabled', `status ${created.status}`);
    assert(created.authentication && created.authentication.type === 'sas', `authentication ${JSON.stringify(created.authentication)}`);
    const sk = created.authentication.symmetricKey;
    assert(sk && sk.primaryKey && sk.secondaryKey, `no generated keys: ${JSON.stringify(sk)}`);
    return `HTTP ${httpStatus(r)}, etag ${created.etag}`;
  });

  await s.step('create it again -> 409 DeviceAlreadyExists (Message holds a JSON document with the 6-digit code)', async () => {
    const err = await expectStatus(registry.create({ deviceId }), 409, 'PUT /devices/{id} without If-Match on an existing device');
    assert(err.name === 'DeviceAlreadyExistsError', `error is ${err.name}`);
    assert(err.response.headers['iothub-errorcode'] === 'DeviceAlreadyExists', `iothub-errorcode ${err.response.headers['iothub-errorcode']}`);
    const inner = JSON.parse(parseBody(err.responseBody).Message);
    assert(inner.errorCode === 409001 && inner.trackingId && inner.message && inner.timestampUtc, `Message ${truncate(inner)}`);
    return `${err.name}, errorCode ${inner.errorCode}`;
  });

  await s.step('get device', async () => {
    const r = await registry.get(deviceId);
    fetched = r.responseBody;
    assert(fetched.deviceId === deviceId, `deviceId ${fetched.deviceId}`);
    assert(fetched.etag === created.etag, `etag ${fetched.etag} != ${created.etag}`);
    assert(fetched.authentication.symmetricKey.primaryKey === created.authentication.symmetricKey.primaryKey, 'primaryKey changed');
    return `HTTP ${httpStatus(r)}`;
  });

  await s.step('update device (disable with statusReason; SDK sends If-Match: "*")', async () => {
    const d = JSON.parse(JSON.stringify(fetched));
    d.status = 'disabled';
    d.statusReason = 'disabled by sdk-compat';
    const r = await registry.update(d);
    updated = r.responseBody;
    assert(updated.status === 'disabled', `status ${updated.status}`);
    assert(updated.statusReason === 'disabled by sdk-compat', `statusReason ${updated.statusReason}`);
    assert(updated.etag && updated.etag !== fetched.etag, `etag did not change (${updated.etag})`);
    assert(updated.authentication.symmetricKey.primaryKey === fetched.authentication.symmetricKey.primaryKey, 'keys changed on update');
    const g = (await registry.get(deviceId)).responseBody;
    assert(g.status === 'disabled' && g.statusReason === 'disabled by sdk-compat', `GET after update: ${g.status} / ${g.statusReason}`);
    return `HTTP ${httpStatus(r)}`;
  });

  await s.step('list devices (GET /devices/)', async () => {
    const r = await registry.list();
    const list = r.responseBody;
    assert(Array.isArray(list), `not an array: ${truncate(list)}`);
    assert(list.some((d) => d.deviceId === deviceId), `${deviceId} not among ${list.length}`);
    return `${list.length} device(s), HTTP ${httpStatus(r)}`;
  });

  await s.step('query devices (SELECT * FROM devices), following x-ms-continuation', async () => {
    const q = registry.createQuery('SELECT * FROM devices', 100);
    const ids = [];
    let pages = 0;
    while (q.hasMoreResults && pages < 1000) {
      const r = await q.next(q.continuationToken);
      pages++;
      assert(Array.isArray(r.result), `page is not an array: ${truncate(r.result)}`);
      for (const t of r.result) ids.push(t.deviceId);
    }
    assert(ids.includes(deviceId), `${deviceId} not among ${ids.length}`);
    return `${ids.length} twin(s) in ${pages} page(s)`;
  });

  await s.step('query with page size 1 pages through x-ms-continuation (3+ devices)', async () => {
    for (const id of pageIds) {
      s.onCleanup(() => registry.delete(id));
      await registry.create({ deviceId: id, authentication: { symmetricKey: { primaryKey: randomKey(32), secondaryKey: randomKey(32) } } });
    }
    const q = registry.createQuery('SELECT * FROM devices', 1);
    let total = 0;
    let pages = 0;
    const seen = [];
    while (q.hasMoreResults && pages < 1000) {
      const r = await q.next(q.continuationToken);
      pages++;
      assert(Array.isArray(r.result) && r.result.length <= 1, `page ${truncate(r.result)}`);
      for (const t of r.result) seen.push(t.deviceId);
      total += r.result.length;
    }
    assert(total >= 3 && pages >= total, `${total} results in ${pages} pages`);
    for (const id of [deviceId, ...pageIds]) assert(seen.includes(id), `${id} missing from the pages (${seen.join(',')})`);
    assert(new Set(seen).size === seen.length, `a device came twice: ${seen.join(',')}`);
    for (const id of pageIds) await registry.delete(id);
    return `${total} result(s) in ${pages} page(s)`;
  });

  await s.step('bulk add two devices (addDevices: importMode "create")', async () => {
    const r = await registry.addDevices([
      { deviceId: bulkIds[0] },
      { deviceId: bulkIds[1], authentication: { symmetricKey: { primaryKey: suppliedPrimary, secondaryKey: suppliedSecondary } } },
    ]);
    const b = r.responseBody;
    assert(b && b.isSuccessful === true, `result ${truncate(b)}`);
    assert(Array.isArray(b.errors) && b.errors.length === 0, `errors ${JSON.stringify(b.errors)}`);
    const d0 = (await registry.get(bulkIds[0])).responseBody;
    assert(d0.authentication.symmetricKey.primaryKey, 'bulk-created device without a generated key');
    const d1 = (await registry.get(bulkIds[1])).responseBody;
    assert(d1.authentication.symmetricKey.primaryKey === suppliedPrimary, 'bulk-created device lost its supplied key');
    return `HTTP ${httpStatus(r)}`;
  });

  await s.step('bulk add of an existing device -> 400 with the per-device error DeviceAlreadyExists', async () => {
    const err = await expectStatus(registry.addDevices([{ deviceId: bulkIds[0] }]), 400, 'bulk create of an existing device');
    return expectBulkError(err, bulkIds[0], 'DeviceAlreadyExists');
  });

  await s.step('bulk remove two devices (removeDevices force: importMode "Delete")', async () => {
    const r = await registry.removeDevices(bulkIds.map((deviceId) => ({ deviceId })), true);
    const b = r.responseBody;
    assert(b && b.isSuccessful === true, `result ${truncate(b)}`);
    for (const id of bulkIds) await expectStatus(registry.get(id), 404, 'GET after bulk remove');
    return `HTTP ${httpStatus(r)}`;
  });

  await s.step('bulk update (updateDevices force: importMode "Update") of a removed device -> 400 DeviceNotFound, not recreated', async () => {
    const err = await expectStatus(registry.updateDevices([{ deviceId: bulkIds[0], status: 'disabled' }], true), 400, 'bulk update of a removed device');
    const note = expectBulkError(err, bulkIds[0], 'DeviceNotFound');
    await expectStatus(registry.get(bulkIds[0]), 404, 'GET after a bulk update of a removed device');
    return note;
  });

  await s.step('bulk remove of a missing device -> 400 DeviceNotFound', async () => {
    const err = await expectStatus(registry.removeDevices([{ deviceId: bulkIds[1] }], true), 400, 'bulk remove of a missing device');
    return expectBulkError(err, bulkIds[1], 'DeviceNotFound');
  });

  await s.step('delete device (SDK sends If-Match: "*")', async () => {
    const r = await registry.delete(deviceId);
    return `HTTP ${httpStatus(r)}`;
  });

  await s.step('get deleted device -> 404 DeviceNotFound', async () => {
    const err = await expectStatus(registry.get(deviceId), 404, 'GET after DELETE');
    assert(err.name === 'DeviceNotFoundError', `error is ${err.name}, not DeviceNotFoundError (body must be {"Message":"ErrorCode:DeviceNotFound;..."}): ${truncate(err.responseBody)}`);
    return `${err.name}, iothub-errorcode ${err.response.headers['iothub-errorcode']}`;
  });

  await s.step('delete a missing device -> 404', async () => {
    await expectStatus(registry.delete(deviceId), 404, 'DELETE of a missing device');
  });

  s.cleanups = [];
  s.done();
  process.exit(0);
}

// The SDK hands over an error body as received (a string) or parsed.
function parseBody(body) {
  return typeof body === 'string' ? JSON.parse(body) : body;
}

// A bulk 400 must still be a BulkRegistryOperationResult naming the failed device and its error code.
function expectBulkError(err, id, code) {
  const b = parseBody(err.responseBody);
  assert(b && b.isSuccessful === false && Array.isArray(b.warnings), `result ${truncate(b)}`);
  assert(Array.isArray(b.errors) && b.errors.length === 1, `errors ${truncate(b.errors)}`);
  const e = b.errors[0];
  assert(e.deviceId === id && e.errorCode === code && e.errorStatus, `error ${truncate(e)}, expected ${code} for ${id}`);
  return `HTTP 400, ${e.errorCode}: ${e.errorStatus}`;
}

main().catch((err) => { console.error('registry: crashed:', err); process.exit(1); });
