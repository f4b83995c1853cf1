"""One text-to-image suite with the modern metric set, end to end through ``evalkit run`` on a tiny random Stable
Diffusion pipeline: FD, KD, Vendi and PR on DINOv2; CLIP score, the aesthetic score and FD on CLIP ViT-L/14; and the
preference scorers HPSv2, ImageReward and PickScore. The extractors are the real evalkit classes at tiny random sizes
(the suite names them as usual; the registry hands out the tiny builds).

- every network runs once per image: counted with forward hooks on DINOv2's and CLIP's image towers, the generated
  images of every cell plus the reference images (once), never again per metric reading them;
- every per-image scorer reports a value with a bootstrap CI containing it, and the report lists each cell's best
  and worst prompts, whose means equal the stored per-sample scores averaged per prompt.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import smooth_images, write_pngs
from tiny_scorers import open_clip_config, pick_score_folders

from evalkit.cli import main
from evalkit.features.weights import EXTRACTOR_WEIGHTS, HEAD_WEIGHTS
from evalkit.registry import EXTRACTORS
from evalkit.store import read_run

PROMPTS = ["a red bus", "two cats", "a bowl of fruit", "the bridge at night"]
N, CELLS, N_REF = 8, 2, 12
CLIP_768 = {  # the aesthetic head takes ViT-L/14's 768-d embedding
    "embed_dim": 768,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
HPS_TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "patch_size": 32, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
BLIP_TINY = {
    "vision": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
    "text": {"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
}
WORDPIECE = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for p in PROMPTS for w in p.split()})]
WORDPIECE += [f"[unused{i}]" for i in range(64 - len(WORDPIECE))]

SUITE = """\
name: modern-t2i
models: [{{name: tiny, adapter: diffusers, options: {{path: "{pipeline}"}}}}]
samplers: [ddim, euler]
steps: [2]
guidance: [3]
samples: {n}
batch_size: 4
conditions: {{prompts: {prompts}}}
reference: {{path: "{reference}"}}
metrics:
  - {{name: fd, extractor: dinov2-vit-l14}}
  - {{name: kid, extractor: dinov2-vit-l14, options: {{subset_size: 4, subsets: 10}}}}
  - {{name: vendi, extractor: dinov2-vit-l14}}
  - {{name: pr, extractor: dinov2-vit-l14, options: {{k: 2}}}}
  - {{name: clip_score, extractor: clip-vit-l14}}
  - {{name: aesthetic, extractor: clip-vit-l14}}
  - {{name: fd, extractor: clip-vit-l14}}
  - hpsv2
  - image_reward
  - {{name: pick_score, extractor: {{name: pick_score, weights: "{pick}"}}}}
  - throughput
