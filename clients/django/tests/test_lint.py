"""pgmigrate_lint, the CI step: against a live table of 300,000 rows it
flags a plain AddIndex and a NOT NULL AddField, with the safer way for
each, and passes the safe versions of the same change."""

import os
import shutil
import tempfile
import unittest

from .server import SAMPLE, Server

PLAIN = '''
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("articles", "0005_summary_not_null")]
    operations = [
        migrations.AddIndex("article", models.Index(fields=["title"], name="article_title_idx")),
        migrations.AddField("article", "flag", models.BooleanField(default=False)),
    ]
'''

SAFE = '''
from django.db import migrations, models
from pg_migrate_django.operations import AddIndexConcurrently, Backfill, SetNotNull


class Migration(migrations.Migration):
    dependencies = [("articles", "0005_summary_not_null")]
    operations = [
        AddIndexConcurrently("article", models.Index(fields=["title"], name="article_title_idx")),
        migrations.AddField("article", "flag", models.BooleanField(null=True)),
        Backfill("article", set="flag = false", where="flag IS NULL"),
        SetNotNull("article", "flag", models.BooleanField()),
    ]
'''

NEW_TABLE = '''
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("articles", "0006_flag")]
    operations = [
        migrations.CreateModel("Tag", [("id", models.BigAutoField(primary_key=True)), ("name", models.TextField())]),
        migrations.AddIndex("tag", models.Index(fields=["name"], name="tag_name_idx")),
        migrations.AddField("tag", "weight", models.IntegerField(default=1)),
    ]
'''


class Lint(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("lint")
        cls.tmp = tempfile.mkdtemp()
        cls.project = os.path.join(cls.tmp, "sample")
        shutil.copytree(SAMPLE, cls.project)
        cls.migrations = os.path.join(cls.project, "articles", "migrations")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def write(self, name, text):
        with open(os.path.join(self.migrations, name), "w") as f:
            f.write(text)

    def lint(self, *args):
        return self.server.manage("lint", "pgmigrate_lint", *args, project=self.project)

    def test_flags_the_plain_change_and_passes_the_safe_one(self):
        s = self.server
        s.create_db("lint")
        rc, out = s.manage("lint", "migrate", project=self.project)
        self.assertEqual(rc, 0, out)
        with s.connect("lint") as c:
            c.execute("INSERT INTO articles_article (title, body, summary)"
                      " SELECT 't' || g, repeat('body ' || g || ' ', 30), 's' FROM generate_series(1, 300000) g")
            c.execute("VACUUM ANALYZE articles_article")
        rc, out = self.lint()
        self.assertEqual(rc, 0, out)
        self.assertIn("no unapplied migration", out)

        self.write("0006_flag.py", PLAIN)
        rc, out = self.lint()
        self.assertEqual(rc, 1, out)
        self.assertIn("articles.0006_flag: 2 finding(s)", out)
        self.assertIn("medium: CREATE INDEX on articles_article (ShareLock)", out)
        self.assertIn("which blocks writes", out)
        self.assertIn("""instead: SELECT migrate_create_index('CREATE INDEX "article_title_idx\"""", out)
        self.assertIn("in the migration: AddIndexConcurrently in place of AddIndex", out)
        self.assertIn("high: AddField article.flag NOT NULL on articles_article", out)
        self.assertIn("SetNotNull('article', 'flag', ...) in a post_deploy migration", out)
        self.assertIn("pgmigrate_lint: 2 finding(s) at or above medium risk", out)
        # The threshold is the caller's: at high only the AddField fails.
        rc, out = self.lint("--fail-on", "high")
        self.assertEqual(rc, 1, out)
        self.assertIn("articles.0006_flag: 1 finding(s)", out)
        self.assertNotIn("CREATE INDEX on", out)

        # A table created in the same plan is new: nothing to flag there.
        self.write("0007_tag.py", NEW_TABLE)
        self.write("0006_flag.py", SAFE)
        rc, out = self.lint()
        self.assertEqual(rc, 0, out)
        self.assertIn("articles.0006_flag: ok (highest risk: low)", out)
        self.assertIn("articles.0007_tag: ok", out)
        # Nothing was run or queued by the lint.
        self.assertEqual(s.rows("lint", "SELECT count(*) FROM migrate_progress WHERE migration LIKE 'articles.0006%'"), [(0,)])
        self.assertEqual(s.rows("lint", "SELECT count(*) FROM django_migrations WHERE name = '0006_flag'"), [(0,)])
        # sqlmigrate shows what migrate will queue.
        rc, out = s.manage("lint", "sqlmigrate", "articles", "0006", project=self.project)
        self.assertEqual(rc, 0, out)
        self.assertIn("migrate_create_index('CREATE INDEX \"article_title_idx\"", out)
        self.assertIn(".migrate_set_not_null('articles_article'::pg_catalog.regclass, 'flag')", out)

    def test_without_the_extension_it_says_what_to_do(self):
        s = self.server
        s.create_db("noext", extension=False)
        rc, out = s.manage("noext", "pgmigrate_lint", project=self.project)
        self.assertEqual(rc, 1, out)
        self.assertIn("pgmigrate_lint needs pg_migrate, which is not installed", out)


if __name__ == "__main__":
    unittest.main()
