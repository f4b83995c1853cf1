"""Image-conditioned tasks: what each needs from ``conditions`` and which grid axis it adds.

A suite's ``task`` list (absent: text/class-to-image, as before) crosses with its grid like ``guidance_method``;
each task brings its own axis where it has one: ``strength`` (img2img, inpaint, upscale: the fraction of the
schedule run from the noised input, SDEdit) and ``controlnet_scale`` (controlnet). A task without an axis value in
the suite takes its default (diffusers' own defaults); ``upscale`` has none (the SD ×4 upscaler takes no strength; the
built-in ×2 one is SDEdit and asks for ``strength``). Sample ``i`` of a cell uses source image ``i mod n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskDef:
    name: str
    needs: tuple[str, ...]  # the ``conditions`` entries it reads: images, masks, control
    strength: float | None = None  # default strength when the suite gives none; None with ``takes_strength``: unset
    takes_strength: bool = False
    takes_controlnet_scale: bool = False
    description: str = ""


TASKS: dict[str, TaskDef] = {
    t.name: t
    for t in (
        TaskDef("img2img", ("images",), 0.8, True, description="SDEdit: noise the source to `strength`, denoise"),
        TaskDef("inpaint", ("images", "masks"), 1.0, True, description="regenerate the masked region (1 = generate)"),
        TaskDef("upscale", ("images", "control"), None, True, description="super-resolve the low-resolution control"),
        TaskDef("controlnet", ("images", "control"), takes_controlnet_scale=True, description="follow a control map"),
        TaskDef("edit", ("images",), description="instruction editing: the prompt says what to change"),
    )
}
DEFAULT_CONTROLNET_SCALE = 1.0


@dataclass(frozen=True)
class TaskPoint:
    """A cell's task and its axis values (None where the task has no such axis or leaves it to the method)."""

    task: str
    strength: float | None = None
    controlnet_scale: float | None = None

    @property
    def label(self) -> str:
        """The cell-id part: ``img2img_st0.5``, ``controlnet_cn1``, ``edit``."""
        parts = [self.task]
        if self.strength is not None:
            parts.append(f"st{self.strength:g}")
        if self.controlnet_scale is not None:
            parts.append(f"cn{self.controlnet_scale:g}")
        return "_".join(parts)

    def describe(self) -> dict[str, Any]:
        """The row/record columns: task, and its axis values where set."""
        out: dict[str, Any] = {"task": self.task}
        if self.strength is not None:
            out["strength"] = self.strength
        if self.controlnet_scale is not None:
            out["controlnet_scale"] = self.controlnet_scale
        return out

    def request_fields(self) -> dict[str, Any]:
        return {"task": self.task, "strength": self.strength, "controlnet_scale": self.controlnet_scale}


def task_points(tasks: list[str], strength: list[float], controlnet_scale: list[float]) -> list[TaskPoint | None]:
    """The task axis of a grid: each task crossed with its own axis values ([None]: a suite without tasks)."""
    if not tasks:
        return [None]
    out: list[TaskPoint | None] = []
    for name in tasks:
        t = TASKS[name]
        strengths: list[float | None] = list(strength) if t.takes_strength and strength else [t.strength]
        scales: list[float | None] = (
            (list(controlnet_scale) or [DEFAULT_CONTROLNET_SCALE]) if t.takes_controlnet_scale else [None]
        )
        out += [TaskPoint(name, s, c) for s in strengths for c in scales]
    return out


def reads_crops(options: dict[str, Any] | None, reads_source: bool) -> bool:
    """Does a metric spec read masked crops? ``region: masked`` on a metric that does not compare each sample with
    its source (FD, KID, CLIP score, ...): its extractor runs on the outputs cropped to their masks, under the name
    :func:`row_extractor` gives (``<extractor>@masked``), and its reference is the sources' same crops."""
    return (options or {}).get("region") == "masked" and not reads_source


def row_extractor(extractor: str | None, options: dict[str, Any] | None) -> str:
    """The extractor a metric spec's result rows carry: ``<extractor>@<region>`` for a spec scoring a mask's region
    (``region`` option: masked, unmasked, whole), else the extractor itself. Readers key specs by it, so two specs of
    one metric on one extractor (the whole image and the masked region) stay two columns."""
    region = (options or {}).get("region")
    return f"{extractor or ''}@{region}" if region else str(extractor or "")


def region_keys(row_ex: str, options: dict[str, Any] | None, reads_source: bool) -> tuple[str, str, bool]:
    """For a result row's extractor (:func:`row_extractor`): (the network's name, the key of the features the metric
    reads: the masked crops' for a spec that :func:`reads_crops`, else the network's, whether it reads crops)."""
    crop = reads_crops(options, reads_source)
    base = row_ex.rsplit("@", 1)[0] if (options or {}).get("region") else row_ex
    return base, row_ex if crop else base, crop
