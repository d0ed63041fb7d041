"""AddConstraintSafely, AlterTypeSafely and SafeRunSQL in migrations of a
copy of the sample project: the jobs and migrate_exec do the work, the
history has an entry for each, and each one reverses."""

import os
import shutil
import tempfile
import unittest

from .server import SAMPLE, Server

MIGRATIONS = {
    "0006_views.py": '''
from django.db import migrations, models
from pg_migrate_django.operations import AddConstraintSafely


class Migration(migrations.Migration):
    dependencies = [("articles", "0005_summary_not_null")]
    operations = [
        migrations.AddField("article", "views", models.IntegerField(null=True)),
        migrations.AddField("article", "score", models.IntegerField(null=True)),
        AddConstraintSafely("article", models.CheckConstraint(condition=models.Q(views__gte=0), name="article_views_pos")),
        AddConstraintSafely("article", models.UniqueConstraint(fields=["title"], name="article_title_uniq")),
        AddConstraintSafely("article", models.UniqueConstraint(
            fields=["body"], condition=models.Q(views__gt=1000), name="article_popular_body_uniq")),
    ]
''',
    "0007_views_bigint.py": '''
from django.db import migrations, models
from pg_migrate_django.operations import AlterTypeSafely


class Migration(migrations.Migration):
    dependencies = [("articles", "0006_views")]
    operations = [AlterTypeSafely("article", "score", models.BigIntegerField(null=True))]
''',
    "0008_note.py": '''
from django.db import migrations, models
from pg_migrate_django.operations import SafeRunSQL


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("articles", "0007_views_bigint")]
    operations = [
        SafeRunSQL(
            "ALTER TABLE articles_article ADD COLUMN note text; COMMENT ON COLUMN articles_article.note IS 'n';",
            reverse_sql="ALTER TABLE articles_article DROP COLUMN note;",
            state_operations=[migrations.AddField("article", "note", models.TextField(null=True))],
            lock_timeout="1s",
        ),
    ]
''',
}

IN_TRANSACTION = '''
from django.db import migrations
from pg_migrate_django.operations import SafeRunSQL


class Migration(migrations.Migration):
    dependencies = [("articles", "0008_note")]
    operations = [SafeRunSQL("ALTER TABLE articles_article ADD COLUMN other text", reverse_sql="")]
'''


