-- pg_migrate: internal schema and the migration history log.
--
-- The SQL API (functions and views named migrate_*) lives in the schema the
-- extension is created in (public by default).  The tables behind it live in
-- the schema "pgmigrate", which only the extension owner may touch directly;
-- the API functions switch to the owner for the few statements that read or
-- write these tables, so callers need no privilege on them.

CREATE SCHEMA pgmigrate;
COMMENT ON SCHEMA pgmigrate IS
    'pg_migrate internals: history log and job tables. Use the migrate_* functions and views instead of writing here.';
REVOKE ALL ON SCHEMA pgmigrate FROM PUBLIC;

CREATE SEQUENCE pgmigrate.event_id_seq;

-- Every state change of every migration, appended and never changed.
--
-- A "run" is one attempt at a migration: migrate_start() opens it with a
-- 'started' event and migrate_finish() closes it with 'applied' or 'failed';
-- migrate_record() and migrate_import_django() write one-event runs.
-- migrate_unapply() appends 'unapplied' to the run it reverses.
--
-- seq numbers the events of one migration (app, name) 1, 2, 3...  The unique
-- key on it is the concurrency guard: two sessions that both read seq = n and
-- both try to append n + 1 cannot both succeed.
CREATE TABLE pgmigrate.events (
    event_id          bigint      NOT NULL DEFAULT pg_catalog.nextval('pgmigrate.event_id_seq'::pg_catalog.regclass) PRIMARY KEY,
    run_id            bigint      NOT NULL,
    app               text        NOT NULL,
    name              text        NOT NULL,
    seq               integer     NOT NULL,
    event             text        NOT NULL,
    status            text        NOT NULL,
    at                timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    started_at        timestamptz,
    checksum          text,
    description       text,
    error             text,
    reason            text,
    forced            boolean     NOT NULL DEFAULT false,
    role_name         name        NOT NULL,
    role_oid          oid,
    session_role      name        NOT NULL DEFAULT session_user,
    session_role_oid  oid         DEFAULT pg_catalog.to_regrole(pg_catalog.quote_ident(session_user))::pg_catalog.oid,
    pid               integer     NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
    application_name  text        DEFAULT pg_catalog.current_setting('application_name'),
    client_addr       inet        DEFAULT pg_catalog.inet_client_addr(),
    details           jsonb,
    CONSTRAINT events_app_name_seq_key UNIQUE (app, name, seq),
    CONSTRAINT events_event_check CHECK (event OPERATOR(pg_catalog.=) ANY (ARRAY['started', 'applied', 'failed', 'recorded', 'imported', 'unapplied']::pg_catalog.text[])),
    CONSTRAINT events_status_check CHECK (status OPERATOR(pg_catalog.=) ANY (ARRAY['running', 'applied', 'failed', 'unapplied']::pg_catalog.text[])),
    CONSTRAINT events_app_check CHECK (pg_catalog.length(app) OPERATOR(pg_catalog.>=) 1 AND pg_catalog.length(app) OPERATOR(pg_catalog.<=) 255),
    CONSTRAINT events_name_check CHECK (pg_catalog.length(name) OPERATOR(pg_catalog.>=) 1 AND pg_catalog.length(name) OPERATOR(pg_catalog.<=) 255),
    CONSTRAINT events_seq_check CHECK (seq OPERATOR(pg_catalog.>=) 1)
);
ALTER SEQUENCE pgmigrate.event_id_seq OWNED BY pgmigrate.events.event_id;
CREATE INDEX events_run_id_idx ON pgmigrate.events (run_id);

COMMENT ON TABLE pgmigrate.events IS
    'pg_migrate history: every state change of every migration, append-only. Read it through migrate_history, migrate_status and migrate_events.';
COMMENT ON COLUMN pgmigrate.events.run_id IS 'event_id of the event that opened this run (started, recorded or imported)';
COMMENT ON COLUMN pgmigrate.events.seq IS 'position of this event among the events of the same (app, name), from 1';
COMMENT ON COLUMN pgmigrate.events.status IS 'state of the migration after this event: running, applied, failed or unapplied';
COMMENT ON COLUMN pgmigrate.events.started_at IS 'for recorded runs given a duration: when the run began';
COMMENT ON COLUMN pgmigrate.events.role_name IS 'current_user of the session that wrote the event, by its name at the time';
COMMENT ON COLUMN pgmigrate.events.role_oid IS 'the same role by OID: tells a dropped role from a new role of the same name';
COMMENT ON COLUMN pgmigrate.events.session_role_oid IS 'session_user by OID';

-- Append-only: refuse UPDATE, DELETE and TRUNCATE even from the owner, so a
-- slip in psql cannot rewrite what happened.
CREATE FUNCTION pgmigrate.refuse_history_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'the pg_migrate history is append-only'
        USING ERRCODE = 'feature_not_supported',
              HINT = 'Record a correction with migrate_unapply() or migrate_finish(); to discard the history, DROP EXTENSION pg_migrate.';
END;
$$;
CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON pgmigrate.events
    FOR EACH ROW EXECUTE FUNCTION pgmigrate.refuse_history_change();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON pgmigrate.events
    FOR EACH STATEMENT EXECUTE FUNCTION pgmigrate.refuse_history_change();

-- History is user data: pg_dump must carry it (and the sequence position).
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.events', '');
SELECT pg_catalog.pg_extension_config_dump('pgmigrate.event_id_seq', '');
