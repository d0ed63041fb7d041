-- Runs first, in a fresh database: the extension and the test helpers.
CREATE EXTENSION pg_migrate;
CREATE SCHEMA regress;

-- Run a statement that must fail; print its SQLSTATE, message, detail and
-- hint as a NOTICE, with times and process ids masked so the output is stable.
CREATE FUNCTION regress.expect_error(sql text) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    BEGIN
        EXECUTE sql;
    EXCEPTION WHEN others THEN
        GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                                det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
        msg := st || ': ' || regress.mask(msg);
        det := regress.mask(det);
        hnt := regress.mask(hnt);
        IF det <> '' AND hnt <> '' THEN
            RAISE NOTICE '%', msg USING DETAIL = det, HINT = hnt;
        ELSIF det <> '' THEN
            RAISE NOTICE '%', msg USING DETAIL = det;
        ELSIF hnt <> '' THEN
            RAISE NOTICE '%', msg USING HINT = hnt;
        ELSE
            RAISE NOTICE '%', msg;
        END IF;
        RETURN;
    END;
    RAISE EXCEPTION 'statement succeeded but should have failed: %', sql;
END
$fn$;

CREATE FUNCTION regress.mask(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $fn$
    SELECT regexp_replace(regexp_replace(coalesce(t, ''),
           '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?([+-]\d\d(:?\d\d)?)?', '<time>', 'g'),
           '(backend|pid) \d+', '\1 <pid>', 'g')
$fn$;

GRANT USAGE ON SCHEMA regress TO PUBLIC;
