-- Backfills as psql shows them: submit-time refusals, a job run in the
-- foreground, the progress view, control.  Jobs are paused in the same
-- transaction that queues them, so the background workers leave them to
-- CALL migrate_run and the output is the same on every run.
CREATE TABLE articles (id bigint PRIMARY KEY, body text NOT NULL, summary text, words int);
INSERT INTO articles (id, body) SELECT g, 'story ' || g || repeat(' lorem ipsum', 40) FROM generate_series(1, 2500) g;
ANALYZE articles;

-- Mistakes in the clauses are found at submit, pointing at the text.
SELECT migrate_backfill('articles', 'summary = left(body 300)', 'summary IS NULL');
SELECT migrate_backfill('articles', 'summary = left(body, 300)', 'sumary IS NULL');
SELECT regress.expect_error($$SELECT migrate_backfill('articles', 'id = id + 1')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('articles', 'summary = 1 FROM pg_class')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('articles', 'summary = 1; DELETE FROM articles')$$);
-- Each clause is parsed on its own: one that would close the parenthesis
-- around it, or leave a quote or comment open for the other, is refused.
SELECT migrate_backfill('articles', 'summary = ''x''', 'true) OR (true');
SELECT migrate_backfill('articles', 'summary = $q$', '$q$ = body');
SELECT migrate_backfill('articles', 'summary = ''x'' /*', '*/ true');
SELECT regress.expect_error($$SELECT migrate_backfill('articles', 'summary = ''x''', 'words > 1 ORDER BY 1')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('articles', 'summary = ''x'' WHERE true --', 'false')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('articles', 'summary = ''x''', batch_size => 0)$$);
SELECT regress.expect_error($$SELECT migrate_backfill('articles', 'summary = ''x''', statement_timeout => '-1 s')$$);
SELECT regress.expect_error($$SELECT migrate_backfill('articles', 'summary = ''x''', migration => ARRAY['shop'])$$);
SELECT regress.expect_error($$SELECT migrate_backfill('no_such_table', 'x = 1')$$);
CREATE VIEW article_view AS SELECT * FROM articles;
SELECT regress.expect_error($$SELECT migrate_backfill('article_view', 'summary = ''x''')$$);
CREATE TABLE log_lines (line text, level text);
SELECT regress.expect_error($$SELECT migrate_backfill('log_lines', 'level = ''info''')$$);
SELECT count(*) AS nothing_queued FROM migrate_progress;

-- A job, linked to a migration that becomes applied when it succeeds.
BEGIN;
SELECT migrate_backfill('articles', 'summary = left(body, 20), words = 42', 'summary IS NULL',
                        batch_size => 1000, migration => ARRAY['blog', '0007_backfill_summary']) AS job \gset
SELECT migrate_pause(:job);
COMMIT;
SELECT job_id, kind, relation, state, wait_reason, rows_done, batch_size, owner, migration, command
  FROM migrate_progress;
SELECT app, name, status, description FROM migrate_history;
SET client_min_messages = warning;   -- progress NOTICEs carry rates, which vary
CALL migrate_run(:job);
RESET client_min_messages;
SELECT job_id, state, wait_reason, rows_done, rows_total, percent, rows_updated, eta, worker_pid, error
  FROM migrate_progress;
SELECT app, name, status FROM migrate_history;
SELECT count(*) FILTER (WHERE summary = left(body, 20) AND words = 42) AS backfilled, count(*) AS total FROM articles;

-- Control: what each state allows.
SELECT regress.expect_error(format('SELECT migrate_pause(%s)', :job));
SELECT regress.expect_error(format('SELECT migrate_retry(%s)', :job));
SELECT regress.expect_error($$SELECT migrate_cancel(424242)$$);
SELECT regress.expect_error(format('CALL migrate_run(%s)', :job));

-- A row that fails: the job stops there, names the row, and resumes after a fix.
UPDATE articles SET words = 0 WHERE id = 1700;
BEGIN;
SELECT migrate_backfill('articles', 'words = 1000 / words', batch_size => 500) AS bad \gset
SELECT migrate_pause(:bad);
COMMIT;
SET client_min_messages = warning;
CALL migrate_run(:bad);
RESET client_min_messages;
SELECT state, rows_done, error FROM migrate_progress WHERE job_id = :bad;
SELECT error_sqlstate, error_detail FROM pgmigrate.jobs WHERE job_id = :bad;
UPDATE articles SET words = 42 WHERE id = 1700;
BEGIN;
SELECT migrate_retry(:bad);
SELECT migrate_pause(:bad);
COMMIT;
SET client_min_messages = warning;
CALL migrate_run(:bad);
RESET client_min_messages;
SELECT state, rows_done, error FROM migrate_progress WHERE job_id = :bad;
SELECT count(*) FILTER (WHERE words = 23) AS once FROM articles;

-- migrate_run and migrate_wait commit as they go: not inside a transaction block.
BEGIN;
SELECT regress.expect_error(format('CALL migrate_wait(%s)', :bad));
ROLLBACK;
