-- CALL migrate_run(job): drive a backfill in this session, committing
-- after every batch; an index job (which only a worker can run) is handed
-- to a worker at once, whatever its schedule, and waited for.
-- CALL migrate_wait(job): wait for a job the background workers drive.
-- Both are procedures because they commit as they go (a procedure that
-- commits cannot pin its search_path: every function, operator and type
-- here is qualified, and they run with the caller's rights).

CREATE PROCEDURE migrate_run(job bigint)
LANGUAGE plpgsql AS $proc$
DECLARE
    r record;
    pause_ms bigint := 0;
    interrupted boolean;
    failed boolean;
    err_state text;
    err_text text;
    mode text;
BEGIN
    mode := pgmigrate._run_begin(job);
    COMMIT;
    IF mode OPERATOR(pg_catalog.=) 'worker' THEN
        LOOP
            interrupted := false;
            BEGIN
                SELECT * INTO r FROM pgmigrate._wait_poll(job, false);
                IF NOT r.done THEN
                    PERFORM pg_catalog.pg_sleep(0.2);
                END IF;
            EXCEPTION
                WHEN query_canceled THEN
                    interrupted := true;
            END;
            IF interrupted THEN
                PERFORM pgmigrate._run_interrupted(job);
                COMMIT;
                RAISE EXCEPTION 'CALL migrate_run(%) was cancelled; job % is paused', job, job
                    USING ERRCODE = 'query_canceled',
                          HINT = pg_catalog.format('SELECT migrate_resume(%s) queues it again.', job);
            END IF;
            IF r.notice IS NOT NULL THEN
                RAISE NOTICE '%', r.notice;
            END IF;
            EXIT WHEN r.done;
            COMMIT;
        END LOOP;
        PERFORM pgmigrate._job_outcome(job);
        RETURN;
    END IF;
    LOOP
        interrupted := false;
        failed := false;
        BEGIN
            IF pause_ms OPERATOR(pg_catalog.>) 0 THEN
                PERFORM pg_catalog.pg_sleep(pause_ms OPERATOR(pg_catalog./) 1000.0);
            END IF;
            SELECT * INTO r FROM pgmigrate._run_step(job);
        EXCEPTION
            WHEN query_canceled THEN
                interrupted := true;
            WHEN OTHERS THEN
                failed := true;
                err_state := SQLSTATE;
                err_text := SQLERRM;
        END;
        IF interrupted THEN
            PERFORM pgmigrate._run_interrupted(job);
            COMMIT;
            RAISE EXCEPTION 'CALL migrate_run(%) was cancelled; job % is paused', job, job
                USING ERRCODE = 'query_canceled',
                      HINT = pg_catalog.format('CALL migrate_run(%s) continues it here; SELECT migrate_resume(%s) hands it to the background workers.', job, job);
        END IF;
        IF failed THEN
            PERFORM pgmigrate._run_failed(job, err_state, err_text);
            COMMIT;
            RAISE EXCEPTION 'job % failed: %', job, err_text USING ERRCODE = err_state;
        END IF;
        COMMIT;
        IF r.notice IS NOT NULL THEN
            RAISE NOTICE '%', r.notice;
        END IF;
        EXIT WHEN r.done;
        pause_ms := r.sleep_ms;
    END LOOP;
    PERFORM pgmigrate._job_outcome(job);
END
$proc$;

CREATE PROCEDURE migrate_wait(job bigint, timeout interval DEFAULT NULL)
LANGUAGE plpgsql AS $proc$
DECLARE
    r record;
    started timestamptz := pg_catalog.clock_timestamp();
    first boolean := true;
BEGIN
    IF job IS NULL THEN
        RAISE EXCEPTION 'argument "job" must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the id migrate_backfill or migrate_create_index returned; migrate_progress lists them.';
    END IF;
    LOOP
        SELECT * INTO r FROM pgmigrate._wait_poll(job, first);
        first := false;
        IF r.notice IS NOT NULL THEN
            RAISE NOTICE '%', r.notice;
        END IF;
        EXIT WHEN r.done;
        IF timeout IS NOT NULL
           AND pg_catalog.timestamptz_pl_interval(started, timeout) OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp() THEN
            PERFORM pgmigrate._wait_timeout(job, timeout);
        END IF;
        -- A new transaction for every look: no snapshot is held while waiting.
        COMMIT;
        PERFORM pg_catalog.pg_sleep(0.2);
        COMMIT;
    END LOOP;
    PERFORM pgmigrate._job_outcome(job);
END
$proc$;
