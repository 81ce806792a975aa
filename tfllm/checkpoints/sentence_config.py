"""How sentence-transformers pools a folder's hidden states: `modules.json`, `1_Pooling/config.json`."""

import os

from tfllm.layers.pooling import POOLING_MODES
from tfllm.model_files import folder_file, read_json

_LEGACY_POOLING_KEYS = {  # sentence-transformers' old Pooling config flags, in its order
    "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# What sentence-transformers does with a folder that has no modules.json.
PLAIN_FOLDER_POOLING = {"pooling": ("mean",), "normalize": False, "max_seq_length": None, "do_lower_case": False}


def sentence_transformers_config(folder):
    """Reads how sentence-transformers turns a folder's hidden states into sentence embeddings.

    Args:
        folder: a model folder; `modules.json` (with `1_Pooling/config.json`) and
            `sentence_bert_config.json` are read when present.

    Returns:
        A dict: `pooling` (a tuple of `POOLING_MODES`, concatenated in that order), `normalize`
        (a Normalize module is listed), `max_seq_length` and `do_lower_case`. Without
        `modules.json`: mean pooling, no normalization, as sentence-transformers does for a plain folder.

    Raises:
        NotImplementedError: a module or pooling mode tfllm does not implement (e.g. Dense, weighted mean).
    """
    config = dict(PLAIN_FOLDER_POOLING)
    if os.path.isfile(os.path.join(folder, "sentence_bert_config.json")):
        settings = read_json(folder_file(folder, "sentence_bert_config.json"))
        config.update({k: v for k, v in settings.items() if k in ("max_seq_length", "do_lower_case")})
    path = os.path.join(folder, "modules.json")
    if not os.path.isfile(path):
        return config
    modules = read_json(folder_file(folder, "modules.json"))
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        if kind == "Pooling":
            config["pooling"] = _pooling_modes(folder_file(folder, os.path.join(module["path"], "config.json")))
        elif kind == "Normalize":
            config["normalize"] = True
        elif kind != "Transformer" or module.get("path", ""):
            raise NotImplementedError(
                f"sentence-transformers module {module.get('type')!r} (path {module.get('path')!r}) in {path} is not "
                "supported. Supported: Transformer (in the folder itself), Pooling, Normalize."
            )
    return config


def _pooling_modes(path):
    """The modes of a sentence-transformers `Pooling` config: `pooling_mode`, or the legacy flags."""
    pooling = read_json(path)
    modes = pooling.get("pooling_mode")
    if modes is None:
        modes = tuple(mode for key, mode in _LEGACY_POOLING_KEYS.items() if pooling.get(key)) or ("mean",)
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    unsupported = [mode for mode in modes if mode not in POOLING_MODES]
    if unsupported:
        raise NotImplementedError(f"Pooling mode(s) {unsupported} in {path} are not supported. Supported: {POOLING_MODES}")
    return modes
