"""A private PostgreSQL server for the Django tests, started through the
project's scripts/cluster.sh (as the postgres OS user, pg_migrate
preloaded), and the sample project's manage.py run against it."""

import os
import shutil
import socket
import subprocess
import sys
import time

import psycopg

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SAMPLE = os.path.join(ROOT, "clients", "django", "sample")
CLUSTER = os.path.join(ROOT, "scripts", "cluster.sh")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name, primary=None):
        """A new server; with `primary`, a streaming hot standby of it
        (pg_basebackup)."""
        self.dir = os.path.join(ROOT, "target", "django-clusters", f"{name}-{os.getpid()}")
        self.port = free_port()
        if primary is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            os.makedirs(self.dir)
            shutil.chown(self.dir, "postgres")
            subprocess.run(
                ["sudo", "-u", "postgres", "/usr/lib/postgresql/15/bin/pg_basebackup", "-h", "127.0.0.1",
                 "-p", str(primary.port), "-U", "postgres", "-D", os.path.join(self.dir, "data"),
                 "-R", "-X", "stream", "-c", "fast"],
                check=True, capture_output=True,
            )
        subprocess.run([CLUSTER, "start", self.dir, str(self.port)], check=True, capture_output=True)

    def stop(self):
        subprocess.run([CLUSTER, "destroy", self.dir], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, db="postgres", user="postgres"):
        return psycopg.connect(host="127.0.0.1", port=self.port, dbname=db, user=user, autocommit=True)

    def create_db(self, db, extension=True):
        with self.connect() as c:
            c.execute(f'CREATE DATABASE "{db}"')
        if extension:
            with self.connect(db) as c:
                c.execute("CREATE EXTENSION pg_migrate")

    def manage(self, db, *args, env=None, user="postgres", project=SAMPLE):
        """Run the sample project's manage.py (or that of a copy of it);
        (exit code, stdout + stderr)."""
        e = dict(os.environ, PGM_DB=db, PGM_PORT=str(self.port), PGM_USER=user, PYTHONUNBUFFERED="1")
        e.pop("PGM_SAMPLE_FAIL", None)
        e.update(env or {})
        p = subprocess.run([sys.executable, "manage.py", *args], cwd=project, env=e,
                           capture_output=True, text=True, timeout=300)
        return p.returncode, p.stdout + p.stderr

    def rows(self, db, sql, params=None):
        with self.connect(db) as c:
            return c.execute(sql, params).fetchall()


def wait_until(what, timeout, f):
    end = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
