"""The project's exception hierarchy.

    MlopsError
    ├── ConfigError            a settings file or variable is invalid; names the key and its source
    ├── ServiceError           a local service (Kafka, MLflow) could not be started, checked or stopped
    │   └── PortInUseError     the port a service needs is held by another process
    ├── ValidationError        an event failed schema validation (carries the reason)
    ├── TrainingError          a training job failed or had too little data; nothing was registered
    ├── RegistryError          a registry operation (load, promote, roll back) failed
    └── PolicyError            the loop refused an action (cooldown, cap, evaluation gate)

Vendor errors are wrapped with ``raise ... from err`` so their codes stay reachable.
"""


class MlopsError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(MlopsError):
    """Invalid configuration: the message names the key and the file or variable it came from."""


class ServiceError(MlopsError):
    """A local service could not be started, checked or stopped."""


class PortInUseError(ServiceError):
    """The port a service needs is already held by a process we did not start."""


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
