"""``/api/v1/runs`` answered by the fast layer (``server/fast_runs.py``) is byte for byte what the
route answers, and whatever the layer does not read plainly reaches the route."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from corevital.server.app import create_app
from corevital.server.config import Limits
from corevital.server.fast_runs import Unusual, plain_query
from corevital.sinks.sqlite import SQLiteStore
from tests.support.served import serve_config, served_store


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Callable[[str], Path]
) -> Iterator[TestClient]:
    db = served_store(tmp_path_factory.mktemp, tiny_model_dir)
    store = SQLiteStore(db, read_only=True)
    config = serve_config(db, limits=Limits(cache_ttl_s=0))
    with TestClient(create_app(store, config)) as client:
        yield client
    store.close()


QUERIES = [
    "",
    "limit=2",
    "limit=3&sort=risk",
    "limit=2&order=asc",
    "limit=2&sort=risk&order=asc&min_risk=0.1",
    "model_id=google/flan-t5-large&limit=1",
    "flag=attention_collapse&flag=mid_layer_anomaly_detected",
    "min_risk=0.2&max_risk=0.99&sort=risk",
    "since=2026-03-01T04:59:00&until=2030-01-01&limit=2",
    "since=2026-03-01&limit=2",
    "prompt_hash=nothing",
    "limit=2&unknown=kept",
]


@pytest.mark.parametrize("query", QUERIES)
def test_the_fast_layer_answers_as_the_route_does(client: TestClient, query: str) -> None:
    plain_query(query.encode())  # the layer takes it
    pages: list[list[bytes]] = []
    for extra in ("", "&db_path="):  # an empty db_path is accepted, and leaves the request to the route
        target = f"/api/v1/runs?{query}{extra}"
        seen: list[bytes] = []
        while target and len(seen) < 10:
            response = client.get(target)
            assert response.status_code == 200 and response.headers["content-type"] == "application/json"
            seen.append(response.content.replace(b"&db_path=", b""))
            target = response.json()["next_url"]
        pages.append(seen)
    assert pages[0] == pages[1]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=501",
        "limit=050",
        "limit=2&limit=3",
        "min_risk=nan",
        "min_risk=1e-3",
        "sort=name",
        "order=",
        "flag=bogus",
        "flag=nan&flag=nan&flag=nan&flag=nan&flag=nan&flag=nan",
        "since=yesterday",
        "cursor=W10",
        "db_path=/etc/passwd",
        "model_id=" + "m" * 600,
    ],
)
def test_anything_else_is_left_to_the_route(client: TestClient, query: str) -> None:
    with pytest.raises(Unusual):
        plain_query(query.encode())
    response = client.get(f"/api/v1/runs?{query}")
    valid = query in ("limit=050", "min_risk=1e-3", "limit=2&limit=3")  # spellings the route takes
    assert response.status_code == 200 if valid else response.status_code in (400, 422)
    assert set(response.json()) in ({"runs", "next_cursor", "next_url"}, {"detail"}, {"detail", "errors"})
