// The node-postgres example against a real server (scripts/test.sh points PGHOST and PGPORT at the private 'test'
// cluster: tiny model, dimension 32). Run with `node --test`.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import * as clip from './clip_photos.js';

const here = dirname(fileURLToPath(import.meta.url));
const images = join(here, '..', '..', 'tests', 'fixtures', 'images');
const names = ['moon_l_512x512.png', 'chelsea_rgb_451x300.jpg', 'rocket_rgb_progressive_640x427.jpg',
               'coffee_rgb_3x500.png', 'astronaut_rgb_posterized_300x250.png', 'camera_l_320x320.jpg'];
const database = 'clip_node';
let client;

before(async () => {
  const admin = new pg.Client({ database: 'postgres' });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();
  client = await clip.connect({ database });
  await clip.createSchema(client);
});

after(async () => { await client?.end(); });

const ascending = (rows) => rows.every((row, i) => i === 0 || rows[i - 1].distance <= row.distance);

test('photos are inserted as bytea and the column has the model\'s dimension', async () => {
  assert.equal(await clip.insertPhotos(client, names.map((name) => join(images, name))), names.length);
  const { rows } = await client.query(`SELECT format_type(atttypid, atttypmod) AS type FROM pg_attribute
                                       WHERE attrelid = 'photos'::regclass AND attname = 'embedding'`);
  assert.equal(rows[0].type, `vector(${await clip.embeddingDimension(client)})`);
  const { rows: [{ embedded }] } = await client.query('SELECT count(embedding)::int AS embedded FROM photos');
  assert.equal(embedded, 0);
});

test('CALL clip_backfill embeds every photo, reporting progress as notices', async () => {
  const notices = [];
  await clip.backfill(client, { batchSize: 4, onNotice: (notice) => notices.push(notice.message) });
  assert.ok(notices.includes(`clip_backfill: ${names.length} of ${names.length} rows embedded`), notices.join('\n'));
  const { rows: [row] } = await client.query(
    'SELECT count(*)::int AS n, count(*) FILTER (WHERE embedding = clip_embed_image(image))::int AS same FROM photos');
  assert.deepEqual(row, { n: names.length, same: names.length });
});

test('embeddings come back as arrays of numbers', async () => {
  const vector = await clip.embeddingOf(client, names[0]);
  assert.ok(Array.isArray(vector));
  assert.equal(vector.length, await clip.embeddingDimension(client));
  assert.ok(Math.abs(Math.hypot(...vector) - 1) < 1e-4, 'the embedding is normalised');
});

test('text to image', async () => {
  const rows = await clip.searchText(client, 'a photo of the moon', 4);
  assert.equal(rows.length, 4);
  assert.ok(rows.every((row) => names.includes(row.name)));
  assert.ok(ascending(rows), JSON.stringify(rows));
});

test('image to image ranks the photo itself first', async () => {
  for (const name of names) {
    const rows = await clip.similarPhotos(client, name, names.length);
    assert.equal(rows[0].name, name);
    assert.ok(Math.abs(rows[0].distance) < 1e-6, `distance to itself: ${rows[0].distance}`);
    assert.deepEqual(rows.map((row) => row.name).sort(), [...names].sort());
    assert.ok(ascending(rows), JSON.stringify(rows));
  }
  await assert.rejects(clip.similarPhotos(client, 'no such photo.png'), /no embedded photo/);
});

test('a bare array is no vector parameter: pgvector.toSql is needed', async () => {
  const vector = await clip.embeddingOf(client, names[0]);
  await assert.rejects(client.query('SELECT $1::vector <=> $1::vector', [vector]), /invalid input syntax for type vector: "{/);
});

test('the command line', () => {
  const run = (...args) => execFileSync(process.execPath, ['clip_photos.js', ...args],
    { cwd: here, env: { ...process.env, PGDATABASE: database }, encoding: 'utf8' }).trim().split('\n');
  assert.equal(run('load', join(images, names[0]))[0], '0 photos inserted');
  const lines = run('like', names[1], '3');
  assert.equal(lines.length, 3);
  assert.deepEqual(lines[0].split(/\s+/), ['0.0000', names[1]]);
});
