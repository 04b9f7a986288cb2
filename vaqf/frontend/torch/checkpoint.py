"""Reading PyTorch checkpoints (state dicts) into the frontend's models, with errors that name what does not fit.

A checkpoint file is what ``torch.save(model.state_dict(), path)`` writes, or a dict holding one under
``"model"``, ``"state_dict"``, ``"model_state_dict"`` or ``"model_ema"`` (timm's and common training scripts'
files); a ``"module."`` prefix (DataParallel) is dropped. Files are read with ``weights_only=True``: no code in
a checkpoint runs. Parameters load by name (timm's names for the DeiT family, see ``deit.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from vaqf.errors import VaqfError

WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "model_ema")
#: options of `vaqf export` that decide the shape of a parameter, by parameter name
SHAPE_HINTS = {"head.": "--num-classes", "fc.": "--num-classes", "classifier.": "--num-classes",
               "pos_embed": "--img-size/--patch", "patch_embed.proj.weight": "--patch/--in-chans",
               "conv1.weight": "--in-chans"}
SHOWN = 6


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file (unwrapped, ``module.`` prefixes dropped)."""
    p = Path(path)
    if not p.is_file():
        raise VaqfError(f"checkpoint {p} does not exist")
    with open(p, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (or, before PyTorch 1.6, a pickle): anything else is not a checkpoint, and
    # PyTorch's own message for it would advise weights_only=False, which runs code and would not help
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise VaqfError(f"checkpoint {p} is not a PyTorch checkpoint (neither the zip archive nor the pickle that "
                        "torch.save writes); save one with torch.save(model.state_dict(), path)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, non-tensor objects refused by weights_only, truncated files
        text = str(e).strip()
        if "weights_only" in text or "Weights only" in text:
            raise VaqfError(f"checkpoint {p} holds objects other than tensors, and vaqf reads checkpoints with "
                            "weights_only=True so that no code in them runs; save the state dict alone with "
                            "torch.save(model.state_dict(), path)") from None
        first = text.splitlines()[0] if text else type(e).__name__
        raise VaqfError(f"checkpoint {p} is not a readable PyTorch state dict: {first[:200]}") from None
    for key in WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise VaqfError(f"checkpoint {p} holds no state dict (a mapping of parameter names to tensors; save one "
                        "with torch.save(model.state_dict(), path))")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise VaqfError(f"checkpoint {p}: {len(bad)} entries are not tensors ({_names(map(str, bad))}); expected "
                        "a state dict")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _names(keys, limit: int = SHOWN) -> str:  # noqa: ANN001
    keys = list(keys)
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _hint(key: str) -> str:
    for prefix, option in SHAPE_HINTS.items():
        if key.startswith(prefix) or key.endswith("." + prefix.rstrip(".")):
            return f" (see {option})"
    return ""


def load_checkpoint(model: nn.Module, state: Mapping[str, torch.Tensor] | str | Path, what: str = "the model",
                    optional: Callable[[str], bool] = lambda key: False) -> list[str]:
    """Load ``state`` (a state dict or a checkpoint file) into ``model`` by name, all or nothing.

    Every key of the model must be in the checkpoint except those ``optional`` accepts; every key of the
    checkpoint must be in the model with the same shape. Otherwise a VaqfError names the unknown keys, the
    missing ones and the shape mismatches (with the option that sets the shape, where there is one).
    Returns the model keys the checkpoint did not provide (the optional ones left as they were).
    """
    source = f"checkpoint {state}" if isinstance(state, (str, Path)) else "the checkpoint"
    sd = read_state_dict(state) if isinstance(state, (str, Path)) else dict(state)
    own = model.state_dict()
    unknown = [k for k in sd if k not in own]
    missing = [k for k in own if k not in sd and not optional(k)]
    shapes = [f"{k} {list(sd[k].shape)} in the file, {list(own[k].shape)} in the model{_hint(k)}"
              for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch{'es' if len(shapes) > 1 else ''}: {'; '.join(shapes[:SHOWN])}"
                        + (f"; ... ({len(shapes) - SHOWN} more)" if len(shapes) > SHOWN else ""))
    if unknown:
        problems.append(f"{len(unknown)} unknown key{'s' if len(unknown) > 1 else ''}: {_names(unknown)}")
    if missing:
        problems.append(f"{len(missing)} missing key{'s' if len(missing) > 1 else ''}: {_names(missing)}")
    if problems:
        raise VaqfError(f"{source} does not fit {what}: " + "; ".join(problems))
    with torch.no_grad():
        model.load_state_dict(sd, strict=False)
    return [k for k in own if k not in sd]
