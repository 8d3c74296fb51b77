-- The clip. prefix is reserved once the library is loaded in the session: a misspelt setting is an error, not a
-- silently kept placeholder. PostgreSQL 13 and 14 cannot reserve a prefix: there the misspelt setting is kept
-- (settings_prefix_1.out).
\set abs_srcdir `printf %s "$PG_ABS_SRCDIR"`
\set setup :abs_srcdir '/include/setup.psql'
\i :setup
LOAD 'clip_search';
SELECT current_setting('server_version_num')::int >= 150000 AS reserves_prefixes;
SELECT pg_temp.error_of($$SET clip.batchsize = 8$$);
SELECT pg_temp.error_of($$SET clip.intra_op_thread = 2$$);
