//! The statements the lock-risk tests share: fixtures (tables of every
//! kind, with constraints, partitions, inheritance, domains, sequences and
//! a role) and a corpus of DDL and DML run against them.  `locks.rs`
//! checks analysis against a trace of each; `fuzz.rs` mutates them.

pub const FIXTURES: &str = r#"
CREATE TABLE parent_t (id bigint PRIMARY KEY, name text);
INSERT INTO parent_t SELECT g, 'p' || g FROM generate_series(1, 100) g;
CREATE TABLE child_t (id bigint PRIMARY KEY, parent_id bigint REFERENCES parent_t (id), note text);
INSERT INTO child_t SELECT g, 1 + g % 100, 'n' || g FROM generate_series(1, 500) g;
CREATE INDEX child_t_note_idx ON child_t (note);
CREATE TABLE other_t (id int PRIMARY KEY, ref_id bigint, val text);
CREATE TABLE plain (a int, b text, c int NOT NULL DEFAULT 0, d text, ts timestamptz, tsn timestamp,
                    v varchar(10), n numeric(8,2), e int CHECK (e > 0), ident_base int NOT NULL DEFAULT 1);
INSERT INTO plain (a, b, d, ts, tsn, v, n, e)
     SELECT g, 'b' || g, 'd' || g, now(), now(), 'v' || g % 100, g / 3.0, g FROM generate_series(1, 1000) g;
ALTER TABLE plain ALTER COLUMN ident_base DROP DEFAULT;
ALTER TABLE plain ADD CONSTRAINT plain_d_nn CHECK (d IS NOT NULL);
ALTER TABLE plain ADD CONSTRAINT plain_b_chk CHECK (b <> '') NOT VALID;
CREATE INDEX plain_a_idx ON plain (a);
CREATE UNIQUE INDEX plain_a_uidx ON plain (a);
CREATE TABLE events (id bigint, at date, payload text) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE events_default PARTITION OF events DEFAULT;
INSERT INTO events SELECT g, date '2025-01-01' + g, 'x' FROM generate_series(1, 600) g;
CREATE TABLE events_2027 (id bigint, at date, payload text);
CREATE INDEX events_at_idx ON events (at);
CREATE TABLE base_t (id int, x int);
CREATE TABLE inh_t (y int) INHERITS (base_t);
CREATE TABLE lonely (id int, x int);
CREATE VIEW plain_v AS SELECT b FROM plain;
CREATE MATERIALIZED VIEW plain_mv AS SELECT 1 AS one, count(*) AS n FROM plain;
CREATE UNIQUE INDEX plain_mv_one ON plain_mv (one);
CREATE SEQUENCE seq_s;
CREATE TYPE mood AS ENUM ('a', 'b');
CREATE DOMAIN posint AS int;
CREATE DOMAIN poscheck AS int CHECK (VALUE > 0);
CREATE TABLE dom_t (p posint);
INSERT INTO dom_t VALUES (1), (2);
CREATE FUNCTION trg_fn() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER plain_trg BEFORE UPDATE ON plain FOR EACH ROW EXECUTE FUNCTION trg_fn();
CREATE ROLE corpus_role;
CREATE SCHEMA s2;
CREATE TABLE serial_t (id serial PRIMARY KEY, v int);
CREATE TABLE fk_src (id int, parent_id bigint CONSTRAINT fk_src_parent REFERENCES parent_t (id));
CREATE TABLE fk_nv (id int, parent_id bigint);
ALTER TABLE fk_nv ADD CONSTRAINT fk_nv_parent FOREIGN KEY (parent_id) REFERENCES parent_t (id) NOT VALID;
CREATE POLICY plain_pol ON plain USING (true);
"#;

