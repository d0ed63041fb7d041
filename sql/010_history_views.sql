-- Views over the history log.  They belong to the extension owner and read
-- pgmigrate.events with the owner's rights, so any role may query them.

-- Every event, newest last: the full audit trail.
CREATE VIEW migrate_events AS
SELECT e.event_id, e.run_id, e.app, e.name, e.event, e.status, e.at,
       e.checksum, e.description, e.error, e.reason, e.forced,
       e.role_name, e.session_role, e.pid, e.application_name, e.client_addr,
       e.details
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
       CASE WHEN run.event = 'started' THEN run.at ELSE run.started_at END AS started_at,
       fin.at AS finished_at,
       fin.at - CASE WHEN run.event = 'started' THEN run.at ELSE run.started_at END AS duration,
       run.role_name AS applied_by,
       fin.error,
       cur.run_id,
       cur.at AS updated_at
  FROM (SELECT DISTINCT ON (e.app, e.name) e.app, e.name, e.status, e.run_id, e.at
          FROM pgmigrate.events e
         ORDER BY e.app, e.name, e.seq DESC) cur
  JOIN pgmigrate.events run ON run.event_id = cur.run_id
  LEFT JOIN LATERAL (
        SELECT f.at, f.error
          FROM pgmigrate.events f
         WHERE f.run_id = cur.run_id
           AND f.event IN ('applied', 'failed', 'recorded', 'imported')
         ORDER BY f.seq
         LIMIT 1) fin ON true;
COMMENT ON VIEW migrate_history IS
    'pg_migrate: one row per migration (app, name) with its current status and the details of its latest run';

-- One row per application: where it stands.
CREATE VIEW migrate_status AS
SELECT h.app,
       (array_agg(h.name ORDER BY h.finished_at DESC NULLS LAST, h.name DESC)
            FILTER (WHERE h.status = 'applied'))[1] AS last_applied,
       max(h.finished_at) FILTER (WHERE h.status = 'applied') AS last_applied_at,
       count(*) FILTER (WHERE h.status = 'applied')   AS applied,
       count(*) FILTER (WHERE h.status = 'failed')    AS failed,
       count(*) FILTER (WHERE h.status = 'running')   AS running,
       count(*) FILTER (WHERE h.status = 'unapplied') AS unapplied,
       count(*) AS total
  FROM migrate_history h
 GROUP BY h.app;
COMMENT ON VIEW migrate_status IS
    'pg_migrate: per application, the last applied migration and counts of migrations by status';

GRANT SELECT ON migrate_events, migrate_history, migrate_status TO PUBLIC;
