-- The extension's public surface, checked in: every object it owns.  A
-- change here must be deliberate (and comes with an upgrade script once a
-- version is released).
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_migrate')
   AND deptype = 'e'
 ORDER BY 1;

-- Signatures, volatility and who may call them.
SELECT p.oid::regprocedure AS function, p.provolatile AS vol, p.proisstrict AS strict,
       pg_get_function_result(p.oid) AS returns,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_may_call
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_migrate') AND d.deptype = 'e'
 ORDER BY p.oid::regprocedure::text;

-- Views and their columns.
SELECT c.relname AS view, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
  JOIN pg_depend d ON d.objid = c.oid AND d.classid = 'pg_class'::regclass
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_migrate') AND d.deptype = 'e'
   AND c.relkind = 'v'
 ORDER BY c.relname, a.attnum;

-- Tables whose rows pg_dump carries.
SELECT dumped FROM (SELECT unnest(extconfig)::regclass::text AS dumped FROM pg_extension WHERE extname = 'pg_migrate') s
 ORDER BY dumped;

-- Every kind of job and what the views and claims know of it (from the
-- kinds the code registers).
SELECT * FROM pgmigrate.kinds ORDER BY kind;
