"""AddIndexConcurrently and RemoveIndexConcurrently: index jobs queued by
migrate, built and dropped by the worker, reversed by a rollback."""

import os
import shutil
import tempfile
import unittest

from .server import SAMPLE, Server

ADD = '''
from django.db import migrations, models
from pg_migrate_django.operations import AddIndexConcurrently


class Migration(migrations.Migration):
    dependencies = [("articles", "0005_summary_not_null")]
    operations = [
        AddIndexConcurrently("article", models.Index(fields=["title"], name="article_title_idx")),
    ]
'''

REMOVE = '''
from django.db import migrations
from pg_migrate_django.operations import RemoveIndexConcurrently


class Migration(migrations.Migration):
    dependencies = [("articles", "0006_title_index")]
    operations = [RemoveIndexConcurrently("article", "article_title_idx")]
'''


class Indexes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("indexes")
        cls.tmp = tempfile.mkdtemp()
        cls.project = os.path.join(cls.tmp, "sample")
        shutil.copytree(SAMPLE, cls.project)
        migrations = os.path.join(cls.project, "articles", "migrations")
        with open(os.path.join(migrations, "0006_title_index.py"), "w") as f:
            f.write(ADD)
        with open(os.path.join(migrations, "0007_drop_title_index.py"), "w") as f:
            f.write(REMOVE)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def manage(self, *args):
        rc, out = self.server.manage("ix", *args, project=self.project)
        self.assertEqual(rc, 0, out)
        return out

    def index(self):
        """Whether article_title_idx exists, and is valid."""
        return self.server.rows(
            "ix", "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass('article_title_idx')"
        )

    def status(self, name):
        return self.server.rows("ix", "SELECT status FROM migrate_history WHERE name = %s", [name])

    def test_index_jobs_forwards_and_back(self):
        self.server.create_db("ix")
        out = self.manage("migrate", "articles", "0006")
        self.assertIn("pg_migrate job", out)
        # The build waits behind 0005's NOT NULL job on the same table,
        # which waits for the deploy.
        out = self.manage("pgmigrate_wait")
        self.assertIn("held for a post-deploy gate", out)
        self.assertEqual(self.index(), [])
        self.manage("pgmigrate_deployed")
        self.manage("pgmigrate_wait")
        self.assertEqual(self.index(), [(True,)])
        self.assertEqual(self.status("0006_title_index.index1"), [("applied",)])
        statement = self.server.rows("ix", "SELECT statement FROM migrate_index_builds ORDER BY job_id, attempt")[-1][0]
        self.assertIn("CONCURRENTLY", statement)

        self.manage("migrate", "articles", "0007")
        self.manage("pgmigrate_wait")
        self.assertEqual(self.index(), [])
        self.assertEqual(self.status("0007_drop_title_index.dropindex1"), [("applied",)])

        # Back to 0006: the index is built again; back to 0005: dropped.
        self.manage("migrate", "articles", "0006")
        self.manage("pgmigrate_wait")
        self.assertEqual(self.index(), [(True,)])
        self.assertEqual(self.status("0007_drop_title_index.dropindex1"), [("unapplied",)])
        self.manage("migrate", "articles", "0005")
        self.manage("pgmigrate_wait")
        self.assertEqual(self.index(), [])
        self.assertEqual(self.status("0006_title_index.index1"), [("unapplied",)])

        django = set(self.server.rows("ix", "SELECT app, name FROM django_migrations"))
        pgm = set(self.server.rows(
            "ix", "SELECT app, name FROM migrate_history WHERE status = 'applied' AND name NOT LIKE '%.%'"))
        self.assertEqual(django, pgm)


if __name__ == "__main__":
    unittest.main()
