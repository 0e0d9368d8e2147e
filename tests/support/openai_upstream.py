"""A local OpenAI-compatible server generating with a tiny random model, and a uvicorn thread runner.

``TinyOpenAIServer`` answers ``/v1/chat/completions`` and ``/v1/completions``, streaming (server-sent
events) and not, with real ``logprobs``/``top_logprobs`` computed from the model's raw logits of a
``transformers`` ``generate()`` (``output_logits=True``): greedy decoding, so the same request gets
the same bytes. Responses are written compactly (as vLLM, SGLang and FastAPI do) with a fixed id and
``created``, so that two identical requests get identical bodies. ``logprobs`` is ``null`` in every
choice and chunk unless the request asked for it, as in OpenAI's API.

A request whose ``model`` is ``fail-500`` is answered 500 with an OpenAI-style error body. The server
records the generated token ids and full log-probabilities of every generation (``generations``)
so tests can compare what passed through a proxy with the model's exact distributions.

``ServerThread(app).start()`` runs any ASGI app with uvicorn on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.tiny_models import EOS_TOKEN_ID, build_model, build_tokenizer

CREATED = 1_700_000_000
MODEL_NAME = "tiny-llama"


def dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Generation:
    """One generation: the prompt ids, generated ids and each step's full log-probabilities [T, V]."""

    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: torch.Tensor  # [T, V] log-softmax of the raw logits, float64
    finish_reason: str


