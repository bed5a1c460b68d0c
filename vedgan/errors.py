"""Errors that mean "the user asked for something wrong": printed as one line by the CLI."""


class VedganError(ValueError):
  """Base class: a bad config, bad data, or an unusable workdir or checkpoint."""


class ConfigError(VedganError):
  """A config value is missing, of the wrong type, out of range, or unknown."""


class DataError(VedganError):
  """A dataset is missing, empty or malformed."""


class CheckpointError(VedganError):
  """A checkpoint or workdir cannot be used with this config."""
