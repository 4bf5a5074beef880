"""Generated requests: whatever arrives, no 5xx, and only a 200 can add a row."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.servers import EXAMPLE_OBSERVATION

FEATURES = list(EXAMPLE_OBSERVATION)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Mostly plausible observations, with any feature possibly replaced by any JSON value.
observations = st.fixed_dictionaries(
    {},
    optional={name: st.sampled_from([value]) | json_values for name, value in EXAMPLE_OBSERVATION.items()}
    | {"extra": json_values},
)
ids = st.integers(min_value=-5, max_value=5) | st.integers(min_value=-(2**64), max_value=2**64) | json_values
predict_bodies = (
    st.fixed_dictionaries({"id": ids, "observation": observations | json_values}) | json_values
).map(json.dumps)
update_bodies = (
    st.fixed_dictionaries({"id": ids, "true_class": st.sampled_from([0, 1, True, False]) | json_values})
    | json_values
).map(json.dumps)
raw_bodies = st.binary(max_size=64)

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def row_count(service):
    count = service.Prediction.select().count()
    service.DB.close()
    return count


@SETTINGS
@given(body=predict_bodies | raw_bodies)
def test_predict_never_fails_with_a_5xx_and_only_a_200_stores(client, service, body):
    before = row_count(service)
    response = client.post("/predict", data=body, content_type="application/json")
    after = row_count(service)

    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.is_json
    if response.status_code == 200:
        assert isinstance(response.get_json()["proba"], float)
        assert after - before in (0, 1)  # 0 for a retry of an id already stored
    else:
        assert response.get_json()["error"]
        assert after == before


@SETTINGS
@given(seed_ids=st.lists(st.integers(min_value=-5, max_value=5), max_size=3), body=update_bodies | raw_bodies)
def test_update_never_fails_with_a_5xx_and_never_adds_rows(client, service, seed_ids, body):
    for observation_id in seed_ids:
        client.post("/predict", json={"id": observation_id, "observation": EXAMPLE_OBSERVATION})
    before = row_count(service)
    response = client.post("/update", data=body, content_type="application/json")

    assert response.status_code in (200, 400, 404), response.get_data(as_text=True)
    assert response.is_json
    assert row_count(service) == before
