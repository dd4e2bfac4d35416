"""The PaSeR study's Tune trainable: one ``lam`` x seed router, or one baseline x seed, on shared models.

Paper 003 (PaSeR). The three segmentation models are pre-trained once per study
(:func:`medtune.trainables.paser_models.pretrain_models`) and reach every trial through
the object store with the router tables (f0's MC-dropout maps and every model's
per-patch overlap, which do not depend on ``lam``), so no trial trains them again.

* ``method: paser`` (with ``lam``): REINFORCE the router and fine-tune jointly
  (:func:`~medtune.trainables.paser_models.train_router`), then score ``paser`` and, at
  the router's share of patches per model, ``random`` on the same test images.
  The result carries ``random_*`` keys; the study logs them as the ``random`` run
  of that ``lam`` and seed. It also carries ``routing_json``: the routing of the
  first test images, for the report's pictures.
* ``method: small | medium | large | cascade``: score the baseline.

Every result has ``iou``, ``gflops`` (executed, per image), ``iou_per_gflop``,
``share_f0..2``, ``iou_unseen`` and ``iou_drop_pct``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import torch

from medtune.config import from_dict
from medtune.searchers.paser import PaSeRConfig, routed_inference
from medtune.trainables.paser_models import PaSeRModelsConfig, evaluate, load_models, train_router

__all__ = ["ROUTING_EXAMPLES", "routing_examples", "train_paser"]

ROUTING_EXAMPLES = 6


def routing_examples(models: list, router: Any, images: np.ndarray, masks: np.ndarray, config: PaSeRConfig,
                     n: int = ROUTING_EXAMPLES) -> dict[str, Any]:
    """The router's choices on the first ``n`` test images: images, masks, predictions (uint8) and actions.

    Returns:
        ``{"shape": [n, H, W], "grid": g, "images", "masks", "preds": base64 uint8, "actions": [[...], ...]}``.
    """
    x = torch.as_tensor(images[:n])
    seg = routed_inference(models, router, x, config.grid, config.T, config.margin)
    enc = lambda a: base64.b64encode(np.ascontiguousarray(a, np.uint8).tobytes()).decode()  # noqa: E731
    return {"shape": list(x.shape[:1]) + list(x.shape[2:]), "grid": config.grid,
            "images": enc(np.round(x[:, 0].clamp(0, 1).numpy() * 255)), "masks": enc(masks[:n] != 0),
            "preds": enc(seg.pred.numpy() != 0), "actions": seg.actions.tolist()}


def train_paser(config: dict[str, Any], data: Any = None, states: dict | None = None, tables: Any = None) -> None:
    """Ray Tune function trainable of the PaSeR study.

    Args:
        config: ``method``, ``lam`` (paser only), ``seed``, ``router`` (a :class:`PaSeRConfig` as a dict),
            ``models`` (a :class:`PaSeRModelsConfig` as a dict), ``threads``.
        data: the study's :class:`~medtune.trainables.paser_data.PaSeRData` (object store).
        states: the pre-trained ``f0``/``f1``/``f2`` state dicts.
        tables: ``(train, val)`` router tables of those models.
    """
    from ray import tune


    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    method, seed = config["method"], int(config["seed"])
    router_cfg = from_dict(PaSeRConfig, {**(config.get("router") or {}),
                                         **({"lam": config["lam"]} if method == "paser" else {})}, "router")
    models_cfg = from_dict(PaSeRModelsConfig, config.get("models"), "models")
    if states is None:
        raise ValueError("train_paser needs states: tune.with_parameters(train_paser, data=..., states=..., "
                         "tables=...)")
    models = load_models(states, models_cfg, data.image_size, router_cfg)
    if method != "paser":
        tune.report({"epoch": 1, **evaluate(method, models, data, router_cfg, seed=seed)})
        return
    result = train_router(models, data, router_cfg, seed, tables)
    paser = evaluate("paser", result.models, data, router_cfg, router=result.router, seed=seed)
    random = evaluate("random", result.models, data, router_cfg, shares=result.val_shares, seed=seed)
    final = result.curve[-1] if result.curve else {}
    tune.report({
        "epoch": 1, **paser,
        **{f"random_{k}": v for k, v in random.items()},
        **{f"router_{k}": float(v) for k, v in final.items() if k.startswith("val_") and isinstance(v, (int, float))},
        "routing_json": json.dumps(routing_examples(result.models, result.router, data.test_images,
                                                    data.test_masks, router_cfg)),
    })
