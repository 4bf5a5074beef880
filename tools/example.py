"""The Titanic example: where its model's files are kept for the tests, and the README's passenger.

The tests that check the example's own figures (the README's answers, the notebooks, the metrics
on replayed passengers) use the copy in tools/example_model/, so they keep passing after a user
replaces the files at the top of the repository with their own model.
"""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO / "tools" / "example_model"
EXAMPLE_OBSERVATION = {
    "Age": 22.0,
    "Cabin": None,
    "Embarked": "S",
    "Fare": 7.25,
    "Parch": 0,
    "Pclass": 3,
    "Sex": "male",
    "SibSp": 1,
}


def serves_the_example():
    """Whether the model at the top of the repository is still the example (the same pickle),
    whatever else a user left beside it or removed."""
    return (REPO / "pipeline.pickle").read_bytes() == (EXAMPLE_DIR / "pipeline.pickle").read_bytes()
