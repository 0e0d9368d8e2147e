"""The dashboard's static files travel in the wheel, the page references only files that exist, and
the page and its routes answer with the right headers (the page's CSP; the API's stays 'none').

The wheel is built from a copy of the source tree (pip, no build isolation: no download), so the
check covers setuptools' package-data globs for the nested ``server/static`` directories.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from corevital.server.dashboard import static_files

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "src" / "corevital" / "server" / "static"


def _static_paths() -> set[str]:
    return {
        path.relative_to(STATIC).as_posix()
        for path in STATIC.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_wheel_holds_every_static_file(corevital_wheel: Path) -> None:
    with zipfile.ZipFile(corevital_wheel) as archive:
        names = {name for name in archive.namelist() if name.startswith("corevital/server/static/")}
    expected = {f"corevital/server/static/{path}" for path in _static_paths()}
    assert expected <= names, sorted(expected - names)
    assert "corevital/server/static/vendor/uplot/uPlot.iife.min.js" in names
    assert "corevital/server/static/vendor/uplot/LICENSE" in names


def test_served_files_and_references() -> None:
    files = static_files()
    assert set(files) == {path for path in _static_paths() if not path.endswith(".pyc")}
    index = files["index.html"][0].decode()
    assert "<script>" not in index and "style=" not in index  # no inline script or style
    referenced = re.findall(r'(?:src|href)="/static/([^"]+)"', index)
    assert referenced and all(path in files for path in referenced), referenced
    for name, (body, _) in files.items():
        if name.endswith(".js") and not name.startswith("vendor/"):
            text = body.decode()
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text, name
            assert "http://" not in text and "https://" not in text, name
            for target in re.findall(r'from "\./([^"]+)"', text):
                folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
                assert f"{folder}{target}" in files, (name, target)


def test_page_headers_and_the_dashboard_routes() -> None:
    """The six original traces in a memory store behind the real application."""
    from fastapi.testclient import TestClient

    from corevital.report.encoding import report_from_json
    from corevital.server.app import create_app
    from corevital.server.config import ServeConfig
    from corevital.server.dashboard import CSP
    from corevital.sinks.base import MemorySink
    from tests.support.served import original_files

    memory = MemorySink()
    for file in original_files():
        memory.write(report_from_json(file.read_text(encoding="utf-8")))
    trace_id = memory.list()[0].trace_id
    with TestClient(create_app(memory, ServeConfig(store_label="memory"))) as client:
        for path in ("/", "/static/app.js", "/static/vendor/uplot/uPlot.iife.min.js", "/static/style.css"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-security-policy"] == CSP
            assert "'unsafe-inline'" not in CSP and "http" not in CSP
            assert response.headers["x-content-type-options"] == "nosniff"
        assert client.get("/").headers["content-type"].startswith("text/html")
        assert (
            client.get("/static/app.js")
            .headers["content-type"]
            .startswith(("text/javascript", "application/javascript"))
        )
        assert client.get("/static/../dashboard.py").status_code == 404
        assert client.get("/static/missing.js").json() == {"detail": "no such file"}
        api = client.get(f"/api/v1/runs/{trace_id}/view")
        assert api.status_code == 200 and api.headers["content-security-policy"].startswith(
            "default-src 'none'"
        )
        assert client.get(f"/api/v1/runs/{trace_id}/layers").json()["heat_maps"]
        html = client.get(f"/api/v1/runs/{trace_id}/report.html")
        assert html.status_code == 200 and "attachment" in html.headers["content-disposition"]
        assert client.get("/api/v1/runs/nope/view").status_code == 404
        histogram = client.get("/api/v1/risk-histogram").json()
        assert histogram["runs"] == 6 and sum(histogram["counts"]) + histogram["unscored"] == 6
        assert client.get("/api/v1/risk-histogram", params={"flag": "bogus"}).status_code == 400
        assert client.get("/api/v1/risk-histogram", params={"min_risk": "0.9"}).json()["runs"] <= 6
