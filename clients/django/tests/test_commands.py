"""pgmigrate_import and pgmigrate_status."""

import time
import unittest

from .server import Server


class Commands(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("commands")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_import_adopts_a_project_that_migrated_without_pg_migrate_once(self):
        s = self.server
        s.create_db("adopt", extension=False)
        rc, out = s.manage("adopt", "migrate", "articles", "0003")
        self.assertEqual(rc, 0, out)
        with s.connect("adopt") as c:
            c.execute("CREATE EXTENSION pg_migrate")
        rc, out = s.manage("adopt", "pgmigrate_import")
        self.assertEqual(rc, 0, out)
        self.assertIn("imported 3 migration(s)", out)
        rc, out = s.manage("adopt", "pgmigrate_import")
        self.assertEqual(rc, 0, out)
        self.assertIn("imported 0 migration(s)", out)
        django = set(s.rows("adopt", "SELECT app, name FROM django_migrations"))
        pgm = set(s.rows("adopt", "SELECT app, name FROM migrate_history WHERE status = 'applied'"))
        self.assertEqual(django, pgm)
        # From here on migrate records as usual.
        rc, out = s.manage("adopt", "migrate")
        self.assertEqual(rc, 0, out)
        self.assertEqual(
            s.rows("adopt", "SELECT status FROM migrate_history WHERE app = 'articles' AND name = '0004_backfill_summary'"),
            [("applied",)],
        )

    def test_status_shows_each_job_with_its_progress_bar(self):
        s = self.server
        s.create_db("status")
        rc, out = s.manage("status", "pgmigrate_status")
        self.assertEqual(rc, 0, out)
        self.assertIn("no pg_migrate job is waiting or running", out)
        rc, out = s.manage("status", "migrate")
        self.assertEqual(rc, 0, out)
        with s.connect("status") as c:
            c.execute("INSERT INTO articles_article (title, body) SELECT 't', 'b' FROM generate_series(1, 20000)")
            c.execute("ANALYZE articles_article")
            job = c.execute(
                "SELECT migrate_backfill('articles_article', 'summary = body', max_rows_per_second => 2000)"
            ).fetchone()[0]
        deadline = time.monotonic() + 60
        while True:
            rc, out = s.manage("status", "pgmigrate_status")
            self.assertEqual(rc, 0, out)
            # Running, or waiting between batches for its rows budget.
            if ("running" in out or "waiting" in out) and "[#" in out:
                break
            self.assertLess(time.monotonic(), deadline, out)
            time.sleep(0.2)
        self.assertIn(f"job {job}", out)
        self.assertIn("public.articles_article", out)
        with s.connect("status") as c:
            c.execute("SELECT migrate_cancel(%s)", [job])
        rc, out = s.manage("status", "pgmigrate_status", "--all")
        self.assertEqual(rc, 0, out)
        self.assertIn("cancelled", out)


if __name__ == "__main__":
    unittest.main()