grid_samples: {n}
"""


def _counting(module: torch.nn.Module, counts: dict[str, int], name: str) -> None:
    """Add the batch size of every forward of ``module`` to ``counts[name]`` (over every build of the network)."""
    counts.setdefault(name, 0)

    def hook(mod, args, out):
        counts[name] += int(args[0].shape[0])

    module.register_forward_hook(hook)


@pytest.fixture(scope="module")
def modern_run(tmp_path_factory):
    from generate.tiny_pipelines import sd

    from evalkit.features.clip import ClipExtractor
    from evalkit.features.dinov2 import build_dinov2_vit_l14
    from evalkit.features.hpsv2 import HPSv2Extractor
    from evalkit.features.image_reward import build_image_reward

    root = tmp_path_factory.mktemp("modern")
    clip_name = open_clip_config("evalkit-test-clip-768", CLIP_768, root)
    hps_name = open_clip_config("evalkit-test-hps", HPS_TINY, root)
    (root / "vocab.txt").write_text("\n".join(WORDPIECE) + "\n")
    counts: dict[str, int] = {}

    def dinov2(device="cpu", weights=None):
        ex = build_dinov2_vit_l14(device=device, pretrained=False, seed=1, embed_dim=32, depth=1, num_heads=2)
        _counting(ex.model.patch_embed, counts, "dinov2-vit-l14")  # timm: forward_features
        return ex

    def clip_l14(device="cpu", weights=None, heads=()):
        ex = ClipExtractor(clip_name, None, device=device, seed=2, name="clip-vit-l14", heads=heads)
        _counting(ex.model.visual, counts, "clip-vit-l14")
        return ex

    def hpsv2(device="cpu", weights=None):
        return HPSv2Extractor(model=hps_name, pretrained=None, seed=3, device=device)

    def image_reward(device="cpu", weights=None):
        return build_image_reward(device=device, pretrained=False, seed=4, tokenizer=root / "vocab.txt", arch=BLIP_TINY)

    EXTRACTORS.names()  # the built-ins first, then the tiny builds under their names
    mp = pytest.MonkeyPatch()
    for name, factory in [
        ("dinov2-vit-l14", dinov2),
        ("clip-vit-l14", clip_l14),
        ("hpsv2", hpsv2),
        ("image_reward", image_reward),
    ]:
        mp.setitem(EXTRACTORS._items, name, factory)
        mp.delitem(EXTRACTOR_WEIGHTS, name, raising=False)  # random weights: no file for the preflight to find
    mp.delitem(HEAD_WEIGHTS, ("clip-vit-l14", "aesthetic"))
    mp.setenv("EVALKIT_CACHE_DIR", str(root / "cache"))  # a fresh feature cache: the reference is extracted here
    try:
        suite = root / "modern.yaml"
        text = SUITE.format(
            pipeline=sd(root / "pipeline"),
            reference=write_pngs(smooth_images(N_REF, 16, seed=5), root / "reference"),
            pick=pick_score_folders(root / "pick")["pick"],
            prompts=json.dumps(PROMPTS),
            n=N,
        )
        suite.write_text(text)
        code = main(["run", str(suite), "--out", str(root / "run"), "-q"])
        report = root / "report.html"
        report_code = main(["report", str(root / "run"), "-o", str(report)])
    finally:
        mp.undo()
    return {"code": code, "run": root / "run", "counts": counts, "report": report, "report_code": report_code}


def test_each_network_runs_once_per_image(modern_run):
    assert modern_run["code"] == 0
    expected = CELLS * N + N_REF  # every generated image of every cell, and each reference image once
    assert modern_run["counts"] == {"dinov2-vit-l14": expected, "clip-vit-l14": expected}
    df = pd.read_parquet(modern_run["run"] / "results.parquet")
    rows = df.groupby("extractor")["metric"].apply(set).to_dict()
    assert {"fd", "kid", "vendi", "precision", "recall", "density", "coverage"} <= rows["dinov2-vit-l14"]
    assert {"fd", "clip_score", "aesthetic"} <= rows["clip-vit-l14"]
    assert not (df["error"].astype(str) != "").any(), df[df["error"] != ""][["metric", "error"]]


@pytest.mark.parametrize("metric", ["aesthetic", "hpsv2", "image_reward", "pick_score", "clip_score"])
def test_every_per_image_scorer_reports_a_value_with_its_ci(modern_run, metric):
    df = pd.read_parquet(modern_run["run"] / "results.parquet")
    rows = df[df["metric"] == metric]
    assert len(rows) == CELLS
    for r in rows.itertuples():
        assert math.isfinite(r.value) and r.ci_low <= r.value <= r.ci_high and r.ci_low < r.ci_high, r
        assert r.n == N


def test_the_report_lists_best_and_worst_prompts_with_their_means(modern_run):
    from evalkit.report.prompt_scores import prompt_sections

    assert modern_run["report_code"] == 0
    html = modern_run["report"].read_text()
    assert '<section id="prompts"' in html and "Best and worst prompts" in html
    run = read_run(modern_run["run"])
    sections = prompt_sections(run)
    assert {s.score for s in sections} == {"aesthetic score", "HPSv2", "ImageReward", "PickScore"}
    _, prompts = run.conditions()
    for section in sections:
        cell = next(c for c in run.cells.values() if section.cell.startswith(f"{c['model']} · {c['sampler']} "))
        output = {"aesthetic score": "aesthetic", "HPSv2": "hpsv2", "ImageReward": "image_reward"}
        scores = run.features(cell["cell_id"])[section.extractor][output.get(section.score, "pick_score")]
        scores = np.asarray(scores, dtype=np.float64)
        by_prompt = {p: float(np.mean([s for s, q in zip(scores, prompts) if q == p])) for p in set(prompts)}
        shown = section.best + section.worst
        assert [p.mean for p in section.best] == sorted((p.mean for p in section.best), reverse=True)
        assert max(by_prompt.values()) == pytest.approx(section.best[0].mean, rel=1e-12)
        for p in shown:
            assert p.mean == pytest.approx(by_prompt[p.prompt], rel=1e-12) and p.n == N // len(PROMPTS)
            assert p.image is not None  # every prompt has a kept sample (grid_samples = N)


def test_the_shipped_preference_suite_names_every_missing_file_before_running(tmp_path, capsys, monkeypatch):
    """suites/sd15_preference.yaml on a machine without any weights: exit 2 before anything is built, one problem per
    network file (DINOv2, CLIP ViT-L/14 and its aesthetic head, HPSv2, ImageReward), each naming the file; with them
    found (stubbed), its dry run plans 4 cells."""
    from pathlib import Path

    from evalkit.run import preflight

    root = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # open_clip's and the scorers' caches: empty
    (tmp_path / "suites" / "data" / "coco" / "val2014-512").mkdir(parents=True)
    suite = tmp_path / "suites" / "sd15_preference.yaml"
    suite.write_text((root / "suites" / "sd15_preference.yaml").read_text())
    assert main(["run", str(suite), "--out", str(tmp_path / "dry"), "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    for file in ("dinov2_vitl14_pretrain.pth", "ViT-L-14.pt", "sac+logos+ava1-l14-linearMSE.pth"):
        assert f"weights file '{file}'" in err, file
    for file in ("HPS_v2.1_compressed.pt", "ImageReward.pt"):
        assert f"weights file '{file}'" in err, file
    monkeypatch.setattr(preflight, "check_extractor_weights", lambda extractor, **kw: [])
    assert main(["run", str(suite), "--out", str(tmp_path / "dry"), "--dry-run"]) == 0
    assert "4 cells × 2000 samples" in " ".join(capsys.readouterr().out.split())
