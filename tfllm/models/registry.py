"""The registry of model families, keyed by the `model_type` of a folder's `config.json`.

Families register themselves in `tfllm.models.auto` (one line each); this module imports none of
them, so the loader (`tfllm.models.pretrained`) can look families up without an import cycle.
"""

FAMILIES = {}


def register(family):
    """Adds a `ModelFamily` under its `model_type` and its aliases; returns it."""
    for model_type in (family.model_type, *family.aliases):
        if model_type in FAMILIES and FAMILIES[model_type] is not family:
            raise ValueError(f"model_type {model_type!r} is registered twice")
        FAMILIES[model_type] = family
    return family


def get_family(model_type):
    """Returns the registered `ModelFamily` for `model_type`, or raises listing the supported ones."""
    if model_type not in FAMILIES:
        raise ValueError(
            f"Unsupported model_type {model_type!r} in config.json. tfllm supports: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]


def same_family(model, model_type):
    """Whether `model` belongs to the family registered for `model_type` (an alias counts)."""
    return model_type in FAMILIES and family_of(model) is FAMILIES[model_type]


def family_of(model):
    """Returns the `ModelFamily` a backbone or task model belongs to."""
    return get_family(getattr(model, "model_type", None))
