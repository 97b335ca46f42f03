"""Test helpers: a small generated TSV in each benchmark's VLMEvalKit format, and a local judge server.

`write_benchmark(name, root)` writes `<root>/<name>.tsv` (3-6 rows, pictures 28-56 pixels square drawn by the demo
set's `Picture`; a cell like "0" reuses row 0's picture, as VLMEvalKit's files do). `JudgeServer` speaks
`/v1/chat/completions` on 127.0.0.1 and answers each request with a function of the prompt.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd

from vlmeval_ivcp.datasets.demo import Picture
from vlmeval_ivcp.datasets.tsv import atomic_write_bytes, encode_image_to_base64, tsv_path
from vlmeval_ivcp.evaluation.judge import Judge

RED_CIRCLE = Picture("circle", "red", "white", 28)
BLUE_SQUARE = Picture("square", "blue", "grey", 32)
GREEN_TRIANGLE = Picture("triangle", "green", "black", 40)
YELLOW_DIAMOND = Picture("diamond", "yellow", "white", 56)

# One list of rows per benchmark; `image` is a Picture, or the index (as text) of an earlier row to reuse.
BENCHMARK_ROWS: dict[str, list[dict]] = {
    "MME": [
        {"index": 0, "image": RED_CIRCLE, "image_path": "existence/1.png", "category": "existence",
         "question": "Is there a red circle in the image? Please answer yes or no.", "answer": "Yes"},
        {"index": 1, "image": "0", "image_path": "existence/1.png", "category": "existence",
         "question": "Is there a blue square in the image? Please answer yes or no.", "answer": "No"},
        {"index": 2, "image": BLUE_SQUARE, "image_path": "count/2.png", "category": "count",
         "question": "Is there one shape in the image? Please answer yes or no.", "answer": "Yes"},
        {"index": 3, "image": "2", "image_path": "count/2.png", "category": "count",
         "question": "Are there two shapes in the image? Please answer yes or no.", "answer": "No"},
        {"index": 4, "image": GREEN_TRIANGLE, "image_path": "commonsense_reasoning/3.png",
         "category": "commonsense_reasoning",
         "question": "Could this shape be drawn with three lines? Please answer yes or no.", "answer": "Yes"},
        {"index": 5, "image": "4", "image_path": "commonsense_reasoning/3.png", "category": "commonsense_reasoning",
         "question": "Does this shape have curved sides? Please answer yes or no.", "answer": "No"},
    ],
    "POPE": [
        {"index": 0, "image": RED_CIRCLE, "question": "Is there a circle in the image?", "answer": "Yes",
         "category": "adversarial"},
        {"index": 1, "image": "0", "question": "Is there a square in the image?", "answer": "No",
         "category": "adversarial"},
        {"index": 2, "image": BLUE_SQUARE, "question": "Is there a square in the image?", "answer": "Yes",
         "category": "popular"},
        {"index": 3, "image": "2", "question": "Is there a dog in the image?", "answer": "No", "category": "popular"},
        {"index": 4, "image": GREEN_TRIANGLE, "question": "Is there a triangle in the image?", "answer": "Yes",
         "category": "random"},
        {"index": 5, "image": "4", "question": "Is there a car in the image?", "answer": "No", "category": "random"},
    ],
    # Index fields 3, 4, 5 are set, figure and question ids.
    "HallusionBench": [
        {"index": "VS_chart_0_1_0_0", "image": RED_CIRCLE, "question": "Is the shape red?", "answer": "Yes",
         "category": "VS", "l2-category": "chart"},
        {"index": "VS_chart_0_1_0_1", "image": "VS_chart_0_1_0_0", "question": "Is the shape a square?",
         "answer": "No", "category": "VS", "l2-category": "chart"},
        {"index": "VS_chart_0_1_1_0", "image": BLUE_SQUARE, "question": "Is the shape red?", "answer": "No",
         "category": "VS", "l2-category": "chart"},
        {"index": "VD_map_0_2_0_0", "image": YELLOW_DIAMOND, "question": "Is the background white?",
         "answer": "Yes", "category": "VD", "l2-category": "map"},
    ],
    "TextVQA_VAL": [
        {"index": 0, "image": RED_CIRCLE, "question": "What color is the circle?", "answer": str(["red"] * 10)},
        {"index": 1, "image": BLUE_SQUARE, "question": "What does the sign say?",
         "answer": str(["stop"] * 2 + ["halt"] * 8)},
        {"index": 2, "image": GREEN_TRIANGLE, "question": "What number is shown?", "answer": str(["10"] * 10)},
    ],
    "ChartQA_TEST": [
        {"index": 0, "image": RED_CIRCLE, "question": "What is the highest value?", "answer": "12"},
        {"index": 1, "image": BLUE_SQUARE, "question": "What share is blue?", "answer": "45%"},
        {"index": 2, "image": GREEN_TRIANGLE, "question": "Is the trend rising?", "answer": "Yes"},
    ],
    "DocVQA_VAL": [
        {"index": 0, "image": RED_CIRCLE, "question": "What kind of document is this?",
         "answer": str(["Invoice", "bill"])},
        {"index": 1, "image": BLUE_SQUARE, "question": "In which year was it issued?", "answer": str(["2019"])},
        {"index": 2, "image": GREEN_TRIANGLE, "question": "What is the last line?", "answer": str(["total amount"])},
    ],
    "InfoVQA_VAL": [
        {"index": 0, "image": RED_CIRCLE, "question": "What share of people agree?", "answer": str(["42%"])},
        {"index": 1, "image": BLUE_SQUARE, "question": "Which continent is shown?", "answer": str(["asia"])},
        {"index": 2, "image": YELLOW_DIAMOND, "question": "How many icons are there?", "answer": str(["five"])},
    ],
    "GQA_TestDev_Balanced": [
        {"index": 0, "image": RED_CIRCLE, "question": "On which side is the circle?", "answer": "left"},
        {"index": 1, "image": BLUE_SQUARE, "question": "What is the square on?", "answer": "table"},
        {"index": 2, "image": GREEN_TRIANGLE, "question": "Is the triangle blue?", "answer": "no"},
    ],
    "OCRBench": [
        {"index": 0, "image": RED_CIRCLE, "question": "what is written in the image?", "answer": str(["STOP"]),
         "category": "Regular Text Recognition"},
        {"index": 1, "image": BLUE_SQUARE, "question": "Please write out the expression of the formula in the image "
         "using LaTeX format.", "answer": str(["x^{2}+1"]),
         "category": "Handwritten Mathematical Expression Recognition"},
        {"index": 2, "image": GREEN_TRIANGLE, "question": "what is the drink on the menu?", "answer": str(["coffee"]),
         "category": "Scene Text-centric VQA"},
    ],
    "MMVet": [
        {"index": 0, "image": RED_CIRCLE, "question": "What are the roots of the equation?", "answer": "-1<AND>-5",
         "category": "rec,math"},
        {"index": 1, "image": BLUE_SQUARE, "question": "How many sides does the shape have?", "answer": "4",
         "category": "math"},
        {"index": 2, "image": GREEN_TRIANGLE, "question": "What is the shape?", "answer": "triangle",
         "category": "rec"},
    ],
    "MathVista_MINI": [
        {"index": 1, "image": RED_CIRCLE, "question": "Hint: Please answer the question and provide the correct "
         "option letter, e.g., A, B, C, D, at the end.\nQuestion: What fraction of the circle is red?\n"
         "Choices:\n(A) 1/4\n(B) 1\n(C) 1/2\n(D) 3/4", "answer": "1", "question_type": "multi_choice",
         "answer_type": "text", "choices": str(["1/4", "1", "1/2", "3/4"]), "precision": None, "answer_option": "B",
         "task": "figure question answering", "skills": str(["arithmetic reasoning"])},
        {"index": 2, "image": BLUE_SQUARE, "question": "Hint: Please answer the question requiring an integer "
         "answer.\nQuestion: How many corners does the shape have?", "answer": "4", "question_type": "free_form",
         "answer_type": "integer", "choices": None, "precision": None, "answer_option": None,
         "task": "geometry problem solving", "skills": str(["geometry reasoning", "arithmetic reasoning"])},
        {"index": 3, "image": GREEN_TRIANGLE, "question": "Hint: Please answer the question requiring a "
         "floating-point number with one decimal place.\nQuestion: What fraction of the picture is green?",
         "answer": "0.3", "question_type": "free_form", "answer_type": "float", "choices": None, "precision": "1.0",
         "answer_option": None, "task": "figure question answering", "skills": str(["arithmetic reasoning"])},
        {"index": 4, "image": YELLOW_DIAMOND, "question": "Question: Which direction does the top corner point?",
         "answer": "north", "question_type": "free_form", "answer_type": "text", "choices": None, "precision": None,
         "answer_option": None, "task": "geometry problem solving", "skills": str(["geometry reasoning"])},
    ],
    "LLaVABench": [
        {"index": 0, "image": RED_CIRCLE, "question": "What is in the picture?", "caption": "A red circle on white.",
         "gpt4_ans": "A red circle on a white background.", "category": "conv"},
        {"index": 1, "image": BLUE_SQUARE, "question": "Describe the picture in detail.",
         "caption": "A blue square on grey.", "gpt4_ans": "A blue square centred on a grey background.",
         "category": "detail"},
        {"index": 2, "image": GREEN_TRIANGLE, "question": "Why might someone draw this?",
         "caption": "A green triangle on black.", "gpt4_ans": "To illustrate a simple geometric shape.",
         "category": "complex"},
    ],
}  # fmt: skip


def benchmark_frame(name: str) -> pd.DataFrame:
    """The rows of `BENCHMARK_ROWS[name]` with pictures encoded as base64 PNG."""
    records = []
    for row in BENCHMARK_ROWS[name]:
        image = row["image"]
        records.append({**row, "image": encode_image_to_base64(image.draw()) if isinstance(image, Picture) else image})
    return pd.DataFrame.from_records(records)


def write_benchmark(name: str, root: str | Path) -> Path:
    """Writes `<root>/<name>.tsv` from `BENCHMARK_ROWS[name]` and returns its path."""
    path = tsv_path(name, root)
    atomic_write_bytes(path, benchmark_frame(name).to_csv(sep="\t", index=False, lineterminator="\n").encode())
    return path


Responder = Callable[[list[dict]], str | int]


class JudgeServer(ThreadingHTTPServer):
    """A local OpenAI-compatible chat server: `respond(messages)` gives the reply text, or an HTTP error status.

    Every request body is kept in `requests`.
    """

    daemon_threads = True

    def __init__(self, respond: Responder):
        super().__init__(("127.0.0.1", 0), _ChatHandler)
        self.respond = respond
        self.requests: list[dict] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def judge(self) -> Judge:
        """A `Judge` on this server that does not retry and keeps its cache in memory."""
        return Judge("judge-model", base_url=self.base_url, api_key="sk-local-test", timeout=5.0, max_retries=0)


class _ChatHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        server: JudgeServer = self.server
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append(request)
        reply = server.respond(request["messages"])
        if isinstance(reply, int):
            status, body = reply, {"error": {"message": f"scripted HTTP {reply}"}}
        else:
            status = 200
            body = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": request["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            }
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@contextmanager
def judge_server(respond: Responder) -> Iterator[JudgeServer]:
    """A running `JudgeServer`, shut down on exit."""
    server = JudgeServer(respond)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
