"""Many LoFiT adapters in one server: each row of a mixed batch gets exactly its own adapter."""

from __future__ import annotations

import openai
import pytest
import torch

from lofit.adapter import load_adapter, save_adapter
from lofit.cli import main
from lofit.intervention import HeadIntervention
from lofit.methods.red import REDIntervention, save_red
from lofit.serve.adapters import serve_models
from lofit.serve.engine import Engine, Sampling
from serve_doubles import make_app, running_server
from test_serve_batching import Collector, job, random_prompts, run_alone, uncached_greedy

ADAPTERS = {  # name: (components, heads); offsets and scales large enough to change greedy tokens
    "truth": (("offset",), [(0, 1), (1, 2)]),
    "scaled": (("scale", "offset"), [(1, 0), (0, 3), (1, 3)]),
    "everywhere": (("offset",), None),
}


def save_adapters(backbone, folder) -> dict[str, str]:
    paths = {}
    for seed, (name, (components, heads)) in enumerate(ADAPTERS.items()):
        generator = torch.Generator().manual_seed(seed)
        intervention = HeadIntervention(backbone.geometry, components, heads=heads, init_std=1.5, generator=generator)
        paths[name] = str(save_adapter(intervention, folder / name, base_model=backbone.name, model_type="llama"))
    return paths


def reference_output(factory, path: str | None, prompt: list[int], max_tokens: int, eos: set[int]):
    """Greedy output of a fresh copy of the model with `load_adapter(path).applied(...)` (or none)."""
    reference = factory("llama", seed=3)
    if path is None:
        return uncached_greedy(reference.model, prompt, max_tokens, eos)
    with load_adapter(path, reference).applied(reference.model):
        return uncached_greedy(reference.model, prompt, max_tokens, eos)


def test_each_row_of_a_mixed_batch_equals_its_adapter_applied_alone(tiny_backbone_factory, tmp_path):
    backbone = tiny_backbone_factory("llama", seed=3)
    paths = save_adapters(backbone, tmp_path)
    models = serve_models(backbone, paths, "base")
    assert models.ids == {"base": 0, "truth": 1, "scaled": 2, "everywhere": 3}
    engine = Engine(backbone, models)
    shared, short, long, medium = random_prompts([7, 3, 15, 11], len(backbone.tokenizer), seed=5)
    prompts = [shared, short, long, shared, medium, shared]
    names = ["base", "truth", "scaled", "everywhere", "truth", "scaled"]
    collector = Collector()
    engine.submit(
        [job(collector, i, p, Sampling(10, temperature=0), adapter=models.ids[n]) for i, (p, n) in enumerate(zip(prompts, names))]
    )
    done = collector.wait(len(prompts))
    for i, (prompt, name) in enumerate(zip(prompts, names)):
        ids, logprobs = reference_output(tiny_backbone_factory, paths.get(name), prompt, 10, engine.eos_ids)
        assert done[i].token_ids == ids, name
        served = torch.tensor([t.logprob for t in done[i].tokens])
        torch.testing.assert_close(served, torch.tensor(logprobs[: len(served)]), atol=1e-5, rtol=0)
        alone = run_alone(engine, prompt, Sampling(10, temperature=0), adapter=models.ids[name])
        assert alone.token_ids == ids
    assert len({tuple(done[i].token_ids) for i in (0, 3, 5)}) == 3, "one prompt, three adapters, three outputs"
    engine.close()


def test_the_request_model_field_chooses_the_adapter_over_http(tiny_backbone_factory, tmp_path):
    backbone = tiny_backbone_factory("llama", seed=3)
    paths = save_adapters(backbone, tmp_path)
    app = make_app(backbone, [f"{name}={path}" for name, path in paths.items()], "tiny")
    prompt = "Q: Where is Paris?\nA:"
    ids = backbone.encode(prompt)
    with running_server(app) as url:
        api = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30)
        assert [m.id for m in api.models.list().data] == ["tiny", "truth", "scaled", "everywhere"]
        for name in ("tiny", "truth", "scaled"):
            reply = api.completions.create(model=name, prompt=prompt, max_tokens=6, temperature=0)
            expected, _ = reference_output(tiny_backbone_factory, paths.get(name), ids, 6, app.state.engine.eos_ids)
            text = backbone.tokenizer.decode([t for t in expected if t not in app.state.engine.eos_ids])
            assert reply.choices[0].text == text, name
        with pytest.raises(openai.NotFoundError, match="'truth'"):
            api.completions.create(model="lies", prompt=prompt, max_tokens=1)


def test_other_methods_are_served_alone(tiny_backbone_factory, tmp_path, tokenizer, capsys):
    backbone = tiny_backbone_factory("llama", seed=3)
    paths = save_adapters(backbone, tmp_path)
    red = str(save_red(REDIntervention.for_backbone(backbone), tmp_path / "red", backbone))
    with pytest.raises(ValueError, match="adapter 'red' .* is a red edit.*serve it alone"):
        serve_models(backbone, {"truth": paths["truth"], "red": red}, "base")
    alone = serve_models(tiny_backbone_factory("llama", seed=3), {"red": red}, "base")
    assert alone.ids == {"red": 0} and alone.stack is None
    folder = tmp_path / "model"
    backbone.model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--backbone.model", str(folder), "--adapter+", f"truth={paths['truth']}", "--adapter+", f"red={red}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lofit: error: adapter 'red'") and "serve it alone" in err and "\n" not in err
    with pytest.raises(SystemExit):
        main(["serve", "--backbone.model", str(folder), "--adapter", f"[a={paths['truth']}, a={paths['scaled']}]"])
    assert "model id 'a' is given twice" in capsys.readouterr().err
