"""The judge against a real local HTTP server speaking /v1/chat/completions."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vlmeval_ivcp.evaluation.judge import NO_OPTION, Judge, backoff_delay

SECRET = "sk-test-SECRET-0123456789"


@dataclass
class Reply:
    status: int = 200
    body: str = ""
    delay: float = 0.0  # seconds the server waits before answering


def completion(text: str) -> Reply:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "judge-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return Reply(body=json.dumps(body))


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies: deque[Reply] = deque()
        self.requests: list[dict] = []
        self.released = threading.Event()  # set at teardown to end delayed replies at once

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        server: FakeServer = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.requests.append({"path": self.path, "json": json.loads(body), "auth": self.headers["Authorization"]})
        reply = server.replies.popleft() if server.replies else Reply(500, '{"error": "no reply scripted"}')
        if reply.delay:
            server.released.wait(reply.delay)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body.encode())))
            self.end_headers()
            self.wfile.write(reply.body.encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    fake = FakeServer()
    thread = threading.Thread(target=fake.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield fake
    fake.released.set()
    fake.shutdown()
    fake.server_close()


@pytest.fixture
def make_judge(server, tmp_path):
    def make(**overrides) -> Judge:
        options = dict(
            model="judge-model",
            base_url=server.base_url,
            api_key=SECRET,
            cache_path=tmp_path / "judge_cache.jsonl",
            timeout=5.0,
            max_retries=2,
            backoff_base=0.001,
        )
        return Judge(**{**options, **overrides})

    return make


def test_success_sends_a_chat_completion_request(server, make_judge):
    server.replies.append(completion("hello"))
    judge = make_judge()
    result = judge.ask("Say hello")
    assert result.ok and result.value == "hello" and not result.cached
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["json"]["model"] == "judge-model"
    assert request["json"]["messages"] == [{"role": "user", "content": "Say hello"}]
    assert request["auth"] == f"Bearer {SECRET}"
    assert judge.stats.calls == 1 and judge.stats.requests == 1 and not judge.stats.failures


def test_rate_limit_is_retried_then_succeeds(server, make_judge):
    server.replies.extend([Reply(429, '{"error": {"message": "slow down"}}'), completion("ok")])
    judge = make_judge()
    result = judge.ask("q")
    assert result.ok and result.value == "ok"
    assert len(server.requests) == 2
    assert judge.stats.retries == 1 and not judge.stats.failures


def test_persistent_server_error_fails_after_bounded_retries(server, make_judge):
    server.replies.extend([Reply(500, '{"error": "boom"}')] * 10)
    judge = make_judge(max_retries=2)
    result = judge.ask("q")
    assert not result.ok and result.error == "server_error" and result.value is None
    assert len(server.requests) == 3
    assert judge.stats.failures == {"server_error": 1} and judge.stats.retries == 2


def test_client_error_is_not_retried(server, make_judge):
    server.replies.append(Reply(404, '{"error": "no such model"}'))
    judge = make_judge()
    result = judge.ask("q")
    assert result.error == "client_error" and "404" in result.detail
    assert len(server.requests) == 1


def test_timeout_is_a_failure_of_kind_timeout(server, make_judge):
    server.replies.extend([Reply(body="{}", delay=5.0)] * 2)
    judge = make_judge(timeout=0.2, max_retries=1)
    result = judge.ask("q")
    assert not result.ok and result.error == "timeout"
    assert len(server.requests) == 2
    assert judge.stats.failures == {"timeout": 1}


def test_unreachable_server_is_a_connection_failure(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on once the socket closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    judge = Judge(base_url=f"http://127.0.0.1:{port}/v1", api_key=SECRET, max_retries=1, backoff_base=0.001)
    result = judge.ask("q")
    assert result.error == "connection"
    assert judge.stats.requests == 2


@pytest.mark.parametrize(
    "body",
    [
        "<html>bad gateway</html>",
        json.dumps({"id": "x", "object": "chat.completion"}),
        json.dumps({"choices": []}),
        json.dumps({"choices": [{"message": {"role": "assistant"}}]}),
    ],
    ids=["not-json", "no-choices", "empty-choices", "no-content"],
)
def test_garbage_reply_is_a_failure(server, make_judge, body):
    server.replies.append(Reply(200, body))
    judge = make_judge()
    result = judge.ask("q")
    assert not result.ok and result.error == "garbage"
    assert len(server.requests) == 1  # not retried
    assert judge.stats.failures == {"garbage": 1}


def test_second_call_is_served_from_the_cache_file(server, make_judge):
    server.replies.append(completion("cached answer"))
    first = make_judge().ask("same question")
    rerun = make_judge()  # a new process would load the same file
    second = rerun.ask("same question")
    assert first.value == second.value == "cached answer" and second.cached
    assert len(server.requests) == 1
    assert rerun.stats.cache_hits == 1 and rerun.stats.requests == 0


def test_cache_key_covers_model_and_messages(server, make_judge):
    server.replies.extend([completion("a"), completion("b"), completion("c")])
    make_judge().ask("one")
    make_judge().ask("two")
    make_judge(model="other-model").ask("one")
    assert len(server.requests) == 3


def test_failures_are_not_cached(server, make_judge):
    server.replies.extend([Reply(400, '{"error": "bad"}'), completion("fine")])
    assert make_judge().ask("q").error == "client_error"
    assert make_judge().ask("q").value == "fine"
    assert len(server.requests) == 2


def test_truncated_cache_line_is_skipped_with_a_warning(server, make_judge, tmp_path):
    server.replies.append(completion("x"))
    make_judge().ask("q")
    with (tmp_path / "judge_cache.jsonl").open("a") as cache:
        cache.write('{"key": "abc", "cont')
    with pytest.warns(UserWarning, match="judge_cache.jsonl:2"):
        judge = make_judge()
    assert judge.ask("q").cached


def test_api_key_never_in_cache_logs_repr_or_details(server, make_judge, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # includes the openai and httpx loggers
    echo = json.dumps({"error": {"message": f"invalid key {SECRET}"}})  # a server that echoes the key back
    server.replies.extend([completion("fine"), Reply(500, echo), Reply(401, echo)])
    judge = make_judge(max_retries=1)
    judge.ask("q1")
    failed = judge.ask("q2")
    assert failed.error == "client_error"
    assert SECRET not in (tmp_path / "judge_cache.jsonl").read_text()
    assert caplog.records and SECRET not in caplog.text
    assert SECRET not in repr(judge) and SECRET not in repr(failed) and SECRET not in str(judge.stats)


def test_settings_come_from_the_environment(server, monkeypatch):
    server.replies.append(completion("env"))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_BASE", server.base_url + "/chat/completions")  # VLMEvalKit's form
    judge = Judge()
    assert judge.model == "gpt-4o" and judge.base_url == server.base_url
    assert judge.ask("q").value == "env"


def test_missing_key_is_refused(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        Judge(base_url="http://127.0.0.1:1/v1")


@pytest.mark.parametrize("bad", [dict(max_retries=-1), dict(timeout=0), dict(backoff_base=-1)])
def test_bad_settings_are_refused_without_the_key(bad):
    with pytest.raises(ValueError) as error:
        Judge(api_key=SECRET, **bad)
    assert SECRET not in str(error.value)


def test_backoff_doubles_and_is_capped():
    assert [backoff_delay(retry, 0.5, 3.0) for retry in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


OPTIONS = {"A": "a cat", "B": "a dog", "C": "a bird"}


@pytest.mark.parametrize(("reply", "value"), [("B", "B"), ("The reply chose (C).", "C"), (NO_OPTION, NO_OPTION)])
def test_extract_choice_reads_the_judge_reply_by_rules(server, make_judge, reply, value):
    server.replies.append(completion(reply))
    result = make_judge().extract_choice("What animal?", OPTIONS, "I think it's the barking one")
    assert result.ok and result.value == value
    prompt = server.requests[0]["json"]["messages"][0]["content"]
    assert "A. a cat" in prompt and "barking one" in prompt and "What animal?" in prompt


def test_extract_choice_unreadable_reply_is_a_failure(server, make_judge):
    server.replies.append(completion("B or C, hard to say"))
    judge = make_judge()
    result = judge.extract_choice("What animal?", OPTIONS, "something")
    assert not result.ok and result.error == "unparseable"
    assert judge.stats.failures == {"unparseable": 1}


@pytest.mark.parametrize(
    ("reply", "ok", "value"),
    [("No.", True, "No"), ("Yes", True, "Yes"), ("Unknown", True, "Unknown"), ("maybe", False, None)],
)
def test_extract_yes_no(server, make_judge, reply, ok, value):
    server.replies.append(completion(reply))
    result = make_judge().extract_yes_no("Is there a dog?", "I see a cat only")
    assert result.ok is ok and result.value == value
    assert ok or result.error == "unparseable"


@pytest.mark.parametrize(
    ("reply", "score", "error"),
    [
        ("0.7", 0.7, None),
        ("Score: 1.0 - fully correct", 1.0, None),
        ("0", 0.0, None),
        ("1.5", None, "out_of_range"),
        ("-0.2", None, "out_of_range"),
        ("excellent", None, "unparseable"),
    ],
)
def test_score_open_answer(server, make_judge, reply, score, error):
    server.replies.append(completion(reply))
    result = make_judge().score_open_answer("2+2?", "4", "four")
    assert result.value == score and result.error == error and result.ok is (error is None)


def test_helper_transport_failure_passes_through(server, make_judge):
    server.replies.append(Reply(403, '{"error": "forbidden"}'))
    result = make_judge().score_open_answer("q", "a", "p")
    assert not result.ok and result.error == "client_error"


def test_helper_answers_are_cached(server, make_judge):
    server.replies.append(completion("0.5"))
    make_judge().score_open_answer("q", "a", "p")
    again = make_judge().score_open_answer("q", "a", "p")
    assert again.ok and again.value == 0.5 and again.cached
    assert len(server.requests) == 1