/// At least 100 distinct statements: ALTER TABLE subcommands, constraints,
/// indexes, triggers, partitions, inheritance, types and domains,
/// sequences, views, grants, policies, DML.
pub const CORPUS: &[&str] = &[
    // ADD COLUMN
    "ALTER TABLE plain ADD COLUMN x int",
    "ALTER TABLE plain ADD COLUMN x int DEFAULT 0",
    "ALTER TABLE plain ADD COLUMN x int NOT NULL DEFAULT 7",
    "ALTER TABLE plain ADD COLUMN x timestamptz DEFAULT now()",
    "ALTER TABLE plain ADD COLUMN x double precision DEFAULT random()",
    "ALTER TABLE plain ADD COLUMN x uuid DEFAULT gen_random_uuid()",
    "ALTER TABLE plain ADD COLUMN x serial",
    "ALTER TABLE plain ADD COLUMN x bigint GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE plain ADD COLUMN x int GENERATED ALWAYS AS (a * 2) STORED",
    "ALTER TABLE plain ADD COLUMN x text DEFAULT 'hello'",
    "ALTER TABLE plain ADD COLUMN x int CHECK (x > 0)",
    "ALTER TABLE plain ADD COLUMN x bigint REFERENCES parent_t (id)",
    "ALTER TABLE plain ADD COLUMN x int UNIQUE",
    "ALTER TABLE plain ADD COLUMN x poscheck",
    "ALTER TABLE plain ADD COLUMN x posint DEFAULT 3",
    "ALTER TABLE plain ADD COLUMN IF NOT EXISTS a int",
    "ALTER TABLE plain ADD COLUMN x int DEFAULT 0 NOT NULL CHECK (x >= 0)",
    "ALTER TABLE plain ADD COLUMN x mood DEFAULT 'a'",
    "ALTER TABLE plain ADD COLUMN x int, ADD COLUMN y int",
    // DROP COLUMN
    "ALTER TABLE plain DROP COLUMN ts",
    "ALTER TABLE plain DROP COLUMN IF EXISTS nosuch",
    // ALTER COLUMN TYPE
    "ALTER TABLE plain ALTER COLUMN a TYPE bigint",
    "ALTER TABLE plain ALTER COLUMN v TYPE varchar(50)",
    "ALTER TABLE plain ALTER COLUMN v TYPE varchar(5)",
    "ALTER TABLE plain ALTER COLUMN v TYPE text",
    "ALTER TABLE plain ALTER COLUMN n TYPE numeric(12,2)",
    "ALTER TABLE plain ALTER COLUMN n TYPE numeric(12,4)",
    "ALTER TABLE plain ALTER COLUMN n TYPE numeric",
    "ALTER TABLE plain ALTER COLUMN a TYPE int",
    "ALTER TABLE plain ALTER COLUMN tsn TYPE timestamptz",
    "ALTER TABLE plain ALTER COLUMN d TYPE varchar(100)",
    "ALTER TABLE plain ALTER COLUMN a TYPE text USING a::text",
    "ALTER TABLE plain ALTER COLUMN c TYPE bigint USING c + 1",
    "ALTER TABLE plain ALTER COLUMN e TYPE int USING e",
    "ALTER TABLE plain ALTER COLUMN e SET DATA TYPE bigint",
    "ALTER TABLE serial_t ALTER COLUMN id TYPE bigint",
    "ALTER TABLE child_t ALTER COLUMN parent_id TYPE int",
    "ALTER TABLE plain ADD COLUMN x int, ALTER COLUMN a TYPE bigint",
    // defaults, NOT NULL, column settings
    "ALTER TABLE plain ALTER COLUMN a SET DEFAULT 5",
    "ALTER TABLE plain ALTER COLUMN c DROP DEFAULT",
    "ALTER TABLE plain ALTER COLUMN a SET DEFAULT nextval('seq_s')",
    "ALTER TABLE plain ALTER COLUMN a SET NOT NULL",
    "ALTER TABLE plain ALTER COLUMN d SET NOT NULL",
    "ALTER TABLE plain ALTER COLUMN c DROP NOT NULL",
    "ALTER TABLE plain ALTER COLUMN a SET STATISTICS 500",
    "ALTER TABLE plain ALTER COLUMN d SET STORAGE EXTERNAL",
    "ALTER TABLE plain ALTER COLUMN a SET (n_distinct = 100)",
    "ALTER TABLE plain ALTER COLUMN a RESET (n_distinct)",
    "ALTER TABLE plain ALTER COLUMN d SET COMPRESSION pglz",
    "ALTER TABLE plain ALTER COLUMN ident_base ADD GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE plain SET (fillfactor = 70), ALTER COLUMN a SET STATISTICS 100",
    // constraints
    "ALTER TABLE plain ADD CONSTRAINT plain_a_pos CHECK (a > 0)",
    "ALTER TABLE plain ADD CONSTRAINT plain_a_pos CHECK (a > 0) NOT VALID",
    "ALTER TABLE plain VALIDATE CONSTRAINT plain_b_chk",
    "ALTER TABLE plain DROP CONSTRAINT plain_d_nn",
    "ALTER TABLE plain ADD CONSTRAINT plain_a_key UNIQUE (a)",
    "ALTER TABLE plain ADD PRIMARY KEY (a)",
    "ALTER TABLE plain ADD CONSTRAINT plain_a_uniq UNIQUE USING INDEX plain_a_uidx",
    "ALTER TABLE plain ADD CONSTRAINT plain_excl EXCLUDE USING btree (a WITH =)",
    "ALTER TABLE child_t ADD CONSTRAINT child_parent_fk2 FOREIGN KEY (parent_id) REFERENCES parent_t (id)",
    "ALTER TABLE child_t ADD CONSTRAINT child_parent_fk2 FOREIGN KEY (parent_id) REFERENCES parent_t (id) NOT VALID",
    "ALTER TABLE fk_nv VALIDATE CONSTRAINT fk_nv_parent",
    "ALTER TABLE fk_src DROP CONSTRAINT fk_src_parent",
    "ALTER TABLE child_t DROP CONSTRAINT child_t_parent_id_fkey",
    "ALTER TABLE fk_src ALTER CONSTRAINT fk_src_parent DEFERRABLE",
    "ALTER TABLE plain RENAME CONSTRAINT plain_d_nn TO plain_d_nn2",
    // renames, storage parameters, the rest of ALTER TABLE
    "ALTER TABLE plain RENAME COLUMN d TO d2",
    "ALTER TABLE plain RENAME TO plain2",
    "ALTER TABLE plain SET (fillfactor = 70)",
    "ALTER TABLE plain RESET (fillfactor)",
    "ALTER TABLE plain SET (autovacuum_enabled = false)",
    "ALTER TABLE plain SET UNLOGGED",
    "ALTER TABLE plain SET TABLESPACE pg_default",
    "ALTER TABLE plain SET WITHOUT CLUSTER",
    "ALTER TABLE plain CLUSTER ON plain_a_idx",
    "ALTER TABLE plain ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE plain DISABLE TRIGGER plain_trg",
    "ALTER TABLE plain ENABLE TRIGGER plain_trg",
    "ALTER TABLE plain OWNER TO corpus_role",
    "ALTER TABLE plain REPLICA IDENTITY FULL",
    "ALTER TABLE plain SET SCHEMA s2",
    "ALTER TABLE IF EXISTS nosuch ADD COLUMN x int",
    // inheritance
    "ALTER TABLE lonely INHERIT base_t",
    "ALTER TABLE inh_t NO INHERIT base_t",
    "ALTER TABLE base_t ADD COLUMN z int",
    "ALTER TABLE base_t ADD CONSTRAINT base_chk CHECK (x > 0)",
    "ALTER TABLE ONLY base_t ALTER COLUMN x SET STATISTICS 100",
    "CREATE TABLE new_inh () INHERITS (base_t)",
    // partitions
    "ALTER TABLE events ADD COLUMN note text",
    "ALTER TABLE events ALTER COLUMN payload TYPE varchar(30)",
    "ALTER TABLE events ATTACH PARTITION events_2027 FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')",
    "ALTER TABLE events DETACH PARTITION events_2025",
    "ALTER TABLE events DETACH PARTITION events_2025 CONCURRENTLY",
    "ALTER TABLE events ALTER COLUMN id SET NOT NULL",
    "ALTER TABLE events_2025 ALTER COLUMN payload SET STATISTICS 100",
    "CREATE TABLE events_2028 PARTITION OF events FOR VALUES FROM ('2028-01-01') TO ('2029-01-01')",
    "CREATE INDEX ON events (id)",
    "CREATE INDEX ON ONLY events (id)",
    "TRUNCATE events",
    "LOCK TABLE events IN ROW EXCLUSIVE MODE",
    // indexes
    "CREATE INDEX ON plain (b)",
    "CREATE UNIQUE INDEX plain_a_uidx2 ON plain (a)",
    "CREATE INDEX CONCURRENTLY ON plain (b)",
    "CREATE INDEX ON plain USING hash (b)",
    "CREATE INDEX ON plain (lower(b)) WHERE a > 10",
    "CREATE INDEX IF NOT EXISTS plain_a_idx ON plain (a)",
    "DROP INDEX plain_a_idx",
    "DROP INDEX CONCURRENTLY plain_a_idx",
    "DROP INDEX events_at_idx",
    "REINDEX INDEX plain_a_idx",
    "REINDEX TABLE plain",
    "REINDEX INDEX CONCURRENTLY plain_a_idx",
    "ALTER INDEX plain_a_idx RENAME TO plain_a_idx2",
    "ALTER INDEX plain_a_idx SET (fillfactor = 80)",
    "CLUSTER plain USING plain_a_idx",
    "VACUUM plain",
    "VACUUM FULL plain",
    "ANALYZE plain",
    // triggers, policies, rules, statistics, comments
    "CREATE TRIGGER plain_trg2 AFTER INSERT ON plain FOR EACH ROW EXECUTE FUNCTION trg_fn()",
    "CREATE OR REPLACE TRIGGER plain_trg BEFORE UPDATE ON plain FOR EACH ROW EXECUTE FUNCTION trg_fn()",
    "DROP TRIGGER plain_trg ON plain",
    "ALTER TRIGGER plain_trg ON plain RENAME TO plain_trg3",
    "CREATE POLICY p2 ON plain USING (a > 0)",
    "ALTER POLICY plain_pol ON plain USING (a > 1)",
    "DROP POLICY plain_pol ON plain",
    "CREATE STATISTICS plain_st ON a, c FROM plain",
    "COMMENT ON TABLE plain IS 'x'",
    "COMMENT ON COLUMN plain.a IS 'x'",
    "COMMENT ON CONSTRAINT plain_d_nn ON plain IS 'x'",
    // views and materialized views
    "CREATE VIEW v2 AS SELECT * FROM plain JOIN child_t ON child_t.id = plain.a",
    "CREATE OR REPLACE VIEW plain_v AS SELECT b FROM plain",
    "DROP VIEW plain_v",
    "ALTER VIEW plain_v RENAME TO plain_v2",
    "CREATE MATERIALIZED VIEW mv2 AS SELECT a FROM plain",
    "REFRESH MATERIALIZED VIEW plain_mv",
    "REFRESH MATERIALIZED VIEW CONCURRENTLY plain_mv",
    "DROP MATERIALIZED VIEW plain_mv",
    "CREATE TABLE copy_t AS SELECT * FROM plain",
    // tables
    "CREATE TABLE new_t (id int PRIMARY KEY)",
    "CREATE TABLE new_t (id int, parent_id bigint REFERENCES parent_t (id))",
    "CREATE TABLE new_t (LIKE plain INCLUDING ALL)",
    "DROP TABLE other_t",
    "DROP TABLE fk_src",
    "DROP TABLE serial_t",
    "DROP TABLE IF EXISTS nosuch",
    "TRUNCATE plain",
    "TRUNCATE parent_t CASCADE",
    "LOCK TABLE plain IN SHARE MODE",
    "LOCK TABLE plain IN ACCESS EXCLUSIVE MODE",
    // sequences
    "CREATE SEQUENCE s_new OWNED BY plain.a",
    "ALTER SEQUENCE seq_s RESTART WITH 100",
    "ALTER SEQUENCE seq_s INCREMENT BY 5",
    "ALTER SEQUENCE seq_s OWNED BY plain.a",
    "ALTER SEQUENCE seq_s START WITH 10",
    "ALTER SEQUENCE seq_s RENAME TO seq_s2",
    "DROP SEQUENCE seq_s",
    // types and domains
    "CREATE TYPE mood2 AS ENUM ('x')",
    "ALTER TYPE mood ADD VALUE 'c'",
    "CREATE DOMAIN d2 AS text",
    "ALTER DOMAIN posint ADD CONSTRAINT posint_chk CHECK (VALUE > 0)",
    "ALTER DOMAIN posint ADD CONSTRAINT posint_chk CHECK (VALUE > 0) NOT VALID",
    "ALTER DOMAIN posint SET NOT NULL",
    "CREATE TYPE pair AS (x int, y int)",
    // grants
    "GRANT SELECT ON plain TO corpus_role",
    "REVOKE SELECT ON plain FROM corpus_role",
    "GRANT UPDATE (b) ON plain TO corpus_role",
    // DML and the rest
    "UPDATE plain SET b = b WHERE a = 1",
    "DELETE FROM plain WHERE a = -1",
    "INSERT INTO plain (a, b, c, d, ident_base) VALUES (-5, 'x', 1, 'y', 1)",
    "INSERT INTO other_t SELECT a, a, b FROM plain WHERE a < 0",
    "SELECT count(*) FROM plain",
    "SELECT * FROM plain WHERE a = 1 FOR UPDATE",
    "SET lock_timeout = '1s'",
    "ALTER TABLE plain SET ACCESS METHOD heap",
    "CREATE SCHEMA s3",
    "CREATE FUNCTION f2() RETURNS int LANGUAGE sql AS 'SELECT 1'",
];