class Operations(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("operations")
        cls.tmp = tempfile.mkdtemp()
        cls.project = os.path.join(cls.tmp, "sample")
        shutil.copytree(SAMPLE, cls.project)
        cls.migrations = os.path.join(cls.project, "articles", "migrations")
        for name, text in MIGRATIONS.items():
            with open(os.path.join(cls.migrations, name), "w") as f:
                f.write(text)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def manage(self, *args, ok=True):
        rc, out = self.server.manage("ops", *args, project=self.project)
        if ok:
            self.assertEqual(rc, 0, out)
        return rc, out

    def rows(self, sql, params=None):
        return self.server.rows("ops", sql, params)

    def status(self, name):
        return self.rows("SELECT status FROM migrate_history WHERE name = %s", [name])

    def views_type(self):
        return self.rows(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'articles_article'::regclass AND attname = 'score'"
        )

    def constraints(self):
        return self.rows(
            "SELECT conname, contype, convalidated FROM pg_constraint"
            " WHERE conrelid = 'articles_article'::regclass AND contype IN ('c', 'u') ORDER BY conname"
        )

    def test_constraints_type_change_and_sql_forwards_and_back(self):
        self.server.create_db("ops")
        self.manage("migrate", "articles", "0005")
        self.manage("pgmigrate_deployed")
        self.manage("pgmigrate_wait")
        with self.server.connect("ops") as c:
            c.execute("INSERT INTO articles_article (title, body, summary)"
                      " SELECT 't' || g, 'b' || g, 's' FROM generate_series(1, 20000) g")

        self.manage("migrate", "articles", "0006")
        self.manage("pgmigrate_wait")
        self.assertEqual(self.constraints(), [("article_title_uniq", "u", True), ("article_views_pos", "c", True)])
        self.assertEqual(self.rows("SELECT indisvalid FROM pg_index WHERE indexrelid = 'article_popular_body_uniq'::regclass"),
                         [(True,)])
        for n in (1, 2, 3):
            self.assertEqual(self.status(f"0006_views.constraint{n}"), [("applied",)])
        # The check is enforced: a negative count fails.
        with self.server.connect("ops") as c:
            with self.assertRaises(Exception) as e:
                c.execute("UPDATE articles_article SET views = -1 WHERE id = 1")
            self.assertEqual(e.exception.sqlstate, "23514")

        # The type change: a job with its backfill and cut-over.
        with self.server.connect("ops") as c:
            c.execute("UPDATE articles_article SET score = id")
        self.manage("migrate", "articles", "0007")
        rc, out = self.manage("pgmigrate_wait")
        self.assertEqual(self.views_type(), [("bigint",)])
        self.assertEqual(self.status("0007_views_bigint.altertype1"), [("applied",)])
        self.assertEqual(self.rows("SELECT count(*) FROM articles_article WHERE score <> id"), [(0,)])

        # SafeRunSQL: through migrate_exec, its attempts logged.
        self.manage("migrate", "articles", "0008")
        self.assertEqual(self.rows("SELECT col_description('articles_article'::regclass, (SELECT attnum FROM pg_attribute WHERE attrelid = 'articles_article'::regclass AND attname = 'note'))"), [("n",)])
        self.assertEqual(self.status("0008_note.sql1"), [("applied",)])
        self.assertEqual(
            self.rows("SELECT count(*) FROM migrate_exec_log WHERE outcome = 'succeeded'"), [(2,)]
        )

        # In a migration with a transaction it is refused, with the way out,
        # and nothing of that migration is applied.
        with open(os.path.join(self.migrations, "0009_in_transaction.py"), "w") as f:
            f.write(IN_TRANSACTION)
        rc, out = self.manage("migrate", "articles", "0009", ok=False)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("set atomic = False on the migration", out)
        self.assertEqual(self.rows("SELECT count(*) FROM django_migrations WHERE name = '0009_in_transaction'"), [(0,)])
        os.remove(os.path.join(self.migrations, "0009_in_transaction.py"))

        # Backwards, one step at a time.
        self.manage("migrate", "articles", "0007")
        self.assertEqual(self.rows("SELECT count(*) FROM pg_attribute WHERE attrelid = 'articles_article'::regclass"
                                   " AND attname = 'note' AND NOT attisdropped"), [(0,)])
        self.assertEqual(self.status("0008_note.sql1"), [("unapplied",)])
        # The type change ended with the old column dropped: reversing it
        # queues the change back to integer.
        rc, out = self.manage("migrate", "articles", "0006")
        self.assertIn("pg_migrate job", out)
        self.manage("pgmigrate_wait")
        self.assertEqual(self.views_type(), [("integer",)])
        self.assertEqual(self.status("0007_views_bigint.altertype1"), [("unapplied",)])
        self.manage("migrate", "articles", "0005")
        self.manage("pgmigrate_wait")
        self.assertEqual(self.constraints(), [])
        self.assertEqual(self.rows("SELECT to_regclass('article_popular_body_uniq') IS NULL"), [(True,)])
        django = set(self.rows("SELECT app, name FROM django_migrations"))
        pgm = set(self.rows("SELECT app, name FROM migrate_history WHERE status = 'applied' AND name NOT LIKE '%.%'"))
        self.assertEqual(django, pgm)

    def test_options_are_checked_and_kept_in_the_migration_file(self):
        code = """
from django.db import models
from django.db.migrations.writer import OperationWriter
from pg_migrate_django import operations as o
ops = [
    o.SetNotNull("article", "summary", models.TextField(), lock_timeout="1s"),
    o.AlterTypeSafely("article", "score", models.BigIntegerField(), using="score::bigint", complete="manual"),
    o.AddIndexConcurrently("article", models.Index(fields=["title"], name="i"), max_retries=5),
    o.SafeRunSQL("SELECT 1", attempts=3),
    o.Backfill("article", set="summary = body", batch_size=500),
]
for op in ops:
    text, _ = OperationWriter(op).serialize()
    print(" ".join(text.split()))
try:
    o.SetNotNull("article", "summary", models.TextField(), batch_size=5)
except TypeError as e:
    print(e)
"""
        rc, out = self.server.manage("postgres", "shell", "-c", code, project=self.project)
        self.assertEqual(rc, 0, out)
        for expected in (
            "pg_migrate_django.operations.SetNotNull( model_name='article', name='summary', field=models.TextField(), lock_timeout='1s', ),",
            "using='score::bigint', complete='manual', )",
            "name='i'), max_retries=5, ),",
            "sql='SELECT 1', attempts=3, ),",
            "set='summary = body', batch_size=500, ),",
            "SetNotNull: unknown option(s) batch_size; it takes after_jobs, after_migration, lock_timeout, max_retries, run_at",
        ):
            self.assertIn(expected, out)

    def test_an_alter_type_reversed_before_it_ran_is_rolled_back(self):
        s = self.server
        s.create_db("early")
        # 0005 is not deployed: its job holds every later job on the table,
        # so the type change of 0007 is still queued when it is reversed.
        rc, out = s.manage("early", "migrate", "articles", "0007", project=self.project)
        self.assertEqual(rc, 0, out)
        job, reason = s.rows(
            "early", "SELECT job_id, wait_reason FROM migrate_progress WHERE migration = 'articles.0007_views_bigint.altertype1'"
        )[0]
        self.assertIn("waits for job", reason)
        rc, out = s.manage("early", "pgmigrate_wait", project=self.project)
        self.assertEqual(rc, 0, out)
        self.assertIn("held for a post-deploy gate", out)
        rc, out = s.manage("early", "migrate", "articles", "0006", project=self.project)
        self.assertEqual(rc, 0, out)
        self.assertNotIn("pg_migrate job", out)
        self.assertEqual(s.rows("early", "SELECT state FROM migrate_progress WHERE job_id = %s", [job]), [("cancelled",)])
        self.assertEqual(
            s.rows("early", "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                            " WHERE attrelid = 'articles_article'::regclass AND attname LIKE 'score%' AND NOT attisdropped"),
            [("integer",)],
        )
        self.assertEqual(
            s.rows("early", "SELECT status FROM migrate_history WHERE name = '0007_views_bigint.altertype1'"), [("unapplied",)]
        )


if __name__ == "__main__":
    unittest.main()