class TinyOpenAIServer:
    """The OpenAI API over a tiny random llama (greedy generation, deterministic)."""

    def __init__(self, *, seed: int = 0) -> None:
        self.model = build_model("llama", seed=seed)
        self.tokenizer = build_tokenizer()
        self.vocab_size = int(self.model.config.vocab_size)
        self.generations: list[Generation] = []
        self.headers: list[dict[str, str]] = []  # each request's headers, as received
        self.chunk_delay_s = 0.0  # a pause after each streamed chat token (a slow engine)
        self.lock = threading.Lock()

    # --- generation ------------------------------------------------------------------------------
    def generate(self, prompt: str, max_tokens: int) -> Generation:
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        with self.lock, torch.no_grad():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
        new = out.sequences[0, ids.shape[1] :].tolist()
        logits = torch.stack([step[0] for step in out.logits]).to(torch.float64)
        finish = "stop" if new and new[-1] == EOS_TOKEN_ID else "length"
        generation = Generation(ids[0].tolist(), new, torch.log_softmax(logits, dim=-1), finish)
        with self.lock:
            self.generations.append(generation)
        return generation

    def token_text(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id]))

    def _top(self, row: torch.Tensor, n: int) -> list[tuple[int, float]]:
        values, indices = torch.topk(row, n)
        return [(int(i), float(v)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]

    def _chat_entry(self, generation: Generation, step: int, top_n: int) -> dict[str, Any]:
        token = generation.token_ids[step]
        row = generation.logprobs[step]
        text = self.token_text(token)
        return {
            "token": text,
            "logprob": float(row[token]),
            "bytes": list(text.encode("utf-8")),
            "top_logprobs": [
                {
                    "token": self.token_text(i),
                    "logprob": lp,
                    "bytes": list(self.token_text(i).encode("utf-8")),
                }
                for i, lp in self._top(row, top_n)
            ],
        }

    def _completion_logprobs(
        self, generation: Generation, steps: range, top_n: int, offset: int
    ) -> dict[str, Any]:
        tokens, values, tops, offsets = [], [], [], []
        for step in steps:
            token = generation.token_ids[step]
            row = generation.logprobs[step]
            text = self.token_text(token)
            tokens.append(text)
            values.append(float(row[token]))
            tops.append({self.token_text(i): lp for i, lp in self._top(row, top_n)})
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

    # --- HTTP ------------------------------------------------------------------------------------
    async def _body(self, request: Request) -> Any:
        """The request's JSON body (its headers recorded), or the answer to give instead: 400 for a
        body that is not JSON, 500 for the model ``fail-500``."""
        self.headers.append(dict(request.headers))
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _json({"error": {"message": "not JSON", "type": "invalid_request_error"}}, status=400)
        if body.get("model") == "fail-500":
            return _failure()
        return body

    async def chat(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in body["messages"]) + "assistant:"
        generation = self.generate(prompt, int(body.get("max_tokens") or 16))
        top_n = int(body.get("top_logprobs") or 0) if body.get("logprobs") else -1
        text = "".join(self.token_text(t) for t in generation.token_ids)
        choices = []
        for index in range(int(body.get("n") or 1)):
            logprobs = (
                {
                    "content": [
                        self._chat_entry(generation, s, top_n) for s in range(len(generation.token_ids))
                    ]
                }
                if top_n >= 0
                else None
            )
            choices.append(
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": logprobs,
                    "finish_reason": generation.finish_reason,
                }
            )
        usage = _usage(generation)
        if body.get("stream"):
            return _sse(self._chat_chunks(body, generation, top_n, len(choices)))
        return _json(
            {
                "id": "chatcmpl-tiny",
                "object": "chat.completion",
                "created": CREATED,
                "model": body.get("model", MODEL_NAME),
                "choices": choices,
                "usage": usage,
            }
        )

    async def _chat_chunks(
        self, body: dict[str, Any], generation: Generation, top_n: int, n: int
    ) -> AsyncIterator[bytes]:
        head = {
            "id": "chatcmpl-tiny",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": body.get("model", MODEL_NAME),
        }
        for index in range(n):
            first = {
                "index": index,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            yield _event({**head, "choices": [first]})
        for step, token in enumerate(generation.token_ids):
            for index in range(n):
                logprobs = {"content": [self._chat_entry(generation, step, top_n)]} if top_n >= 0 else None
                choice = {
                    "index": index,
                    "delta": {"content": self.token_text(token)},
                    "logprobs": logprobs,
                    "finish_reason": None,
                }
                yield _event({**head, "choices": [choice]})
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        for index in range(n):
            last = {"index": index, "delta": {}, "logprobs": None, "finish_reason": generation.finish_reason}
            yield _event({**head, "choices": [last]})
        yield b"data: [DONE]\n\n"

    async def completions(self, request: Request) -> Response:
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        generation = self.generate(str(body["prompt"]), int(body.get("max_tokens") or 16))
        top_n = int(body["logprobs"]) if body.get("logprobs") is not None else -1
        steps = range(len(generation.token_ids))
        text = "".join(self.token_text(t) for t in generation.token_ids)
        head = {
            "id": "cmpl-tiny",
            "object": "text_completion",
            "created": CREATED,
            "model": body.get("model", MODEL_NAME),
        }
        if body.get("stream"):
            return _sse(self._completion_chunks(head, generation, top_n))
        logprobs = self._completion_logprobs(generation, steps, top_n, 0) if top_n >= 0 else None
        choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": generation.finish_reason}
        return _json({**head, "choices": [choice], "usage": _usage(generation)})

    async def _completion_chunks(
        self, head: dict[str, Any], generation: Generation, top_n: int
    ) -> AsyncIterator[bytes]:
        offset = 0
        last = len(generation.token_ids) - 1
        for step, token in enumerate(generation.token_ids):
            text = self.token_text(token)
            logprobs = (
                self._completion_logprobs(generation, range(step, step + 1), top_n, offset)
                if top_n >= 0
                else None
            )
            offset += len(text)
            finish = generation.finish_reason if step == last else None
            yield _event(
                {
                    **head,
                    "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
                }
            )
        yield b"data: [DONE]\n\n"

    async def models(self, request: Request) -> Response:
        return _json({"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "created": CREATED}]})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
            ]
        )


def _usage(generation: Generation) -> dict[str, int]:
    prompt, completion = len(generation.prompt_ids), len(generation.token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _json(document: Any, status: int = 200) -> Response:
    return Response(dumps(document), status_code=status, media_type="application/json")


def _failure() -> Response:
    error = {"error": {"message": "the engine failed", "type": "server_error", "param": None, "code": None}}
    return _json(error, status=500)


def _event(document: Any) -> bytes:
    return b"data: " + dumps(document) + b"\n\n"


def _sse(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream")


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 (a free port) in a daemon thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", server_header=False, date_header=False
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=timeout)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
