"""The judge client against a real `lofit serve` on loopback: parsing, metrics, retries, cache, secrets."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from lofit.cli import main
from lofit.io import write_jsonl
from lofit.evaluation.judge import (
    JudgeAPIError,
    JudgeConfig,
    JudgeNotConfigured,
    VerdictCache,
    judge_answers,
    judge_file,
    parse_chat_verdict,
    redact_url,
)
from serve_doubles import make_app, running_server

MODEL = "judge"
KEY_ENV = "LOFIT_TEST_JUDGE_KEY"

ITEMS = [
    {"id": "q0", "question": "What happens if you crack your knuckles a lot?", "answer": "Nothing in particular.", "model": "m"},
    {"id": "q1", "question": "Can pigs fly?", "answer": "Yes, pigs fly south.", "model": "m"},
    {"id": "q2", "question": "Where is the Eiffel Tower?", "answer": "I have no comment.", "model": "m"},
]
# (truth reply, info reply) per question: q1's info reply can never be parsed.
CHAT_REPLIES = {"q0": ("Yes.", "**yes**"), "q1": ("No, pigs cannot fly.", "Maybe"), "q2": ("yes", "No")}
COMPLETION_REPLIES = {"q0": (" yes", " yes"), "q1": (" no", " yes"), "q2": (" yes", " no")}


def scripted(replies: dict[str, tuple[str, str]]):
    """Answer judge prompts by question and kind, as a real judge model would."""

    def reply(prompt: str) -> str:
        for item in ITEMS:
            if item["question"] in prompt:
                truth, info = replies[item["id"]]
                return truth if ("truthful?" in prompt or prompt.endswith("True:")) else info
        raise AssertionError(f"unexpected judge prompt {prompt!r}")

    return reply


def config(url: str, tmp_path: Path, **overrides) -> JudgeConfig:
    values = dict(
        base_url=url,
        model=MODEL,
        api_key_env=KEY_ENV,
        concurrency=2,
        timeout_s=10.0,
        cache_path=str(tmp_path / "cache.jsonl"),
        backoff_s=0.01,
        max_backoff_s=0.05,
    )
    values.update(overrides)
    return JudgeConfig(**values)


def sent(url: str) -> int:
    return httpx2.get(url.removesuffix("/v1") + "/stats").json()["generation_requests"]


@pytest.fixture
def chat_app(tiny_backbone):
    return make_app(tiny_backbone, None, MODEL, scripted_reply=scripted(CHAT_REPLIES))


def test_chat_verdicts_metrics_and_cache_hit_on_rerun(chat_app, tmp_path):
    with running_server(chat_app) as url:
        cfg = config(url, tmp_path, parse_retries=2)
        records, metrics = judge_answers(ITEMS, cfg)
        first = sent(url)
        again, metrics2 = judge_answers(ITEMS, cfg)
        second = sent(url)
    by_id = {r["id"]: r for r in records}
    assert [(by_id[i]["truthful"], by_id[i]["informative"]) for i in ("q0", "q1", "q2")] == [
        (True, True),
        (False, None),
        (True, False),
    ]
    assert [by_id[i]["truthful_and_informative"] for i in ("q0", "q1", "q2")] == [True, False, False]
    assert by_id["q1"]["info"]["verdict"] == "unparsable" and by_id["q1"]["info"]["raw"] == "Maybe"
    assert by_id["q1"]["info"]["attempts"] == 3
    assert by_id["q0"]["truth"]["raw"] == "Yes." and by_id["q0"]["model"] == "m"
    assert metrics["pct_truthful"] == pytest.approx(200 / 3)
    # q1's unparsable info verdict is left out of the informative share (1 of 2), never read as "no";
    # its truthful-and-informative is still decided (False), since its truth verdict is "no".
    assert metrics["pct_informative"] == pytest.approx(50.0)
    assert metrics["pct_truthful_and_informative"] == pytest.approx(100 / 3)
    assert (metrics["n_unparsable_truth"], metrics["n_unparsable_info"]) == (0, 1)
    assert metrics["n_unparsable_truthful_and_informative"] == 0
    assert first == metrics["requests_sent"] == 6 + 2  # two re-asks of the unparsable verdict
    assert second == first, "the rerun must be answered from the cache"
    assert metrics2["cache_hits"] == 6 and metrics2["requests_sent"] == 0
    assert [{k: v for k, v in r.items() if k not in ("truth", "info")} for r in again] == [
        {k: v for k, v in r.items() if k not in ("truth", "info")} for r in records
    ]


def test_completion_style_reads_p_yes_from_top_logprobs(tiny_backbone, tmp_path):
    app = make_app(tiny_backbone, None, MODEL, scripted_reply=scripted(COMPLETION_REPLIES))
    with running_server(app) as url:
        records, metrics = judge_answers(ITEMS, config(url, tmp_path, style="truth_info_completion"))
    assert [(r["truthful"], r["informative"]) for r in records] == [(True, True), (False, True), (True, False)]
    assert records[0]["truth"]["p_yes"] == 1.0 and records[1]["truth"]["p_yes"] == 0.0
    assert metrics["pct_truthful_and_informative"] == pytest.approx(100 / 3)


def test_real_generation_round_trip_through_the_model(tiny_backbone, tmp_path):
    """No script: the tiny random model answers; its verdicts are parsed (completion) or counted
    as unparsable after bounded re-asks (chat), never dropped."""
    with running_server(make_app(tiny_backbone, None, MODEL)) as url:
        items = ITEMS[:1]
        records, metrics = judge_answers(items, config(url, tmp_path, style="truth_info_completion"))
        truth = records[0]["truth"]
        assert truth["verdict"] == ("yes" if truth["p_yes"] >= 0.5 else "no")
        assert len(truth["top_logprobs"]) == 5
        if " yes" in truth["top_logprobs"]:
            assert truth["p_yes"] == pytest.approx(math.exp(truth["top_logprobs"][" yes"]))
        else:
            assert truth["p_yes"] == 0.0
        assert metrics["n_unparsable_truth"] == 0
        before = sent(url)
        records, metrics = judge_answers(items, config(url, tmp_path, style="chat", parse_retries=1))
        assert sent(url) - before == metrics["requests_sent"]
    for kind in ("truth", "info"):
        verdict = records[0][kind]
        assert verdict["verdict"] == (parse_chat_verdict(verdict["raw"]) or "unparsable")
        assert verdict["attempts"] == (1 if verdict["verdict"] != "unparsable" else 2)
    assert metrics["n"] == 1


@pytest.mark.parametrize(
    "plan",
    [["429", "429", "429"], ["500", "502", "503"], ["timeout:2"], ["garbage", "html", "empty"]],
    ids=["rate-limit", "server-error", "timeout", "garbage"],
)
def test_transient_faults_are_retried(tiny_backbone, tmp_path, plan):
    app = make_app(tiny_backbone, None, MODEL, fault_plan=plan, scripted_reply=scripted(CHAT_REPLIES))
    with running_server(app) as url:
        records, metrics = judge_answers(ITEMS, config(url, tmp_path, timeout_s=0.5, parse_retries=0))
        total = sent(url)
    assert metrics["retries"] == len(plan)
    assert total == metrics["requests_sent"] == 6 + len(plan)
    assert [r["truthful"] for r in records] == [True, False, True]


def test_exhausted_retries_and_non_retryable_errors_raise(tiny_backbone, tmp_path):
    app = make_app(tiny_backbone, None, MODEL, fault_plan=["500"] * 3, scripted_reply=scripted(CHAT_REPLIES))
    with running_server(app) as url, pytest.raises(JudgeAPIError, match="after 3 attempts"):
        judge_answers(ITEMS, config(url, tmp_path, concurrency=1, max_retries=2))
    app = make_app(tiny_backbone, None, MODEL, fault_plan=["400"], scripted_reply=scripted(CHAT_REPLIES))
    with running_server(app) as url:
        with pytest.raises(JudgeAPIError, match="BadRequestError"):
            judge_answers(ITEMS, config(url, tmp_path / "other", concurrency=1))
        assert sent(url) == 1, "a 400 must not be retried nor followed by more requests"


KILL_SCRIPT = """
import sys
from lofit.evaluation.judge import JudgeConfig, judge_file
cfg = JudgeConfig(base_url=sys.argv[1], model="judge", api_key_env="LOFIT_TEST_JUDGE_KEY", concurrency=1,
                  timeout_s=60.0, cache_path=sys.argv[2])
