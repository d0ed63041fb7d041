from django.apps import AppConfig


class PgMigrateConfig(AppConfig):
    name = "pg_migrate_django"
    label = "pg_migrate_django"
    verbose_name = "pg_migrate"

    def ready(self):
        from . import checks, history  # noqa: F401 (checks registers the startup check)

        history.install()
