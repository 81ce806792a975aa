"""Refusing a config whose model cannot be built, before anything is built.

A `config.json` with `vocab_size: 10**12` or `n_layer: 100000` would otherwise end in a misleading
Keras error or build for minutes. Each family gives its backbone's parameter count from the config
(`ModelFamily.parameter_terms`); here that count is checked against the memory available and against
the weight files on disk, and a refusal names the config fields behind the largest part.
"""

import logging
import os

import keras

from tfllm.checkpoints import CheckpointError

logger = logging.getLogger(__name__)

MEMORY_LIMIT_VARIABLE = "TFLLM_MAX_MODEL_BYTES"
_BYTES_PER_PARAMETER = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def _meminfo_available():
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_limit():
    """The bytes a model's weights may take, and where that number comes from.

    `TFLLM_MAX_MODEL_BYTES` if set; else the memory available (`MemAvailable` of /proc/meminfo,
    else the free physical pages); `(None, reason)` where none of them can be read.
    """
    override = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if override:
        try:
            return int(float(override)), f"{MEMORY_LIMIT_VARIABLE}={override}"
        except ValueError as error:
            raise ValueError(
                f"Invalid value for environment variable `{MEMORY_LIMIT_VARIABLE}`. Expected a number of bytes. "
                f"Received: {MEMORY_LIMIT_VARIABLE}={override!r}"
            ) from error
    available = _meminfo_available()
    if available is not None:
        return available, "memory available"
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free memory"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def _size(count):
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def check_model_size(folder, family, backbone_kwargs, weight_files):
    """Raises before building if the config's weights cannot fit in memory or in `weight_files`.

    Args:
        folder: the checkpoint folder (named in messages).
        family: its `ModelFamily`.
        backbone_kwargs: the backbone kwargs from `family.config_from_hf`.
        weight_files: the weight files `find_weight_files` found.

    Raises:
        CheckpointError: a size in config.json is not a positive integer; the weights it implies
            exceed the memory limit (see `memory_limit`); or they have more parameters than the
            weight files have bytes (every stored float takes at least 2).
    """
    config_path = os.path.join(os.fspath(folder), "config.json")
    try:
        terms = family.parameter_terms(backbone_kwargs)
    except ValueError as error:
        raise CheckpointError(f"{config_path}: {error}") from error
    parameters = sum(terms.values())
    largest = max(terms, key=terms.get)
    dtype = keras.config.dtype_policy().variable_dtype
    weight_bytes = parameters * _BYTES_PER_PARAMETER.get(dtype, 4)
    implied = (
        f"{config_path} implies {parameters:,} parameters ({_size(weight_bytes)} as {dtype}), the most in "
        f"{largest}: {terms[largest]:,}"
    )
    limit, source = memory_limit()
    if limit is not None and weight_bytes > limit:
        raise CheckpointError(
            f"{implied}; more than the {_size(limit)} of {source}. Refused before building the model "
            f"(set {MEMORY_LIMIT_VARIABLE} to a number of bytes to allow more)."
        )
    stored = sum(os.path.getsize(path) for path in weight_files)
    if parameters > stored:
        raise CheckpointError(
            f"{implied}; but its weight files hold only {stored:,} bytes, less than one per parameter. "
            "Refused before building the model."
        )
    logger.debug("%s: %d parameters, %d bytes as %s; limit %s (%s).", folder, parameters, weight_bytes, dtype,
                 limit, source)
