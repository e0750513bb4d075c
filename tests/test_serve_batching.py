"""The batching engine: a request's output is the same alone, in a batch, or joining one mid-run.

References are computed without any cache, one sequence at a time, so a wrong padding mask,
position id or cache merge shows up as a different token or log-prob.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lofit.serve.adapters import serve_models
from lofit.serve.engine import Engine, Event, Job, Sampling
from lofit.serve.text import Generated


class Collector:
    """Gathers the engine's events per job index, from the engine thread."""

    def __init__(self) -> None:
        self.done: dict[int, Generated] = {}
        self.streamed: dict[int, list[Event]] = {}
        self.condition = threading.Condition()

    def deliver(self, event: Event) -> None:
        assert event.error is None, event.error
        with self.condition:
            self.streamed.setdefault(event.index, []).append(event)
            if event.done is not None:
                self.done[event.index] = event.done
                self.condition.notify_all()

    def wait(self, count: int, timeout: float = 120) -> dict[int, Generated]:
        with self.condition:
            assert self.condition.wait_for(lambda: len(self.done) >= count, timeout), "the engine did not finish"
            return dict(self.done)


def job(collector: Collector, index: int, prompt: list[int], sampling: Sampling, adapter: int = 0, stream: bool = False) -> Job:
    return Job(index, [], prompt, "", sampling, collector.deliver, adapter=adapter, stream=stream)


def run_alone(engine: Engine, prompt: list[int], sampling: Sampling, adapter: int = 0) -> Generated:
    collector = Collector()
    engine.submit([job(collector, 0, prompt, sampling, adapter)])
    return collector.wait(1)[0]


def uncached_greedy(model, prompt: list[int], max_tokens: int, eos: set[int]) -> tuple[list[int], list[float]]:
    """Greedy ids (EOS included when reached) and their log-probs, recomputing the whole sequence each step."""
    ids, chosen, logprobs = list(prompt), [], []
    with torch.no_grad():
        for _ in range(max_tokens):
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)
            token = int(logp.argmax())
            chosen.append(token)
            logprobs.append(float(logp[token]))
            if token in eos:
                break
            ids.append(token)
    return chosen, logprobs


def random_prompts(lengths: list[int], vocab: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(10, vocab, (n,), generator=generator).tolist() for n in lengths]


def engine_for(backbone, max_batch: int = 16) -> Engine:
    return Engine(backbone, serve_models(backbone, {}, "base"), max_batch=max_batch)


def assert_same(result: Generated, ids: list[int], logprobs: list[float]) -> None:
    assert result.token_ids == ids
    generated = [t.logprob for t in result.tokens]
    torch.testing.assert_close(torch.tensor(generated), torch.tensor(logprobs[: len(generated)]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_rows_joining_a_running_batch_match_their_uncached_greedy_output(tiny_backbone_factory, family):
    backbone = tiny_backbone_factory(family, seed=4)
    engine = engine_for(backbone)
    lengths, budgets = [3, 17, 1, 40, 9], [24, 6, 12, 9, 15]
    prompts = random_prompts(lengths, len(backbone.tokenizer))
    collector = Collector()
    engine.submit([job(collector, i, prompts[i], Sampling(budgets[i], temperature=0)) for i in (0, 1)])
    deadline = time.monotonic() + 30
    while engine.steps < 3 and time.monotonic() < deadline:  # the others join a batch already decoding
        time.sleep(0.001)
    assert engine.active_rows > 0
    engine.submit([job(collector, i, prompts[i], Sampling(budgets[i], temperature=0)) for i in (2, 3, 4)])
    batched = collector.wait(5)
    for i, prompt in enumerate(prompts):
        ids, logprobs = uncached_greedy(backbone.model, prompt, budgets[i], engine.eos_ids)
        assert_same(batched[i], ids, logprobs)
        assert_same(run_alone(engine, prompt, Sampling(budgets[i], temperature=0)), ids, logprobs)
    assert engine.active_rows == 0
    engine.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(st.integers(1, 30), st.integers(1, 10), st.integers(0, 6)), min_size=1, max_size=5),
    seed=st.integers(0, 1000),
)
def test_any_arrival_pattern_gives_each_row_its_alone_output(tiny_backbone, rows, seed):
    """Rows of random lengths and budgets, each arriving after a random number of decode steps."""
    engine = engine_for(tiny_backbone, max_batch=3)
    prompts = random_prompts([length for length, _, _ in rows], len(tiny_backbone.tokenizer), seed)
    expected = [uncached_greedy(tiny_backbone.model, p, budget, engine.eos_ids) for p, (_, budget, _) in zip(prompts, rows)]
    collector = Collector()
    start = engine.steps
    for i, (prompt, (_, budget, after)) in enumerate(zip(prompts, rows)):
        deadline = time.monotonic() + 5
        while engine.steps - start < after and engine.active_rows and time.monotonic() < deadline:
            time.sleep(0.0005)
        engine.submit([job(collector, i, prompt, Sampling(budget, temperature=0))])
    done = collector.wait(len(rows))
    for i, (ids, logprobs) in enumerate(expected):
        assert_same(done[i], ids, logprobs)
    engine.close()


