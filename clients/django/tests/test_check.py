"""The startup check: `manage.py check --database default` fails with
pg_migrate.E001 while a migration on disk is not applied according to
pg_migrate, and passes once it is; require_applied() for wsgi.py too; both
on a hot standby as well (they only read)."""

import os
import shutil
import tempfile
import unittest

from .server import SAMPLE, Server, wait_until


class StartupCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("check")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_the_check_fails_with_its_id_until_every_migration_is_applied(self):
        s = self.server
        s.create_db("chk")
        rc, out = s.manage("chk", "migrate", "articles", "0002")
        self.assertEqual(rc, 0, out)
        rc, out = s.manage("chk", "check", "--database", "default")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("pg_migrate.E001", out)
        self.assertIn("articles.0003_check", out)
        # require_applied(), for wsgi.py, says the same.
        code = "import django; django.setup(); from pg_migrate_django.checks import require_applied; require_applied()"
        rc, out = s.manage("chk", "shell", "-c", code)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("pg_migrate.E001", out)
        rc, out = s.manage("chk", "migrate")
        self.assertEqual(rc, 0, out)
        rc, out = s.manage("chk", "check", "--database", "default")
        self.assertEqual(rc, 0, out)
        rc, out = s.manage("chk", "shell", "-c", code)
        self.assertEqual(rc, 0, out)

    def test_a_squashed_migration_counts_as_applied_either_way(self):
        s = self.server
        with tempfile.TemporaryDirectory() as tmp:
            project = os.path.join(tmp, "sample")
            shutil.copytree(SAMPLE, project)
            # A database migrated before the squash.
            s.create_db("before")
            rc, out = s.manage("before", "migrate", project=project)
            self.assertEqual(rc, 0, out)
            rc, out = s.manage("before", "squashmigrations", "articles", "0002", "--noinput", project=project)
            self.assertEqual(rc, 0, out)
            rc, out = s.manage("before", "check", "--database", "default", project=project)
            self.assertEqual(rc, 0, out)
            # A new database, migrated with the squash: Django records it and
            # what it replaces, and so does pg_migrate.
            s.create_db("after")
            rc, out = s.manage("after", "migrate", project=project)
            self.assertEqual(rc, 0, out)
            self.assertIn("Applying articles.0001_squashed_0002_article_summary... OK", out)
            django = set(s.rows("after", "SELECT app, name FROM django_migrations"))
            pgm = set(s.rows("after", "SELECT app, name FROM migrate_history WHERE status = 'applied' AND name NOT LIKE '%.%'"))
            self.assertEqual(django, pgm)
            self.assertIn(("articles", "0001_squashed_0002_article_summary"), pgm)
            self.assertEqual(
                s.rows("after", "SELECT count(*) FROM migrate_history WHERE status = 'running' AND name NOT LIKE '%.%'"), [(0,)]
            )
            rc, out = s.manage("after", "check", "--database", "default", project=project)
            self.assertEqual(rc, 0, out)

    def test_the_check_works_on_a_hot_standby(self):
        s = self.server
        s.create_db("rep")
        rc, out = s.manage("rep", "migrate", "articles", "0002")
        self.assertEqual(rc, 0, out)
        standby = Server("check-standby", primary=s)
        try:
            self.assertEqual(standby.rows("rep", "SELECT pg_is_in_recovery()"), [(True,)])
            rc, out = standby.manage("rep", "check", "--database", "default")
            self.assertNotEqual(rc, 0, out)
            self.assertIn("pg_migrate.E001", out)
            self.assertIn("articles.0003_check", out)
            rc, out = s.manage("rep", "migrate")
            self.assertEqual(rc, 0, out)
            lsn = s.rows("rep", "SELECT pg_current_wal_lsn()::text")[0][0]
            wait_until("the standby to replay the migrations", 60, lambda: standby.rows(
                "rep", "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])[0][0])
            rc, out = standby.manage("rep", "check", "--database", "default")
            self.assertEqual(rc, 0, out)
            code = "import django; django.setup(); from pg_migrate_django.checks import require_applied; require_applied()"
            rc, out = standby.manage("rep", "shell", "-c", code)
            self.assertEqual(rc, 0, out)
        finally:
            standby.stop()


if __name__ == "__main__":
    unittest.main()
