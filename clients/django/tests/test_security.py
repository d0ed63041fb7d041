"""The package under a hostile role: look-alikes of the pg_catalog
functions and operators its SQL uses, in a schema before pg_catalog on the
application role's search_path, never run from its SQL; another role's job
on the same table neither holds the application's jobs nor is touched by
its rollback."""

import unittest

from .server import Server

# Functions and operators the package's SQL names (always qualified).
LOOK_ALIKES = """
CREATE TABLE evil.calls (what text, query text);
GRANT INSERT ON evil.calls TO PUBLIC;
CREATE FUNCTION evil.note(what text) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO evil.calls VALUES (what, pg_catalog.current_query()) $$;
CREATE FUNCTION evil.quote_ident(t text) RETURNS text LANGUAGE sql
    AS $$ SELECT evil.note('quote_ident'); SELECT pg_catalog.quote_ident(t) $$;
CREATE FUNCTION evil.to_regclass(t text) RETURNS regclass LANGUAGE sql
    AS $$ SELECT evil.note('to_regclass'); SELECT pg_catalog.to_regclass(t) $$;
CREATE FUNCTION evil.to_regtype(t text) RETURNS regtype LANGUAGE sql
    AS $$ SELECT evil.note('to_regtype'); SELECT pg_catalog.to_regtype(t) $$;
CREATE FUNCTION evil.format_type(o oid, m integer) RETURNS text LANGUAGE sql
    AS $$ SELECT evil.note('format_type'); SELECT pg_catalog.format_type(o, m) $$;
CREATE FUNCTION evil.starts_with(a text, b text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.note('starts_with'); SELECT pg_catalog.starts_with(a, b) $$;
CREATE FUNCTION evil.pg_has_role(r oid, p text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.note('pg_has_role'); SELECT true $$;
CREATE FUNCTION evil.teq(a text, b text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.note('='); SELECT pg_catalog.texteq(a, b) $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.teq);
CREATE FUNCTION evil.tne(a text, b text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.note('<>'); SELECT pg_catalog.textne(a, b) $$;
CREATE OPERATOR evil.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.tne);
CREATE FUNCTION evil.tcat(a text, b text) RETURNS text LANGUAGE sql
    AS $$ SELECT evil.note('||'); SELECT pg_catalog.textcat(a, b) $$;
CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.tcat);
CREATE FUNCTION evil.i8eq(a bigint, b bigint) RETURNS boolean LANGUAGE sql
    AS $$ SELECT evil.note('= bigint'); SELECT pg_catalog.int8eq(a, b) $$;
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.i8eq);
CREATE FUNCTION evil.i8max(s bigint, v bigint) RETURNS bigint LANGUAGE sql
    AS $$ SELECT evil.note('max'); SELECT pg_catalog.int8larger(s, v) $$;
CREATE AGGREGATE evil.max(bigint) (SFUNC = evil.i8max, STYPE = bigint);
"""

OURS = "(query LIKE '%migrate\\_%' OR query LIKE '%OPERATOR(pg\\_catalog.%')"


class Security(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("security")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_look_alikes_never_run_and_another_roles_job_is_left_alone(self):
        s = self.server
        s.create_db("hostile")
        with s.connect("hostile") as c:
            c.execute("CREATE ROLE app LOGIN; GRANT CREATE ON SCHEMA public TO app")
            c.execute("GRANT EXECUTE ON FUNCTION migrate_start, migrate_finish, migrate_record, migrate_unapply TO app")
            c.execute("CREATE ROLE mallory LOGIN; CREATE SCHEMA evil AUTHORIZATION mallory")
            c.execute("GRANT EXECUTE ON FUNCTION migrate_start, migrate_finish, migrate_record, migrate_unapply TO mallory")
            c.execute("ALTER ROLE app SET search_path = public, evil, pg_catalog")
        with s.connect("hostile", user="mallory") as c:
            c.execute(LOOK_ALIKES)
            c.execute("GRANT USAGE ON SCHEMA evil TO PUBLIC")
        # The look-alikes do catch an unqualified query of the role.
        with s.connect("hostile", user="app") as c:
            c.execute("SELECT 'a'::text = 'b'::text")
        self.assertEqual(s.rows("hostile", "SELECT what FROM evil.calls"), [("=",)])
        with s.connect("hostile") as c:
            c.execute("TRUNCATE evil.calls")

        rc, out = s.manage("hostile", "migrate", "articles", "0002", user="app")
        self.assertEqual(rc, 0, out)
        with s.connect("hostile", user="app") as c:
            c.execute("INSERT INTO articles_article (title, body) SELECT 't' || g, 'b' || g FROM generate_series(1, 5000) g")
            c.execute("GRANT SELECT, UPDATE ON articles_article TO mallory")
        # Mallory's job on the same table, linked to a history entry of her
        # own, not due for a day.
        with s.connect("hostile", user="mallory") as c:
            theirs = c.execute(
                "SELECT public.migrate_backfill('public.articles_article', 'summary = summary',"
                " run_at => now() + interval '1 day', migration => ARRAY['other', '0001_x.backfill1'])"
            ).fetchone()[0]

        rc, out = s.manage("hostile", "migrate", user="app")
        self.assertEqual(rc, 0, out)
        rc, out = s.manage("hostile", "pgmigrate_deployed", user="app")
        self.assertEqual(rc, 0, out)
        rc, out = s.manage("hostile", "pgmigrate_wait", "--timeout", "60", user="app")
        self.assertEqual(rc, 0, out)
        self.assertNotIn(f"job {theirs}", out)
        self.assertEqual(
            s.rows("hostile", "SELECT count(*) FROM articles_article WHERE summary IS NULL"), [(0,)]
        )
        self.assertEqual(
            s.rows("hostile", "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'articles_article'::regclass"
                              " AND attname = 'summary'"), [(True,)]
        )
        for args in (["pgmigrate_status", "--all"], ["pgmigrate_lint"], ["check", "--database", "default"]):
            rc, out = s.manage("hostile", *args, user="app")
            self.assertEqual(rc, 0, out)
        # Rolled back: the application's jobs and entries are reversed;
        # Mallory's job is left as it is.
        rc, out = s.manage("hostile", "migrate", "articles", "0003", user="app")
        self.assertEqual(rc, 0, out)
        self.assertEqual(s.rows("hostile", "SELECT state FROM migrate_progress WHERE job_id = %s", [theirs]), [("queued",)])
        self.assertEqual(s.rows("hostile", f"SELECT what, query FROM evil.calls WHERE {OURS}"), [])


if __name__ == "__main__":
    unittest.main()
