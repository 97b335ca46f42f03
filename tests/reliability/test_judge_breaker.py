"""Issue 17 §3 (judge) and issue 16 item 23: a dead judge server stops the scoring at once, keeping finished work;
the judge's settings come from `--judge-args`, its concurrency from `--api-nproc`."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from datasets.fixtures import judge_server, write_benchmark

from vlmeval_ivcp.evaluation.judge import Judge, JudgeUnreachable
from vlmeval_ivcp.runner.cli import _judge, build_parser, main


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_closed_port_trips_the_breaker_after_a_bounded_number_of_requests():
    port = _closed_port()
    judge = Judge(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=3, backoff_base=0.001, nproc=4)
    with pytest.raises(JudgeUnreachable, match=rf"judge server http://127.0.0.1:{port}/v1 unreachable"):
        judge.map(judge.ask, [f"question {n}" for n in range(50)])
    # Three failures in a row trip it; threads already past the check add at most one request each.
    assert judge.stats.requests <= judge.max_connection_failures + judge.nproc - 1


def test_questions_are_asked_concurrently():
    inside, peak, lock = [0], [0], threading.Lock()
    release = threading.Barrier(3, timeout=30)

    def respond(messages):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        release.wait()  # returns only once three requests are in flight together
        with lock:
            inside[0] -= 1
        return "B"

    with judge_server(respond) as server:
        judge = Judge("m", base_url=server.base_url, api_key="x", max_retries=0, nproc=3)
        results = judge.map(judge.ask, ["one", "two", "three"])
    assert [result.value for result in results] == ["B", "B", "B"] and peak[0] == 3


def test_a_dead_judge_stops_a_run_in_one_line_keeping_rows_and_earlier_judgements(tmp_path, monkeypatch, capsys):
    write_benchmark("MMVet", tmp_path / "data")
    work_dir = tmp_path / "results"
    argv = ["--model", "TinyQwen2.5-VL", "--data", "MMVet", "--work-dir", str(work_dir)]
    monkeypatch.setenv("LMUData", str(tmp_path / "data"))
    assert main(argv + ["--mode", "infer"]) == 0
    jsonl = work_dir / "TinyQwen2.5-VL" / "none" / "TinyQwen2.5-VL_MMVet.jsonl"
    rows = jsonl.read_text()

    monkeypatch.setenv("OPENAI_API_KEY", "x")
    answered = []
    with judge_server(lambda messages: answered.append(1) or ("0.5" if len(answered) == 1 else 500)) as server:
        monkeypatch.setenv("OPENAI_API_BASE", server.base_url)
        judge = ["--judge", "m", "--judge-args", '{"retry": 0}', "--api-nproc", "1"]
        assert main(argv + ["--mode", "eval"] + judge) == 0  # one answer, the rest judge failures
    cached = (work_dir / "judge_cache.jsonl").read_text()
    assert len(cached.splitlines()) == 1

    port = _closed_port()
    monkeypatch.setenv("OPENAI_API_BASE", f"http://127.0.0.1:{port}/v1")
    capsys.readouterr()
    assert main(argv + ["--mode", "eval", "--judge", "m", "--judge-args", '{"backoff_base": 0.01}']) == 2
    error = capsys.readouterr().err
    assert f"judge server http://127.0.0.1:{port}/v1 unreachable" in error
    assert error.count("run.py: error") == 1 and "Traceback" not in error
    assert jsonl.read_text() == rows and (work_dir / "judge_cache.jsonl").read_text() == cached


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"timeout": 5, "colour": 1}', r"--judge-args: unknown key\(s\) \['colour'\]"),
        ("[1]", r"--judge-args: expected a JSON object"),
        ("{timeout: 5}", r"--judge-args: not JSON"),
        ('{"timeout": "soon"}', r"--judge-args: .*"),
    ],
)
def test_bad_judge_args_are_one_line_errors(tmp_path, monkeypatch, capsys, text, message):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    argv = ["--model", "TinyQwen2.5-VL", "--data", "DemoMCQ", "--work-dir", str(tmp_path), "--judge", "m"]
    assert main(argv + ["--judge-args", text]) == 2
    error = capsys.readouterr().err
    assert error.count("run.py: error") == 1
    with pytest.raises(ValueError, match=message):
        main(argv + ["--judge-args", text, "--traceback"])


def test_judge_args_set_the_timeout_retries_and_concurrency(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    args = build_parser().parse_args(
        ["--judge", "m", "--judge-args", json.dumps({"timeout": 5, "retry": 1}), "--api-nproc", "8"]
    )
    judge = _judge(args, type("Config", (), {"work_dir": str(tmp_path)}))
    assert (judge.max_retries, judge.nproc, judge._client.timeout) == (1, 8, 5)
