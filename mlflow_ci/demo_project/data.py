"""The evaluation set mlflow-ci scores champion and candidate on (``evaluate.data: data:holdout``).

The same held-out 30 % that train.py never trains on; fixed, so every PR is judged on the same rows.
"""

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split


def holdout():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    _, X_test, _, y_test = train_test_split(X, y, test_size=0.3, random_state=7, stratify=y)
    return X_test, y_test
