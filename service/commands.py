"""The service's commands, run with Flask's CLI beside the web process (docs/operations.md):

    flask --app app upgrade-database        the release command: every pending schema step
    flask --app app archive-predictions --before 2026-01-01 [--to FILE]

Contract: `register(app, prediction_model, settings, after_upgrade)` adds them to app.cli;
`after_upgrade(database)` runs once the release's upgrade is done (app.py stores the model's
training profile there: a web process started behind the release could not). Both connect through
DATABASE_DIRECT_URL when it is set (a pooler in front of DATABASE_URL may end a long transaction
or its lock), else DATABASE_URL, with one connection.
"""

from datetime import datetime

import click
from playhouse.db_url import connect

from service import archive, database, migrations


def direct_database(settings):
    url, options = database.pool_settings(settings.DATABASE_DIRECT_URL or settings.DATABASE_URL, 1, 60)
    return connect(url, **options)


def register(app, prediction_model, settings, after_upgrade):
    @app.cli.command("upgrade-database")
    def upgrade_database():
        """Apply every pending schema step: the release command (docs/deploying.md)."""
        direct = direct_database(settings)
        with direct.bind_ctx([prediction_model]):
            click.echo(migrations.upgrade(direct, prediction_model))
        after_upgrade(direct)

    @app.cli.command("archive-predictions")
    @click.option(
        "--before", required=True, help="archive the predictions made before this day (UTC), YYYY-MM-DD"
    )
    @click.option("--to", "path", help="the CSV file to write (default: archive/predictions-before-DAY.csv)")
    def archive_predictions(before, path):
        """Move the predictions made before a day to a CSV file, keeping them in /stats."""
        day = datetime.strptime(before, "%Y-%m-%d")
        direct = direct_database(settings)
        table = prediction_model._meta.table_name
        with direct.connection_context():
            click.echo(
                archive.archive(direct, table, day, path or f"archive/predictions-before-{before}.csv")
            )
