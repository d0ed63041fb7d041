"""The sample project's Backfill: `migrate` queues the job and returns at
once, `pgmigrate_wait` follows it to the end, a rollback cancels it."""

import time
import unittest

from .server import Server


class Backfill(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("backfill")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_migrate_returns_at_once_and_pgmigrate_wait_follows_the_job_on_a_million_rows(self):
        s = self.server
        s.create_db("big")
        rc, out = s.manage("big", "migrate", "articles", "0002")
        self.assertEqual(rc, 0, out)
        with s.connect("big") as c:
            c.execute("INSERT INTO articles_article (title, body)"
                      " SELECT 't' || g, repeat('body ' || g || ' ', 30) FROM generate_series(1, 1000000) g")
            c.execute("VACUUM ANALYZE articles_article")
        t0 = time.monotonic()
        rc, out = s.manage("big", "migrate")
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, out)
        self.assertLess(took, 2.0, f"migrate took {took:.2f} s: {out}")
        self.assertIn("pg_migrate job", out)
        # Rolled back while the job runs: the job is cancelled, its entry reversed.
        rc, out = s.manage("big", "migrate", "articles", "0003")
        self.assertEqual(rc, 0, out)
        self.assertEqual(
            s.rows("big", "SELECT state FROM migrate_progress WHERE migration = 'articles.0004_backfill_summary.backfill1'"),
            [("cancelled",)],
        )
        self.assertEqual(
            s.rows("big", "SELECT status FROM migrate_history WHERE name = '0004_backfill_summary.backfill1'"),
            [("unapplied",)],
        )
        # Forward again: a new job; pgmigrate_wait exits 0 when it ends.
        rc, out = s.manage("big", "migrate")
        self.assertEqual(rc, 0, out)
        rc, out = s.manage("big", "pgmigrate_wait")
        self.assertEqual(rc, 0, out)
        self.assertIn("succeeded", out)
        self.assertEqual(s.rows("big", "SELECT count(*) FROM articles_article WHERE summary IS NULL"), [(0,)])
        self.assertEqual(
            s.rows("big", "SELECT status FROM migrate_history WHERE name = '0004_backfill_summary.backfill1'"),
            [("applied",)],
        )

    def test_pgmigrate_wait_exits_non_zero_when_a_job_fails(self):
        s = self.server
        s.create_db("bad")
        rc, out = s.manage("bad", "migrate")
        self.assertEqual(rc, 0, out)
        with s.connect("bad") as c:
            c.execute("INSERT INTO articles_article (title, body) VALUES ('a', 'b')")
            job = c.execute(
                "SELECT migrate_backfill('articles_article', 'summary = (1 / (length(body) - 1))::text')"
            ).fetchone()[0]
        rc, out = s.manage("bad", "pgmigrate_wait", str(job))
        self.assertEqual(rc, 1, out)
        self.assertIn(f"job {job}", out)
        self.assertIn("division by zero", out)
        self.assertIn(f"not succeeded: job(s) {job}", out)
        self.assertIn("SELECT migrate_retry(job)", out)
        # A job queued behind the failed one cannot start: pgmigrate_wait
        # does not wait for it for ever, and says why.
        with s.connect("bad") as c:
            behind = c.execute(
                "SELECT migrate_backfill('articles_article', 'summary = body', after_jobs => ARRAY[%s]::bigint[])", [job]
            ).fetchone()[0]
        rc, out = s.manage("bad", "pgmigrate_wait", "--timeout", "60")
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, rf"job {behind} \(backfill of public.articles_article\): queued .*; waits for job {job}, which failed")
        self.assertIn(f"not succeeded: job(s) {behind}", out)


if __name__ == "__main__":
    unittest.main()
