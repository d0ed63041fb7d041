"""`manage.py migrate` of the sample project, recorded in pg_migrate's
history: applied, failed and rolled back, always agreeing with
django_migrations."""

import os
import shutil
import tempfile
import unittest

from .server import SAMPLE, Server


class History(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("history")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def applied(self, db):
        """(app, name) applied according to Django, and to pg_migrate."""
        django = set(self.server.rows(db, "SELECT app, name FROM django_migrations"))
        # (Entries named <migration>.<kind><n> are the jobs migrations queued.)
        pgm = set(self.server.rows(db, "SELECT app, name FROM migrate_history WHERE status = 'applied' AND name NOT LIKE '%.%'"))
        return django, pgm

    def test_migrate_failure_and_rollback_agree_with_django_migrations(self):
        s = self.server
        s.create_db("agree")
        rc, out = s.manage("agree", "migrate")
        self.assertEqual(rc, 0, out)
        django, pgm = self.applied("agree")
        self.assertEqual(django, pgm)
        self.assertIn(("articles", "0003_check"), pgm)
        # Each run has its checksum (the file's sha256) and a duration.
        for checksum, duration in s.rows(
            "agree", "SELECT checksum, duration FROM migrate_history WHERE app = 'articles' AND name NOT LIKE '%.%'"
        ):
            self.assertTrue(checksum.startswith("sha256:") and len(checksum) == 71, checksum)
            self.assertIsNotNone(duration)

        # Roll back to 0001: the rest is unapplied in both.
        rc, out = s.manage("agree", "migrate", "articles", "0001")
        self.assertEqual(rc, 0, out)
        django, pgm = self.applied("agree")
        self.assertEqual(django, pgm)
        self.assertEqual(
            s.rows("agree", "SELECT name, status FROM migrate_history WHERE app = 'articles' ORDER BY name"),
            [
                ("0001_initial", "applied"),
                ("0002_article_summary", "unapplied"),
                ("0003_check", "unapplied"),
                ("0004_backfill_summary", "unapplied"),
                ("0004_backfill_summary.backfill1", "unapplied"),
                ("0005_summary_not_null", "unapplied"),
                ("0005_summary_not_null.notnull1", "unapplied"),
            ],
        )

        # A migration that raises: its transaction rolls back, its run is
        # failed with the error, and the ones before it are applied.
        rc, out = s.manage("agree", "migrate", env={"PGM_SAMPLE_FAIL": "1"})
        self.assertNotEqual(rc, 0, out)
        self.assertIn("sample check failed on purpose", out)
        django, pgm = self.applied("agree")
        self.assertEqual(django, pgm)
        self.assertEqual(
            s.rows("agree", "SELECT status, error FROM migrate_history WHERE app = 'articles' AND name = '0003_check'"),
            [("failed", "sample check failed on purpose")],
        )
        # And it can run again once fixed.
        rc, out = s.manage("agree", "migrate")
        self.assertEqual(rc, 0, out)
        django, pgm = self.applied("agree")
        self.assertEqual(django, pgm)
        self.assertIn(("articles", "0003_check"), pgm)

    def test_a_migration_fixed_after_it_failed_runs_again_and_the_history_says_forced(self):
        s = self.server
        s.create_db("fixed")
        with tempfile.TemporaryDirectory() as tmp:
            project = os.path.join(tmp, "sample")
            shutil.copytree(SAMPLE, project)
            check = os.path.join(project, "articles", "migrations", "0003_check.py")
            with open(check) as f:
                text = f.read()
            with open(check, "w") as f:
                f.write(text.replace('os.environ.get("PGM_SAMPLE_FAIL")', "True"))
            rc, out = s.manage("fixed", "migrate", project=project)
            self.assertNotEqual(rc, 0, out)
            with open(check, "w") as f:
                f.write(text)
            rc, out = s.manage("fixed", "migrate", project=project)
            self.assertEqual(rc, 0, out)
        django, pgm = self.applied("fixed")
        self.assertEqual(django, pgm)
        self.assertEqual(
            s.rows("fixed", "SELECT event, forced FROM migrate_events WHERE app = 'articles' AND name = '0003_check' ORDER BY event_id"),
            [("started", False), ("failed", False), ("started", True), ("applied", False)],
        )

    def test_a_database_without_the_extension_migrates_and_says_how_to_record(self):
        s = self.server
        s.create_db("plain", extension=False)
        rc, out = s.manage("plain", "migrate", "articles", "0003")
        self.assertEqual(rc, 0, out)
        self.assertEqual(out.count("pg_migrate: the extension is not installed in database 'default'"), 1, out)
        self.assertIn("CREATE EXTENSION pg_migrate", out)
        # A Backfill cannot do without it: one message with the way out.
        rc, out = s.manage("plain", "migrate")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("Backfill needs pg_migrate, which is not installed in database 'default' (plain)", out)

    def test_a_role_without_the_grant_gets_pg_migrates_error_and_nothing_is_applied(self):
        s = self.server
        s.create_db("nogrant")
        with s.connect("nogrant") as c:
            c.execute("CREATE ROLE app LOGIN; GRANT CREATE ON SCHEMA public TO app")
        rc, out = s.manage("nogrant", "migrate", "articles", user="app")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("permission denied for function migrate_start", out)
        self.assertIn('GRANT EXECUTE ON FUNCTION "public".migrate_start', out)
        self.assertEqual(s.rows("nogrant", "SELECT count(*) FROM migrate_history"), [(0,)])
        tables = s.rows("nogrant", "SELECT count(*) FROM pg_class WHERE relname = 'articles_article'")
        self.assertEqual(tables, [(0,)])
        # With the grant, the same role migrates and its runs are recorded.
        with s.connect("nogrant") as c:
            c.execute("GRANT EXECUTE ON FUNCTION migrate_start, migrate_finish, migrate_record, migrate_unapply TO app")
        rc, out = s.manage("nogrant", "migrate", "articles", user="app")
        self.assertEqual(rc, 0, out)
        self.assertEqual(
            s.rows(
                "nogrant",
                "SELECT count(*), min(applied_by) FROM migrate_history WHERE status = 'applied' AND name NOT LIKE '%.%'",
            ),
            [(5, "app")],
        )


if __name__ == "__main__":
    unittest.main()
