"""pg_migrate for Django: `manage.py migrate` recorded in pg_migrate's history."""
