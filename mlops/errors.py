"""The project's exception hierarchy.

    MlopsError
    ├── ConfigError            a settings file or variable is invalid; names the key and its source
    ├── ServiceError           a local service (Kafka, MLflow) could not be started, checked or stopped
    │   ├── PortInUseError     the port a service needs is held by another process
    │   └── FatalKafkaError    Kafka reported an error no retry cures (fenced, unauthorised): the process stops
    ├── ValidationError        an event failed schema validation (carries the reason)
    ├── TrainingError          a training job failed or had too little data; nothing was registered
    ├── RegistryError          a registry operation (load, promote, roll back) failed
    │   ├── VersionNotFoundError       no such registered version (mlops.registry.catalog)
    │   ├── RegistryUnavailableError   the MLflow server did not answer (mlops.mlflow)
    │   └── NoPreviousChampionError    a rollback with nothing to roll back to (mlops.registry.promotion)
    ├── LakeError              the lake is inconsistent or cannot be written (mlops.data.lake)
    ├── DatabaseError          the project's state database could not be reached, read or written
                               (defined in mlops.store.base)
    └── PolicyError            the loop refused an action (cooldown, cap, evaluation gate)
        └── PromotionRejectedError     the evaluation gate rejected a challenger (mlops.registry.promotion)

Vendor errors are wrapped with ``raise ... from err`` so their codes stay reachable.
"""

__all__ = ["ConfigError", "FatalKafkaError", "MlopsError", "PolicyError", "PortInUseError", "RegistryError",
           "ServiceError", "TrainingError", "ValidationError"]


class MlopsError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(MlopsError):
    """Invalid configuration: the message names the key and the file or variable it came from."""


class ServiceError(MlopsError):
    """A local service could not be started, checked or stopped."""


class PortInUseError(ServiceError):
    """The port a service needs is already held by a process we did not start."""


class FatalKafkaError(ServiceError):
    """Kafka reported an error that retrying cannot cure; the consumer stops and the command exits non-zero.

    The message names the consumer, the topic, partition and offset, the error and what to do;
    ``code`` and ``name`` are the Kafka error's (``KafkaError.code()``, ``.name()``).
    """

    def __init__(self, message: str, code: int, name: str) -> None:
        super().__init__(message)
        self.code = code
        self.name = name


class ValidationError(MlopsError):
    """An event failed validation; ``reason`` says which field and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TrainingError(MlopsError):
    """A training job failed; nothing was registered and the champion is untouched."""


class RegistryError(MlopsError):
    """A model registry operation failed."""


class PolicyError(MlopsError):
    """The loop's policy or evaluation gate refused an action."""
