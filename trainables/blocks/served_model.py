"""The file MLflow runs to build a registered model when it is loaded (MLflow's "models from code": no pickled
object travels with the model). Used only as `python_model` by platform/registry.py; see serving.py."""

import mlflow.models

from trainables.blocks.serving import SpeechToText

mlflow.models.set_model(SpeechToText())
