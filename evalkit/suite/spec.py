"""Typed suite specs: models, samplers, metrics, cells and the suite itself (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from evalkit.suite import grid, identity
from evalkit.suite.guidance import GuidanceSpec, as_spec
from evalkit.suite.tasks import TaskPoint, task_points

THROUGHPUT = "throughput"  # the cost rows (images/s, NFE, ...): a metric name that reads no extractor


@dataclass(frozen=True)
class ModelSpec:
    name: str
    adapter: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    # This sampler's own step counts (suite: ``{name: heun, steps: [4, 8]}``), replacing the suite's ``steps``
    # for it. Not part of a cell's hash (the cell's own ``steps`` is), nor of the config when None.
    steps: list[int] | None = None


@dataclass(frozen=True)
class MetricSpec:
    name: str
    extractor: str | None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TimingSpec:
    """How cost is measured (suite field ``timing``): ``repeats`` timed batches of a fixed size (≥ 3: median and
    spread), ``warmup`` untimed batches first, ``threads`` for torch on the CPU (None: torch's default).
    Changes timings only, never a quality number, so it is not part of any identity hash."""

    repeats: int = 3
    warmup: int = 1
    threads: int | None = None


@dataclass(frozen=True)
class Cell:
    """One point of the grid: a model × sampler × steps × guidance, with its samples and seed."""

    model: ModelSpec
    sampler: SamplerSpec
    steps: int
    guidance: float
    n: int
    seed: int
    guidance_method: GuidanceSpec = field(default_factory=GuidanceSpec)
    task: TaskPoint | None = None  # an image-conditioned task with its axis values (:mod:`evalkit.suite.tasks`)

    @property
    def cell_id(self) -> str:
        base = f"{self.model.name}__{self.sampler.label}__s{self.steps}__g{self.guidance:g}"
        base = base if self.guidance_method.is_default else f"{base}__{self.guidance_method.label}"
        return base if self.task is None else f"{base}__{self.task.label}"

    @property
    def sampler_label(self) -> str:
        """The sampler as tables show it: its label, ``+method`` under a guidance method other than cfg (a sampler
        comparison is of scheduler and guidance together; tables, plots and rankings key on this)."""
        return (
            self.sampler.label
            if self.guidance_method.is_default
            else f"{self.sampler.label}+{self.guidance_method.label}"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "cell_id": self.cell_id,
            "model": self.model.name,
            "sampler": self.sampler_label,
            "steps": self.steps,
            "guidance": self.guidance,
            **({} if self.guidance_method.is_default else {"guidance_method": self.guidance_method.label}),
            **({} if self.task is None else self.task.describe()),
        }


@dataclass
class Suite:
    name: str
    models: list[ModelSpec]
    samplers: list[SamplerSpec]
    steps: list[int]
    guidance: list[float]
    samples: int
    metrics: list[MetricSpec]
    reference: dict[str, Any] | None = None
    conditions: dict[str, Any] | None = None
    batch_size: int = 64
    seed: int = 0
    description: str = ""
    grid_samples: int = 32
    timing: TimingSpec = field(default_factory=TimingSpec)
    # The grid beyond the full cross product (:mod:`evalkit.suite.grid`): lists paired instead of crossed,
    # and filters keeping (``only``) or dropping (``exclude``) cells. Empty: every combination.
    zip: list[str] = field(default_factory=list)
    only: list[dict[str, Any]] = field(default_factory=list)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    # How conditional and unconditional predictions combine (:mod:`evalkit.suite.guidance`), crossed like guidance.
    guidance_method: list[GuidanceSpec] = field(default_factory=lambda: [GuidanceSpec()])
    # Custom feature-network weights (``extractor: {name, weights}``, :mod:`evalkit.suite.extractor_spec`):
    # extractor name → {"path": file, "sha256": its digest}. Empty: every extractor loads its standard weights.
    extractor_weights: dict[str, dict[str, str]] = field(default_factory=dict)
    # Image-conditioned tasks (:mod:`evalkit.suite.tasks`), crossed innermost, each with its own axis: ``strength``
    # (img2img, inpaint, upscale) and ``controlnet_scale``. Empty: text/class-to-image.
    task: list[str] = field(default_factory=list)
    strength: list[float] = field(default_factory=list)
    controlnet_scale: list[float] = field(default_factory=list)
    file: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.timing, dict):  # a suite rebuilt from a recorded config (run.json, a baseline)
            self.timing = TimingSpec(**self.timing)
        self.guidance_method = [as_spec(g) for g in self.guidance_method]

    def cells(self) -> list[Cell]:
        """The grid's cells, model-major (then sampler, steps, guidance, method, task), after zip/only/exclude."""
        return [Cell(m, s, st, g, self.samples, self.seed, gm, tp) for m, s, st, g, gm, tp in grid.points(self)]

    def task_points(self) -> list[TaskPoint | None]:
        """The task axis: each task with its strengths / ControlNet scales ([None] without tasks)."""
        return task_points(self.task, self.strength, self.controlnet_scale)

    def to_config(self) -> dict[str, Any]:
        # Fields added since configs were first hashed are left out at their defaults, so that the config
        # (and so config, cell and protocol hashes) of a suite that does not use them stays as it was.
        cfg = asdict(self)
        cfg.pop("file")
        if self.timing == TimingSpec():
            cfg.pop("timing")
        for key in ("zip", "only", "exclude"):
            if not cfg[key]:
                cfg.pop(key)
        if self.guidance_method == [GuidanceSpec()]:
            cfg.pop("guidance_method")
        if not self.extractor_weights:
            cfg.pop("extractor_weights")
        for key in ("task", "strength", "controlnet_scale"):
            if not cfg[key]:
                cfg.pop(key)
        for sampler in cfg["samplers"]:
            if sampler.get("steps") is None:
                sampler.pop("steps", None)
        return cfg

    def extractor_options(self, name: str) -> dict[str, Any]:
        """What building extractor ``name`` takes besides the device: ``{"weights": path}`` for custom weights, and
        ``{"heads": (...)}``: the optional outputs the suite's metrics read from it (e.g. ``aesthetic`` on
        ``clip-vit-l14``, :attr:`evalkit.metrics.base.MetricDef.extractor_outputs`), computed in the same forward."""
        spec = self.extractor_weights.get(name)
        out: dict[str, Any] = {"weights": spec["path"]} if spec else {}
        heads = sorted({h for m in self.metrics if m.extractor == name for h in _heads(m.name)})
        if heads:
            out["heads"] = tuple(heads)
        return out

    def config_hash(self) -> str:
        """Hash of everything that changes the numbers (not the description, batch size or file)."""
        return identity.config_hash(self.to_config())

    def cell_hash(self, cell: Cell) -> str:
        """What a finished cell's numbers depend on; a stored cell is reused only if this matches."""
        return identity.cell_hash(self, cell)


def _heads(metric: str) -> tuple[str, ...]:
    """The optional extractor outputs metric ``metric`` reads (looked up by name: the metrics layer sits above)."""
    from evalkit.errors import EvalkitError
    from evalkit.registry import METRICS

    try:
        return tuple(getattr(METRICS.get(metric), "extractor_outputs", ()) or ())
    except EvalkitError:  # an unknown name is the validator's error to give, with the field
        return ()
