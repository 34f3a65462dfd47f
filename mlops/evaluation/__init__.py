"""How a model is judged, the same way in training and at the evaluation gate.

- :mod:`~mlops.evaluation.names`: the metric names the configuration may use (no scikit-learn import);
- :mod:`~mlops.evaluation.metrics`: the metrics themselves, deciding at the model's own threshold;
- :mod:`~mlops.evaluation.data`: labelled evaluation data from the lake, newer than a model's training data;
- :mod:`~mlops.evaluation.gate`: does a challenger beat the champion on that data.

Training (:mod:`mlops.train`) and the registry (:mod:`mlops.registry.promotion`) both use it, so
neither imports the other. Importing this package imports nothing heavy: the configuration reads
:mod:`~mlops.evaluation.names` when it loads.
"""