def test_each_row_stops_on_its_own_stop_string_eos_or_budget_and_sampling_is_per_row(tiny_backbone):
    engine = engine_for(tiny_backbone)
    prompt = random_prompts([6], len(tiny_backbone.tokenizer), seed=2)[0]
    free = run_alone(engine, prompt, Sampling(12, temperature=0))
    stop = free.tokens[4].token
    sampled = Sampling(10, temperature=1.0, top_p=0.9, seed=11)
    alone_sampled = run_alone(engine, prompt, sampled)
    collector = Collector()
    engine.submit(
        [
            job(collector, 0, prompt, Sampling(12, temperature=0, stop=(stop,))),
            job(collector, 1, prompt, Sampling(3, temperature=0)),
            job(collector, 2, prompt, sampled),
            job(collector, 3, prompt, Sampling(12, temperature=0), stream=True),
        ]
    )
    done = collector.wait(4)
    assert done[0].finish_reason == "stop" and done[0].text == free.text[: free.text.index(stop)]
    assert done[1].finish_reason == "length" and done[1].token_ids == free.token_ids[:3]
    assert done[2].token_ids == alone_sampled.token_ids
    streamed = collector.streamed[3]
    assert "".join(e.text for e in streamed) == free.text == done[3].text
    assert [t.token for e in streamed for t in e.tokens] == [t.token for t in free.tokens]
    assert len(streamed) > 1 and streamed[-1].done is not None
    engine.close()


def test_a_sliding_window_family_is_served_one_row_at_a_time_and_stays_exact(tiny_backbone_factory):
    backbone = tiny_backbone_factory("gemma3_text", seed=1)
    engine = engine_for(backbone)
    assert engine.max_batch == 1
    prompts = random_prompts([5, 12], len(backbone.tokenizer))
    collector = Collector()
    engine.submit([job(collector, i, p, Sampling(6, temperature=0)) for i, p in enumerate(prompts)])
    done = collector.wait(2)
    for i, prompt in enumerate(prompts):
        assert_same(done[i], *uncached_greedy(backbone.model, prompt, 6, engine.eos_ids))
    engine.close()


def test_cancelled_rows_leave_the_batch_before_the_next_step(tiny_backbone):
    engine = engine_for(tiny_backbone)
    prompt = random_prompts([4], len(tiny_backbone.tokenizer))[0]
    collector = Collector()
    long = [job(collector, i, prompt, Sampling(400, temperature=0)) for i in range(3)]
    engine.submit(long)
    deadline = time.monotonic() + 30
    while engine.active_rows < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    engine.cancel(long[:2])
    deadline = time.monotonic() + 5
    while engine.active_rows != 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert engine.active_rows == 1
    engine.cancel(long[2:])
    assert run_alone(engine, prompt, Sampling(2, temperature=0)).completion_tokens == 2
    assert not collector.done, "cancelled jobs report nothing"
    engine.close()
