"""The benchmark's baseline: what the tutorial's app.py does per request, on current libraries.

One DataFrame cast with .astype(dtypes), one predict_proba and one commit per request, under
gunicorn's default sync workers, as the tutorial deploys it. Kept for comparison only: it is
not shipped (.dockerignore) and has none of the service's validation.
"""

import json
import os
import pickle

import joblib
import pandas as pd
from flask import Flask, jsonify, request
from peewee import FloatField, IntegerField, IntegrityError, Model, TextField
from playhouse.db_url import connect

DB = connect(os.environ.get("DATABASE_URL") or "sqlite:///predictions.db")


class Prediction(Model):
    observation_id = IntegerField(unique=True)
    observation = TextField()
    proba = FloatField()
    true_class = IntegerField(null=True)

    class Meta:
        database = DB
        table_name = "prediction"


DB.create_tables([Prediction], safe=True)
DB.close()

with open("columns.json") as fh:
    columns = json.load(fh)
with open("dtypes.pickle", "rb") as fh:
    dtypes = pickle.load(fh)
pipeline = joblib.load("pipeline.pickle")

app = Flask(__name__)


@app.route("/predict", methods=["POST"])
def predict():
    obs_dict = request.get_json()
    _id = obs_dict["id"]
    observation = obs_dict["observation"]
    obs = pd.DataFrame([observation], columns=columns).astype(dtypes)
    proba = pipeline.predict_proba(obs)[0, 1]
    response = {"proba": proba}
    p = Prediction(observation_id=_id, proba=proba, observation=request.data)
    try:
        p.save()
    except IntegrityError:
        response["error"] = f"ERROR: Observation ID: '{_id}' already exists"
        DB.rollback()
    return jsonify(response)


@app.route("/health")
def health():
    return jsonify({"status": "ok"})
