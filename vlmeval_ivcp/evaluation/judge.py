"""An LLM judge over any OpenAI-compatible chat-completions server, with bounded retries and an on-disk answer cache.

Every call returns a `JudgeResult`; a failure is `ok=False` with an error kind and is counted in `Judge.stats`, never
a silent wrong answer. The API key is kept out of logs, reprs, result details and the cache file. `Judge.map` asks
several questions at once; after `max_connection_failures` consecutive attempts that reach no server (connection
refused, timeout) every call raises `JudgeUnreachable`, so a dead server stops the scoring in seconds, not hours.

Retries are this module's loop rather than the `openai` client's own (`max_retries=0` there): the breaker must see
every failed attempt, and `JudgeStats` counts them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .mcq import extract_choice
from .yorn import UNKNOWN, extract_yes_no

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The letter a judge answers when a reply picks none of the options (VLMEvalKit's convention); always wrong.
NO_OPTION = "Z"

# Failure kinds. Only the transient ones are retried.
RETRYABLE_KINDS = frozenset({"rate_limit", "server_error", "timeout", "connection"})
FAILURE_KINDS = RETRYABLE_KINDS | {"client_error", "garbage", "unparseable", "out_of_range"}
# Attempts that reached no server; enough of them in a row mean it is down.
UNREACHABLE_KINDS = frozenset({"timeout", "connection"})
# Keyword settings `--judge-args` may give (VLMEvalKit's `retry` is accepted for `max_retries`).
JUDGE_ARGS = ("timeout", "max_retries", "backoff_base", "backoff_max", "temperature", "max_tokens",
              "max_connection_failures", "nproc")  # fmt: skip


class JudgeUnreachable(RuntimeError):
    """Several consecutive requests reached no judge server; the message names the server."""


@dataclass(frozen=True)
class JudgeResult:
    """The outcome of one judge question.

    Args:
        ok (`bool`): whether `value` holds an answer.
        value (`Any`): the reply text (`Judge.ask`), a letter, "Yes"/"No"/"Unknown", or a score in [0, 1].
        error (`str | None`): the failure kind (one of `FAILURE_KINDS`) when not ok.
        detail (`str`): a human-readable reason for a failure (never holds the API key).
        cached (`bool`): whether the reply came from the cache.
    """

    ok: bool
    value: Any = None
    error: str | None = None
    detail: str = ""
    cached: bool = False


@dataclass
class JudgeStats:
    """Counters of one `Judge`: questions asked, HTTP requests sent, cache hits, retries, failures by kind."""

    calls: int = 0
    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: Counter = field(default_factory=Counter)


def judge_settings(text: str) -> dict[str, Any]:
    """The keyword settings of a `--judge-args` JSON object (keys of `JUDGE_ARGS`; VLMEvalKit's `retry` is
    `max_retries`).

    Raises:
        ValueError: the text is not a JSON object, or names a key that is not a setting (the message names it).
    """
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--judge-args: not JSON ({error}): {text!r}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"--judge-args: expected a JSON object such as '{{\"timeout\": 30}}', got {text!r}")
    if "retry" in settings:
        settings["max_retries"] = settings.pop("retry")
    unknown = sorted(set(settings) - set(JUDGE_ARGS))
    if unknown:
        raise ValueError(f"--judge-args: unknown key(s) {unknown}; allowed: {sorted(JUDGE_ARGS)} and 'retry'")
    return settings


def backoff_delay(retry: int, base: float, cap: float) -> float:
    """Seconds to wait before retry number `retry` (1-based): `base * 2 ** (retry - 1)`, at most `cap`."""
    return min(cap, base * 2 ** (retry - 1))


def _content_of(body: str) -> str:
    """The assistant text of a chat-completion body; ValueError when the body is not one."""
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        raise ValueError(f"reply is not JSON: {body[:80]!r}") from None
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ValueError(f"reply has no choices: {body[:80]!r}")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise ValueError(f"reply has no message content: {body[:80]!r}")
    return content


class _AnswerCache:
    """Replies by request hash, in memory and appended to a JSON-lines file (one `{"key", "model", "content"}` per
    line) when a path is given; a re-run loads the file and asks the server nothing it already answered."""

    def __init__(self, path: Path | None):
        self.path = path
        self._replies: dict[str, str] = {}
        if path is not None and path.exists():
            with path.open(encoding="utf-8") as lines:
                for line_number, line in enumerate(lines, start=1):
                    try:
                        record = json.loads(line)
                        self._replies[record["key"]] = record["content"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        # A run killed mid-write leaves a partial last line; the answer is simply asked again.
                        warnings.warn(f"{path}:{line_number}: skipping an unreadable judge cache line", stacklevel=3)

    def get(self, key: str) -> str | None:
        return self._replies.get(key)

    def put(self, key: str, model: str, content: str) -> None:
        self._replies[key] = content
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"key": key, "model": model, "content": content}, ensure_ascii=False) + "\n")


class Judge:
    """An OpenAI-compatible chat model used as a grader.

    Args:
        model (`str`): model name sent to the server.
        base_url (`str | None`): server URL; default `$OPENAI_API_BASE`, else the OpenAI API. A URL ending in
            "/chat/completions" (VLMEvalKit's form of `OPENAI_API_BASE`) is accepted.
        api_key (`str | None`): default `$OPENAI_API_KEY`; a server that ignores keys still needs a placeholder.
        cache_path (`str | os.PathLike | None`): JSON-lines answer cache; `None` keeps answers in memory only.
        timeout (`float`): seconds per HTTP request.
        max_retries (`int`): extra attempts after a rate limit, 5xx, timeout or connection error.
        backoff_base (`float`): seconds before the first retry; doubles at each retry, capped at `backoff_max`.
        backoff_max (`float`): longest wait between attempts.
        temperature (`float`): sampling temperature (0 = greedy).
        max_tokens (`int`): reply length limit.
        max_connection_failures (`int`): consecutive unreachable attempts (over all threads) after which every
            call raises `JudgeUnreachable`.
        nproc (`int`): questions `map` asks at once (VLMEvalKit's `--api-nproc`).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        cache_path: str | os.PathLike | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        temperature: float = 0.0,
        max_tokens: int = 512,
        max_connection_failures: int = 3,
        nproc: int = 4,
    ):
        if max_retries < 0 or max_connection_failures < 1 or nproc < 1:
            raise ValueError(
                f"max_retries must be >= 0, max_connection_failures and nproc >= 1; got max_retries={max_retries}, "
                f"max_connection_failures={max_connection_failures}, nproc={nproc}"
            )
        if timeout <= 0 or backoff_base < 0 or backoff_max < 0:
            raise ValueError(
                f"timeout must be > 0 and backoff_base/backoff_max >= 0; got timeout={timeout}, "
                f"backoff_base={backoff_base}, backoff_max={backoff_max}"
            )
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise ValueError(
                "no judge API key: pass api_key= or set OPENAI_API_KEY (any placeholder, e.g. 'EMPTY', for a local "
                "server that ignores keys)"
            )
        base_url = base_url or os.environ.get("OPENAI_API_BASE") or DEFAULT_BASE_URL
        self.model = model
        self.base_url = re.sub(r"/chat/completions/?$", "", base_url.rstrip("/"))
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_connection_failures = max_connection_failures
        self.nproc = nproc
        self.stats = JudgeStats()
        self._unreachable_in_a_row = 0
        self._down: str | None = None  # set once the breaker trips
        self._api_key = api_key
        import openai  # a second to import: loaded when a judge is made, not whenever the runner starts

        self._client = openai.OpenAI(base_url=self.base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self._cache = _AnswerCache(Path(cache_path) if cache_path is not None else None)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Judge(model={self.model!r}, base_url={self.base_url!r}, cache_path={self._cache.path!s})"

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***")

    def _fail(self, kind: str, detail: str) -> JudgeResult:
        with self._lock:
            self.stats.failures[kind] += 1
        return JudgeResult(ok=False, error=kind, detail=self._redact(detail))

    def _request_key(self, messages: list[dict[str, str]]) -> str:
        request = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _send(self, messages: list[dict[str, str]]) -> tuple[str | None, str, str]:
        """One HTTP request: (failure kind or None, reply text, detail)."""
        import openai  # its error classes (imported by `__init__` already)

        with self._lock:
            self.stats.requests += 1
        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
            )
        except openai.APITimeoutError:  # before APIConnectionError, its parent class
            return "timeout", "", f"no reply within the timeout from {self.base_url}"
        except openai.APIConnectionError as error:
            return "connection", "", f"cannot reach {self.base_url}: {error}"
        except openai.APIStatusError as error:
            status = error.status_code
            kind = "rate_limit" if status == 429 else "server_error" if status >= 500 else "client_error"
            return kind, "", f"HTTP {status} from {self.base_url}: {error}"
        try:
            return None, _content_of(raw.http_response.text), ""
        except ValueError as error:
            return "garbage", "", str(error)

    def ask(self, messages: str | list[dict[str, str]]) -> JudgeResult:
        """Ask the judge; a text is sent as one user message. Cached replies are returned without a request.

        Returns:
            `JudgeResult`: `value` is the reply text; on failure `error` is the kind of the last attempt.
        """
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        key = self._request_key(messages)
        with self._lock:
            self.stats.calls += 1
            cached = self._cache.get(key)
            if cached is not None:
                self.stats.cache_hits += 1
                return JudgeResult(ok=True, value=cached, cached=True)
        for attempt in range(self.max_retries + 1):
            if attempt:
                with self._lock:
                    self.stats.retries += 1
                time.sleep(backoff_delay(attempt, self.backoff_base, self.backoff_max))
            self._check_reachable()
            kind, content, detail = self._send(messages)
            self._count_reachability(kind)
            if kind is None:
                with self._lock:
                    self._cache.put(key, self.model, content)
                return JudgeResult(ok=True, value=content)
            logger.warning(
                "judge %s attempt %d/%d failed (%s): %s",
                self.model,
                attempt + 1,
                self.max_retries + 1,
                kind,
                self._redact(detail),
            )
            if kind not in RETRYABLE_KINDS:
                break
        return self._fail(kind, detail)

    def _check_reachable(self) -> None:
        if self._down is not None:
            raise JudgeUnreachable(self._down)

    def _count_reachability(self, kind: str | None) -> None:
        with self._lock:
            self._unreachable_in_a_row = self._unreachable_in_a_row + 1 if kind in UNREACHABLE_KINDS else 0
            if self._unreachable_in_a_row >= self.max_connection_failures and self._down is None:
                self._down = (
                    f"judge server {self.base_url} unreachable: {self._unreachable_in_a_row} requests in a row got "
                    f"no reply ({kind}); check OPENAI_API_BASE and the server, then re-score with --mode eval "
                    "(answers already given are cached)"
                )
        self._check_reachable()

    def map(self, ask: Callable[[Any], JudgeResult], items: Iterable[Any]) -> list[JudgeResult]:
        """`ask(item)` for every item, `nproc` at a time, in the order of `items`.

        Raises:
            JudgeUnreachable: the server stopped answering (questions not yet asked are dropped).
        """
        items = list(items)
        if self.nproc == 1 or len(items) <= 1:
            return [ask(item) for item in items]
        pool = ThreadPoolExecutor(max_workers=self.nproc, thread_name_prefix="judge")
        try:
            return list(pool.map(ask, items))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def extract_choice(self, question: str, options: Mapping[str, str], prediction: str) -> JudgeResult:
        """Which option a reply chose, asked when the rules (`mcq.extract_choice`) found none.

        Returns:
            `JudgeResult`: `value` is an option letter, or `NO_OPTION` when the judge says the reply picks none.
        """
        listed = "\n".join(f"{letter}. {text}" for letter, text in options.items())
        prompt = (
            "You check which option of a multiple-choice question a model's reply chose.\n"
            f"Question: {question}\nOptions:\n{listed}\nModel reply: {prediction}\n\n"
            f"Answer with the letter of the option the reply chose and nothing else. If the reply chooses no option, "
            f"or more than one, answer {NO_OPTION}."
        )
        # VLMEvalKit reads the judge's reply with the same rule, which reads a lone "Z" as NO_OPTION.
        return self._parse(self.ask(prompt), lambda reply: extract_choice(reply, options))

    def extract_yes_no(self, question: str, prediction: str) -> JudgeResult:
        """Whether a reply to a yes/no question means yes or no, asked when the rules gave "Unknown".

        Returns:
            `JudgeResult`: `value` is "Yes", "No", or "Unknown" when the judge itself says it cannot tell.
        """
        prompt = (
            "You check whether a model's reply to a yes/no question means yes or no.\n"
            f"Question: {question}\nModel reply: {prediction}\n\n"
            "Answer with one word: Yes, No, or Unknown if the reply means neither."
        )

        def read(reply: str) -> str | None:
            word = extract_yes_no(reply)
            if word != UNKNOWN:
                return word
            return UNKNOWN if re.fullmatch(r"\W*unknown\W*", reply.lower()) else None

        return self._parse(self.ask(prompt), read)

    def score_open_answer(self, question: str, answer: str, prediction: str) -> JudgeResult:
        """MMVet-style grading of an open answer against the reference.

        Returns:
            `JudgeResult`: `value` is the score in [0, 1]; a reply whose first number is missing or outside [0, 1]
            fails with kind "unparseable" / "out_of_range".
        """
        prompt = (
            "You grade a model's answer to a question against the reference answer.\n"
            f"Question: {question}\nReference answer: {answer}\nModel answer: {prediction}\n\n"
            "Give a correctness score from 0.0 (wrong) to 1.0 (fully correct); partly correct answers get a score in "
            "between. Reply with the number only."
        )
        result = self.ask(prompt)
        if not result.ok:
            return result
        number = re.search(r"[-+]?(?:\d+\.?\d*|\.\d+)", result.value)
        if number is None:
            return self._fail("unparseable", f"no number in judge reply {result.value[:80]!r}")
        score = float(number.group())
        if not 0.0 <= score <= 1.0:
            return self._fail("out_of_range", f"judge score {score} is outside [0, 1]")
        return JudgeResult(ok=True, value=score, cached=result.cached)

    def _parse(self, result: JudgeResult, read: Callable[[str], Any]) -> JudgeResult:
        """Turn a reply into a value with `read` (None = unreadable); transport failures pass through."""
        if not result.ok:
            return result
        value = read(result.value)
        if value is None:
            return self._fail("unparseable", f"cannot read judge reply {result.value[:80]!r}")
        return JudgeResult(ok=True, value=value, cached=result.cached)
