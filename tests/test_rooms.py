"""What keeps the rooms safe to change: a served route without a row in the route table stops
start-up, a column type the schema check does not know is a SchemaError, /predict's path writes
nothing but predictions, and the pools count their connections through peewee's own hooks, with
one reaper per database object."""

import threading

import pytest
from flask import Flask
from peewee import BooleanField, Model
from playhouse.db_url import connect

from service import database, migrations, routes
from tools.servers import EXAMPLE_OBSERVATION


def test_the_app_serves_exactly_the_route_table(service):
    served = routes.served(service.app.url_map)
    assert sorted(route.key for route in served.values()) == sorted(route.key for route in routes.ROUTES)


def test_a_route_without_a_row_in_the_table_stops_start_up():
    app = Flask(__name__)  # its static files' rule is in the table
    app.add_url_rule("/admin", "admin", lambda: "open to all?")
    with pytest.raises(RuntimeError, match=r"GET /admin is served but has no row in service/routes.py"):
        routes.served(app.url_map)


def test_a_row_the_app_does_not_serve_stops_start_up_too():
    with pytest.raises(RuntimeError, match=r"lists GET /, POST /predict, .* which app.py does not serve"):
        routes.served(Flask(__name__).url_map)


def test_a_field_of_a_kind_the_schema_check_does_not_know_is_a_schema_error(service):
    class WithAFlag(Model):
        flag = BooleanField(null=True)

        class Meta:
            table_name = "prediction"

    with service.DB.connection_context():
        service.DB.execute_sql("ALTER TABLE prediction ADD COLUMN flag BOOLEAN")
        try:
            with pytest.raises(migrations.SchemaError, match="field flag is a BOOL field"):
                migrations.check_usable(service.DB, WithAFlag)
        finally:
            service.DB.execute_sql("ALTER TABLE prediction DROP COLUMN flag")


def test_the_training_profile_is_stored_at_start_up_and_predict_writes_only_predictions(client, service):
    stored = service.DB.execute_sql("SELECT model_version FROM model_profile").fetchall()
    assert (service.MODEL_VERSION,) in stored  # written when app.py was imported
    service.DB.execute_sql("DELETE FROM model_profile")
    service.DB.execute_sql("DELETE FROM feature_position")
    try:
        assert client.post("/predict", json={"id": 1, "observation": EXAMPLE_OBSERVATION}).status_code == 200
        assert service.DB.execute_sql("SELECT COUNT(*) FROM model_profile").fetchone() == (0,)
        assert service.DB.execute_sql("SELECT COUNT(*) FROM feature_position").fetchone() == (0,)
    finally:
        service.PROFILES.store(service.DB)
        service.DB.close()


def test_a_pool_counts_the_connections_its_driver_opens_and_closes(tmp_path):
    """Through peewee's _connect and _close (database.CountedConnections): a peewee that stops
    calling them fails here."""
    url, options = database.pool_settings(f"sqlite:///{tmp_path}/count.db", 4, 5)
    pool = connect(url, **options)
    held, release = threading.Barrier(4), threading.Event()

    def hold_one():
        pool.connect()
        held.wait()
        release.wait()
        pool.close()

    threads = [threading.Thread(target=hold_one) for _ in range(3)]
    for thread in threads:
        thread.start()
    held.wait()
    assert database.connections_open(pool) == 3  # in use
    release.set()
    for thread in threads:
        thread.join()
    assert database.connections_open(pool) == 3  # idle in the pool
    pool.connect()
    pool.manual_close()  # one closed for good
    assert database.connections_open(pool) == 2
    pool.close_all()
    assert database.connections_open(pool) == 0


def test_each_database_object_gets_its_own_reaper(tmp_path):
    def reapers():
        return sum(1 for thread in threading.enumerate() if thread.name == "connection-reaper")

    before = reapers()
    for name in ("one", "two"):
        url, options = database.pool_settings(f"sqlite:///{tmp_path}/{name}.db", 1, 5)
        pool = connect(url, **options)
        for _ in range(2):  # the second give_back starts none
            pool.connect()
            database.give_back(pool)
    assert reapers() == before + 2