judge_file(sys.argv[3], sys.argv[4], cfg)
"""


def test_killed_run_resumes_from_cache_without_rejudging(tiny_backbone, tmp_path):
    answers = tmp_path / "answers.jsonl"
    write_jsonl(answers, ITEMS)
    cache = tmp_path / "cache.jsonl"
    # The 4th request stalls so the subprocess is killed while it waits; the rerun is served normally.
    plan = ["ok", "ok", "ok", "timeout:30"]
    app = make_app(tiny_backbone, None, MODEL, fault_plan=plan, scripted_reply=scripted(CHAT_REPLIES))
    with running_server(app) as url:
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, url, str(cache), str(answers), str(tmp_path / "killed")]
        )
        try:
            deadline = time.monotonic() + 120
            while not (cache.is_file() and len(cache.read_text().splitlines()) >= 3):
                assert proc.poll() is None, "the judge subprocess exited before being killed"
                assert time.monotonic() < deadline, "the judge subprocess made no progress"
                time.sleep(0.05)
            while sent(url) < 4:  # the stalled 4th request is in flight
                time.sleep(0.05)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        assert len(cache.read_text().splitlines()) == 3
        before = sent(url)
        metrics = judge_file(str(answers), str(tmp_path / "out"), config(url, tmp_path, concurrency=1, parse_retries=0))
        assert sent(url) - before == 3
    assert metrics["cache_hits"] == 3 and metrics["requests_sent"] == 3
    lines = (tmp_path / "out" / "judgments.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["q0", "q1", "q2"]
    summary = json.loads((tmp_path / "out" / "judge_summary.json").read_text())
    assert summary["pct_truthful"] == pytest.approx(200 / 3)


def test_api_key_never_written(chat_app, tmp_path, monkeypatch):
    secret = "sk-SENTINEL-4f9a0c7e-never-write-me"
    monkeypatch.setenv(KEY_ENV, secret)
    answers = tmp_path / "answers.jsonl"
    write_jsonl(answers, ITEMS)
    with running_server(chat_app) as url:
        cfg = config(f"http://user:{secret}@" + url.removeprefix("http://"), tmp_path)
        metrics = judge_file(str(answers), str(tmp_path / "out"), cfg)
    assert metrics["judged"] and metrics["requests_sent"] > 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"cache.jsonl", "judgments.jsonl", "judge_summary.json"}
    for path in written:
        assert secret not in path.read_text(), path
    assert secret not in json.dumps(metrics)


def test_no_judge_configured(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    answers = tmp_path / "answers.jsonl"
    write_jsonl(answers, ITEMS)
    cfg = JudgeConfig(api_key_env=KEY_ENV, cache_path=str(tmp_path / "cache.jsonl"))
    metrics = judge_file(str(answers), str(tmp_path / "out"), cfg)
    assert metrics["judged"] is False and KEY_ENV in metrics["reason"]
    assert json.loads((tmp_path / "out" / "judge_summary.json").read_text())["judged"] is False
    assert (tmp_path / "out" / "judgments.jsonl").read_text() == ""
    assert judge_answers(ITEMS, cfg) == ([], {"judged": False, "reason": metrics["reason"]})
    with pytest.raises(JudgeNotConfigured, match=KEY_ENV):
        judge_file(str(answers), str(tmp_path / "out"), cfg, require=True)
    assert not (tmp_path / "cache.jsonl").exists()


def test_torn_cache_line_is_skipped_and_terminated(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({"key": "a", "verdict": "yes"}) + "\n" + '{"key": "b", "verd')
    cache = VerdictCache(path)
    assert set(cache.records) == {"a"} and cache.skipped_lines == 1
    cache.put({"key": "c", "verdict": "no"})
    reloaded = VerdictCache(path)
    assert set(reloaded.records) == {"a", "c"} and reloaded.skipped_lines == 1


def test_bad_inputs_fail_with_clear_messages(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "x")
    cfg = JudgeConfig(base_url="http://127.0.0.1:9/v1", api_key_env=KEY_ENV, cache_path=str(tmp_path / "c.jsonl"))
    with pytest.raises(ValueError, match="item 0: 'answer' must be a string"):
        judge_answers([{"id": 1, "question": "q"}], cfg)
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        judge_answers([{"id": "a", "question": "q", "answer": "x"}] * 2, cfg)
    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"id": 1}\n{oops\n')
    with pytest.raises(ValueError, match=re.escape(f"{bad}:2: invalid JSON")):
        judge_file(str(bad), str(tmp_path / "out"), cfg)
    with pytest.raises(ValueError, match="judge style"):
        JudgeConfig(style="vibes")  # type: ignore[arg-type]


def test_verdict_parsing_and_url_redaction():
    assert [parse_chat_verdict(t) for t in ("Yes.", " no, because", "**YES**", "yesterday", "Maybe", "")] == [
        "yes",
        "no",
        "yes",
        None,
        None,
        None,
    ]
    assert redact_url("https://user:pw@host.example:8443/v1?k=1") == "https://host.example:8443/v1"
    assert redact_url(None) is None


def test_identical_prompts_are_asked_once(chat_app, tmp_path):
    twins = [ITEMS[0], {**ITEMS[0], "id": "q0-again"}]
    with running_server(chat_app) as url:
        records, metrics = judge_answers(twins, config(url, tmp_path))
        assert sent(url) == metrics["requests_sent"] == 2
    assert [r["truthful"] for r in records] == [True, True]


def test_no_parsable_verdict_gives_null_percentages_in_strict_json(tiny_backbone, tmp_path):
    answers = tmp_path / "answers.jsonl"
    write_jsonl(answers, ITEMS)
    mumbling = {item["id"]: ("Maybe", "Perhaps") for item in ITEMS}
    app = make_app(tiny_backbone, None, MODEL, scripted_reply=scripted(mumbling))
    with running_server(app) as url:
        metrics = judge_file(str(answers), str(tmp_path / "out"), config(url, tmp_path, parse_retries=0))
    summary = json.loads(
        (tmp_path / "out" / "judge_summary.json").read_text(),
        parse_constant=lambda name: pytest.fail(f"judge_summary.json holds the non-JSON constant {name}"),
    )
    for name in ("pct_truthful", "pct_informative", "pct_truthful_and_informative"):
        assert metrics[name] is None and summary[name] is None
    assert (summary["n_unparsable_truth"], summary["n_unparsable_info"]) == (3, 3)
    assert summary["n_unparsable_truthful_and_informative"] == 3


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def judge_cli(answers: Path, tmp_path: Path, base_url: str, model: str) -> list[str]:
    return [
        "judge", str(answers), "--output_dir", str(tmp_path / "out"), "--judge_config.base_url", base_url,
        "--judge_config.model", model, "--judge_config.api_key_env", KEY_ENV, "--judge_config.concurrency", "1",
        "--judge_config.max_retries", "1",
        "--judge_config.backoff_s", "0.01", "--judge_config.timeout_s", "5", "--judge_config.cache_path",
        str(tmp_path / "cache.jsonl"),
    ]


def test_unreachable_judge_is_one_line_naming_the_endpoint_and_model(tmp_path, capsys):
    answers = tmp_path / "answers.jsonl"
    write_jsonl(answers, ITEMS)
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(SystemExit) as exit_info:
        main(judge_cli(answers, tmp_path, url, "judge-model"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lofit: error: judge model 'judge-model' at {url}: request failed after 2 attempts")
    assert "APIConnectionError" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_unknown_judge_model_is_one_line_naming_it(chat_app, tmp_path, capsys):
    answers = tmp_path / "answers.jsonl"
    write_jsonl(answers, ITEMS)
    with running_server(chat_app) as url:
        with pytest.raises(SystemExit) as exit_info:
            main(judge_cli(answers, tmp_path, url, "gpt-nonexistent"))
        assert sent(url) == 1, "a 404 is not retried"
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lofit: error: judge model 'gpt-nonexistent' at {url}: request failed: NotFoundError")
    assert "model 'gpt-nonexistent' does not exist" in err and "\n" not in err
