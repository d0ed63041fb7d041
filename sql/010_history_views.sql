-- Views over the history log.  They belong to the extension owner and read
-- pgmigrate.events with the owner's rights, so any role may query them.

-- A role as the history shows it: by the name it had when it acted, and
-- marked when that role (by OID) no longer exists, so that a new role of
-- the same name is not taken for it.
CREATE FUNCTION pgmigrate.role_label(recorded name, role oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN role IS NULL OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = role)
                THEN recorded::text
                ELSE format('%s (dropped role %s)', recorded, role) END
$$;

-- Every event, newest last: the full audit trail.
CREATE VIEW migrate_events AS
SELECT e.event_id, e.run_id, e.app, e.name, e.event, e.status, e.at,
       e.checksum, e.description, e.error, e.reason, e.forced,
       pgmigrate.role_label(e.role_name, e.role_oid) AS role_name,
       pgmigrate.role_label(e.session_role, e.session_role_oid) AS session_role,
       e.pid, e.application_name, e.client_addr, e.details, e.role_oid
  FROM pgmigrate.events e;
COMMENT ON VIEW migrate_events IS
    'pg_migrate: every recorded state change of every migration (append-only audit trail)';

-- One row per migration: its current state and the run that led to it.
CREATE VIEW migrate_history AS
SELECT cur.app,
       cur.name,
       cur.status,
       run.checksum,
       run.description,
       CASE WHEN run.event OPERATOR(pg_catalog.=) 'started' THEN run.at ELSE run.started_at END AS started_at,
       fin.at AS finished_at,
       fin.at OPERATOR(pg_catalog.-) CASE WHEN run.event OPERATOR(pg_catalog.=) 'started' THEN run.at ELSE run.started_at END AS duration,
       pgmigrate.role_label(run.role_name, run.role_oid) AS applied_by,
       fin.error,
       cur.run_id,
       cur.at AS updated_at
  FROM (SELECT DISTINCT ON (e.app, e.name) e.app, e.name, e.status, e.run_id, e.at
          FROM pgmigrate.events e
         ORDER BY e.app, e.name, e.seq DESC) cur
  JOIN pgmigrate.events run ON run.event_id OPERATOR(pg_catalog.=) cur.run_id
  LEFT JOIN LATERAL (
        SELECT f.at, f.error
          FROM pgmigrate.events f
         WHERE f.run_id OPERATOR(pg_catalog.=) cur.run_id
           AND f.event OPERATOR(pg_catalog.=) ANY (ARRAY['applied', 'failed', 'recorded', 'imported']::pg_catalog.text[])
         ORDER BY f.seq
         LIMIT 1) fin ON true;
COMMENT ON VIEW migrate_history IS
    'pg_migrate: one row per migration (app, name) with its current status and the details of its latest run';

-- One row per application: where it stands.
CREATE VIEW migrate_status AS
SELECT h.app,
       (pg_catalog.array_agg(h.name ORDER BY h.finished_at DESC NULLS LAST, h.name DESC)
            FILTER (WHERE h.status OPERATOR(pg_catalog.=) 'applied'))[1] AS last_applied,
       pg_catalog.max(h.finished_at) FILTER (WHERE h.status OPERATOR(pg_catalog.=) 'applied') AS last_applied_at,
       pg_catalog.count(*) FILTER (WHERE h.status OPERATOR(pg_catalog.=) 'applied')   AS applied,
       pg_catalog.count(*) FILTER (WHERE h.status OPERATOR(pg_catalog.=) 'failed')    AS failed,
       pg_catalog.count(*) FILTER (WHERE h.status OPERATOR(pg_catalog.=) 'running')   AS running,
       pg_catalog.count(*) FILTER (WHERE h.status OPERATOR(pg_catalog.=) 'unapplied') AS unapplied,
       pg_catalog.count(*) AS total
  FROM migrate_history h
 GROUP BY h.app;
COMMENT ON VIEW migrate_status IS
    'pg_migrate: per application, the last applied migration and counts of migrations by status';

GRANT SELECT ON migrate_events, migrate_history, migrate_status TO PUBLIC;
