"""Feature code shared by the churn and fraud models (both list it in train.inputs)."""

SCALE = 1.0
