"""Zero-shot task accuracy of an in-memory (quantized) model through lm-eval.

lm-eval is optional (``pip install 'awq_ext[eval]'``). The model is handed over as the live module, so
what is scored is exactly what was quantized (pseudo-quantized, packed WQLinear or W8A8), with no save
and reload. lm-eval's standard tasks fetch their datasets from the Hugging Face hub; when it cannot be
reached the error says so and how to point lm-eval at a local copy, instead of a network traceback.
"""
from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path
from collections.abc import Sequence

import torch.nn as nn

from awq_ext.errors import AWQInputError, OfflineError

INSTALL_HINT = "pip install 'awq_ext[eval]'  (lm-eval >= 0.4 and datasets)"


def _lm_eval():
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager, get_task_dict
    except ImportError as e:  # absent, too old, or a broken dependency: the message says which
        raise AWQInputError(f"zero-shot evaluation needs a working lm-eval ({e}): {INSTALL_HINT}") from e
    return lm_eval, HFLM, TaskManager, get_task_dict


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: str | None):
    """lm-eval's task index (it scans thousands of YAMLs: built once per process and path)."""
    return _lm_eval()[2](include_path=include_path)


def _unreachable(tasks: Sequence[str], e: BaseException) -> OfflineError:
    return OfflineError(
        f"lm-eval could not load the data of task(s) {', '.join(tasks)} ({type(e).__name__}: {e}). "
        "Their datasets come from the Hugging Face hub: run where it is reachable, or put the datasets "
        "in a local cache (HF_DATASETS_CACHE) and set HF_DATASETS_OFFLINE=1, or define the task on local "
        "files in a task YAML and pass its directory (--tasks-path / include_path)")


def metric_table(results: dict) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` from lm-eval's ``results`` (filter suffix ``,none`` dropped, numbers only)."""
    out: dict[str, dict[str, float]] = {}
    for task, metrics in results.items():
        row = {}
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[k[: -len(",none")] if k.endswith(",none") else k] = float(v)
        out[task] = row
    return out


def check_tasks(tasks: str | Sequence[str], include_path: str | os.PathLike | None = None):
    """Refuse, before any long work, task lists lm-eval cannot run: lm-eval missing, a name unknown.

    ``tasks``: names, or one comma-separated string. Returns the task names and lm-eval's task manager.
    """
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    tasks = [t.strip() for t in tasks if t and t.strip()]
    if not tasks:
        raise AWQInputError("no zero-shot task given; name lm-eval tasks, e.g. --tasks piqa,arc_easy")
    if include_path is not None and not Path(include_path).is_dir():  # lm-eval would skip it silently
        raise AWQInputError(f"task directory {include_path} does not exist; pass a directory of task YAMLs")
    manager = _task_manager(str(include_path) if include_path else None)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        hints = {t: difflib.get_close_matches(t, known, n=3) for t in unknown}
        raise AWQInputError("unknown lm-eval task(s): " + "; ".join(
            f"{t} (did you mean {', '.join(h)}?)" if h else t for t, h in hints.items())
            + ". `lm_eval ls tasks` lists them"
            + (f" (YAMLs under {include_path} included; one that does not parse is skipped)" if include_path else ""))
    return tasks, manager


def zero_shot(model: nn.Module, tokenizer, tasks: Sequence[str], *, limit: int | None = None,
              batch_size: int = 8, num_fewshot: int = 0, include_path: str | os.PathLike | None = None,
              log_samples: bool = False) -> dict:
    """Run lm-eval ``tasks`` on ``model`` as it is now; returns ``{"metrics": {task: {metric: value}}}``
    (plus ``"samples"`` with ``log_samples``).

    ``limit`` caps the documents per task (for quick checks); ``include_path`` adds a directory of task
    YAMLs (e.g. a task defined on local data). Raises :class:`AWQInputError` for an unknown task and
    :class:`OfflineError` when a task's data cannot be loaded.
    """
    if limit is not None and limit < 1:
        raise AWQInputError(f"limit must be >= 1 (or None for every document), got {limit}")
    tasks, manager = check_tasks(tasks, include_path)
    lm_eval, HFLM, _, get_task_dict = _lm_eval()
    try:  # building a task downloads its dataset: the step that fails offline, before the model is wrapped
        # TaskManager.load (lm-eval >= 0.4.10) replaces get_task_dict, which older releases only have.
        manager.load(tasks) if hasattr(manager, "load") else get_task_dict(tasks, manager)
    except OSError as e:  # connection, timeout, hub offline mode, missing data files
        raise _unreachable(tasks, e) from e
    except Exception as e:  # noqa: BLE001 - lm-eval raises many types for a task it cannot build
        raise AWQInputError(f"lm-eval could not build task(s) {', '.join(tasks)}: {type(e).__name__}: {e}") from e
    device = next(model.parameters()).device
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(device))
    try:  # it builds the tasks again (from the local cache now); the network may still fail here
        res = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit,
                                      task_manager=manager, log_samples=log_samples, bootstrap_iters=0)
    except (ConnectionError, TimeoutError, FileNotFoundError) as e:
        raise _unreachable(tasks, e) from e
    out: dict = {"metrics": metric_table(res["results"]), "limit": limit, "num_fewshot": num_fewshot}
    if log_samples:
        out["samples"] = res["samples"]
    return out
