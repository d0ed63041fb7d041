"""Deploy stages: the sample's 0005 is post-deploy.  One `migrate` queues
the whole plan; the NOT NULL job waits, in the database, for the backfill
before it and for the deploy's gate, and runs once
`pgmigrate_deployed` opens the gate."""

import unittest

from .server import Server

GATE = "0005_summary_not_null.deployed"


class Deploy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("deploy")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def notnull(self, db):
        return self.server.rows(
            db, "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'articles_article'::regclass AND attname = 'summary'"
        )[0][0]

    def test_a_post_deploy_step_waits_until_its_gate_opens(self):
        s = self.server
        s.create_db("dep")
        rc, out = s.manage("dep", "migrate", "articles", "0002")
        self.assertEqual(rc, 0, out)
        with s.connect("dep") as c:
            c.execute("INSERT INTO articles_article (title, body) SELECT 't' || g, 'body ' || g FROM generate_series(1, 100000) g")
        rc, out = s.manage("dep", "migrate")
        self.assertEqual(rc, 0, out)
        (fill, fill_kind), (job, kind) = s.rows(
            "dep",
            "SELECT job_id, kind FROM migrate_progress WHERE migration LIKE 'articles.%' ORDER BY job_id",
        )
        self.assertEqual((fill_kind, kind), ("backfill", "set_not_null"))
        # pgmigrate_wait without ids follows the backfill to its end and
        # does not wait for the held job.
        rc, out = s.manage("dep", "pgmigrate_wait")
        self.assertEqual(rc, 0, out)
        self.assertIn(f"job {job} (set_not_null of public.articles_article): queued; waits for migration articles.{GATE}", out)
        self.assertIn("not waited for", out)
        self.assertEqual(s.rows("dep", "SELECT state FROM migrate_progress WHERE job_id = %s", [fill]), [("succeeded",)])
        # The backfill is done, the gate is not: the job stays queued.
        rc, out = s.manage("dep", "pgmigrate_wait", str(job), "--timeout", "3")
        self.assertEqual(rc, 1, out)
        self.assertEqual(s.rows("dep", "SELECT state FROM migrate_progress WHERE job_id = %s", [job]), [("queued",)])
        self.assertFalse(self.notnull("dep"))
        self.assertEqual(s.rows("dep", "SELECT count(*) FROM migrate_history WHERE name = %s", [GATE]), [(0,)])

        rc, out = s.manage("dep", "pgmigrate_deployed")
        self.assertEqual(rc, 0, out)
        self.assertIn(f"articles.0005_summary_not_null: deployed; its jobs start now ({job};", out)
        rc, out = s.manage("dep", "pgmigrate_wait", str(job))
        self.assertEqual(rc, 0, out)
        self.assertTrue(self.notnull("dep"))
        self.assertEqual(
            s.rows("dep", "SELECT name, status FROM migrate_history WHERE name LIKE '0005%' ORDER BY name"),
            [("0005_summary_not_null", "applied"), (GATE, "applied"), ("0005_summary_not_null.notnull1", "applied")],
        )
        rc, out = s.manage("dep", "pgmigrate_deployed")
        self.assertIn("deployed already", out)

        # Rolled back: NOT NULL goes, and so does the gate; forward again,
        # the job waits for the next deploy.
        rc, out = s.manage("dep", "migrate", "articles", "0004")
        self.assertEqual(rc, 0, out)
        self.assertFalse(self.notnull("dep"))
        self.assertEqual(s.rows("dep", "SELECT status FROM migrate_history WHERE name = %s", [GATE]), [("unapplied",)])
        rc, out = s.manage("dep", "migrate")
        self.assertEqual(rc, 0, out)
        again = s.rows("dep", "SELECT max(job_id) FROM migrate_progress")[0][0]
        rc, out = s.manage("dep", "pgmigrate_wait", str(again), "--timeout", "2")
        self.assertEqual(rc, 1, out)
        self.assertIn(f"waits for migration articles.{GATE}", out)
        django = set(s.rows("dep", "SELECT app, name FROM django_migrations"))
        pgm = set(s.rows("dep", "SELECT app, name FROM migrate_history WHERE status = 'applied' AND name NOT LIKE '%.%'"))
        self.assertEqual(django, pgm)


if __name__ == "__main__":
    unittest.main()
