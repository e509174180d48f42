"""``ray.air.integrations``: MLflow, Weights & Biases and Comet, under Ray's module paths.

Each module needs its library (the extras ``tuned[mlflow]``, ``tuned[wandb]``,
``tuned[comet]``) only when it is used; importing this package costs nothing.
"""
