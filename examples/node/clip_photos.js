// Photos searched by text and by example with clip_search, from Node.js with node-postgres (pg).
//
// Rows are inserted with their image as a bytea parameter (a Buffer), CALL clip_backfill embeds them, and searches
// are ORDER BY embedding <=> ... queries. pgvector's registerTypes makes vector columns come back as arrays of
// numbers; pgvector.toSql turns an array into a vector parameter. Connection settings come from libpq's
// environment variables (PGHOST, PGPORT, PGUSER, PGDATABASE), which node-postgres reads too.
//
//   node clip_photos.js load PHOTO...       insert the files (named by their file name) and embed them
//   node clip_photos.js text 'a cat' [K]    photos closest to a text
//   node clip_photos.js like NAME [K]       photos closest to the photo called NAME (itself first)
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import pgvector from 'pgvector/pg';

// A connected client whose vector columns are parsed into arrays. registerTypes looks the type up in the
// database, so the extension must exist there first. (With a pg.Pool, register on each new client:
// pool.on('connect', (client) => pgvector.registerTypes(client)).)
export async function connect(config = {}) {
  const client = new pg.Client(config);
  await client.connect();
  await client.query('CREATE EXTENSION IF NOT EXISTS clip_search CASCADE');
  await pgvector.registerTypes(client);
  return client;
}

// The dimension of the vectors the server's model makes (32 for the test model, 512 for ViT-B-32).
export async function embeddingDimension(client) {
  const { rows } = await client.query("SELECT (clip_info()->>'embed_dim')::int AS dim");
  return rows[0].dim;
}

// The table, with a vector column of the model's dimension, and its HNSW index.
export async function createSchema(client) {
  const dim = await embeddingDimension(client);
  if (!Number.isInteger(dim)) throw new Error(`unexpected dimension ${dim}`);
  // DDL takes no parameters: the dimension, an integer from the server, goes in as a literal.
  await client.query(`CREATE TABLE IF NOT EXISTS photos (
    id        bigserial PRIMARY KEY,
    name      text NOT NULL UNIQUE,
    image     bytea NOT NULL,
    embedding vector(${dim}))`);
  await client.query('CREATE INDEX IF NOT EXISTS photos_embedding_hnsw ON photos USING hnsw (embedding vector_cosine_ops)');
}

// Inserts each file as a bytea parameter (a Buffer), named by its file name; returns how many were new.
export async function insertPhotos(client, paths) {
  let inserted = 0;
  for (const path of paths) {
    const result = await client.query(
      'INSERT INTO photos (name, image) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING',
      [basename(path), await readFile(path)]);
    inserted += result.rowCount;
  }
  return inserted;
}

// Embeds every photo whose embedding is NULL. clip_backfill is a procedure that COMMITs after each batch: it must
// not run inside BEGIN ... COMMIT (node-postgres runs each query on its own unless you send BEGIN, so a plain
// client.query is right). Its progress comes as NOTICEs, which node-postgres emits as 'notice' events.
export async function backfill(client, { batchSize = 64, onNotice } = {}) {
  if (onNotice) client.on('notice', onNotice);
  try {
    await client.query('CALL clip_backfill($1::regclass, $2::text, $3::text, $4)',
                       ['photos', 'image', 'embedding', batchSize]);
  } finally {
    if (onNotice) client.off('notice', onNotice);
  }
}

// Text to image: [{name, distance}], closest first.
export async function searchText(client, query, k = 5) {
  const { rows } = await client.query(
    `SELECT name, embedding <=> clip_embed_text($1) AS distance FROM photos
     ORDER BY embedding <=> clip_embed_text($1) LIMIT $2`, [query, k]);
  return rows;
}

// The stored embedding of the photo called NAME: an array of numbers (registerTypes).
export async function embeddingOf(client, name) {
  const { rows } = await client.query('SELECT embedding FROM photos WHERE name = $1', [name]);
  if (!rows.length || rows[0].embedding === null) throw new Error(`no embedded photo is called ${name}`);
  return rows[0].embedding;
}

// Image to image: the photos closest to the photo called NAME, itself first. The vector goes back to the server
// as a parameter through pgvector.toSql (a bare array would be sent as a PostgreSQL array, which is no vector).
export async function similarPhotos(client, name, k = 5) {
  const vector = pgvector.toSql(await embeddingOf(client, name));
  const { rows } = await client.query(
    `SELECT name, embedding <=> $1 AS distance FROM photos ORDER BY embedding <=> $1 LIMIT $2`, [vector, k]);
  return rows;
}

async function main([command, ...args]) {
  const client = await connect();
  try {
    if (command === 'load') {
      await createSchema(client);
      console.log(`${await insertPhotos(client, args)} photos inserted`);
      await backfill(client, { onNotice: (notice) => console.log(notice.message) });
      return;
    }
    if (command !== 'text' && command !== 'like') throw new Error('usage: clip_photos.js load FILE... | text QUERY [K] | like NAME [K]');
    const k = Number(args[1] ?? 5);
    const rows = command === 'text' ? await searchText(client, args[0], k) : await similarPhotos(client, args[0], k);
    for (const { name, distance } of rows) console.log(`${distance.toFixed(4)}  ${name}`);
  } finally {
    await client.end();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((error) => { console.error(error.message); process.exitCode = 1; });
}
