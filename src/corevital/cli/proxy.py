"""``corevital proxy``: watch an OpenAI-compatible server through a reverse proxy (docs/proxy.md)."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import logging
from urllib.parse import urlsplit

from corevital.cli.args import OUTPUT_SETTINGS, RUN_FLAGS, add_run_flags, settings_overrides
from corevital.cli.common import configure_logging
from corevital.config import load_settings
from corevital.errors import ConfigError, NotAvailableError

DEFAULT_LISTEN = "127.0.0.1:8322"
MAX_TOP_LOGPROBS = 20  # the OpenAI API's limit, which engines follow


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) as a host and a port; a bad one is a ConfigError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"--listen takes HOST:PORT (got {value!r})")
    number = int(port)
    if not 0 < number < 65536:
        raise ConfigError(f"--listen: port {number} is not between 1 and 65535")
    return host.strip("[]"), number


def check_upstream(url: str) -> str:
    """An http(s) URL with a host; credentials in it are refused (they would end up in logs)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--upstream takes an http:// or https:// URL (got {url!r})")
    if parts.username or parts.password:
        raise ConfigError("--upstream: put credentials in the clients' Authorization header, not in the URL")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_proxy(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    if not _is_loopback(host) and not args.allow_remote:
        raise ConfigError(
            f"--listen {args.listen}: the proxy listens on loopback unless --allow-remote is given "
            "(it forwards your clients' API keys)"
        )
    upstream = check_upstream(args.upstream)
    if not 1 <= args.top_logprobs <= MAX_TOP_LOGPROBS:
        raise ConfigError(
            f"--top-logprobs must be between 1 and {MAX_TOP_LOGPROBS} (got {args.top_logprobs})"
        )
    if args.stop_on_risk_above is not None and not 0.0 <= args.stop_on_risk_above <= 1.0:
        raise ConfigError(f"--stop-on-risk-above must be between 0 and 1 (got {args.stop_on_risk_above})")
    if args.vocab_size is not None and args.vocab_size < 2:
        raise ConfigError(f"--vocab-size must be at least 2 (got {args.vocab_size})")
    missing = [name for name in ("httpx", "starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise NotAvailableError(
            f"corevital proxy needs {' and '.join(missing)}: pip install 'corevital[proxy]'"
        )
    settings = load_settings(settings_overrides(args), config_file=args.config)
    configure_logging(settings.log_level)
    if settings.log_level != "DEBUG":  # httpx logs every request's URL at INFO
        logging.getLogger("httpx").setLevel(logging.WARNING)

    import uvicorn

    from corevital.analysis.policies import StopOnRepetition, StopOnRiskAbove, StopPolicy
    from corevital.exporters.base import open_outputs
    from corevital.proxy.reports import LogprobReporter
    from corevital.proxy.server import ProxyApp

    outputs = open_outputs(settings)  # a bad sink fails now, before listening
    reporter = LogprobReporter(settings, outputs=outputs, vocab_size=args.vocab_size)
    policies: list[StopPolicy] = []
    if args.stop_on_repetition:
        policies.append(StopOnRepetition())
    if args.stop_on_risk_above is not None:
        policies.append(StopOnRiskAbove(args.stop_on_risk_above))
    proxy = ProxyApp(upstream, reporter, top_logprobs=args.top_logprobs, policies=policies)
    print(f"Proxying http://{args.listen} -> {upstream} (reports: {'+'.join(settings.sink)})", flush=True)
    uvicorn.run(
        proxy.app(),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,  # an access log would be the place a key in a query string leaks
        server_header=False,  # the upstream's Server and Date headers are passed on
        date_header=False,
    )
    stats = proxy.stats
    print(
        f"{stats.requests} request(s), {stats.reports} report(s) written, "
        f"{stats.failures} CoreVital failure(s), {stats.dropped} dropped, "
        f"{stats.upstream_errors} upstream unreachable",
        flush=True,
    )
    chunk, request = stats.percentiles("chunk"), stats.percentiles("request")
    if request["n"]:
        print(
            f"added latency: per request p50 {request['p50']:.3f} ms, p95 {request['p95']:.3f} ms "
            f"({int(request['n'] or 0)} observed); per streamed chunk "
            + (
                f"p50 {chunk['p50']:.3f} ms, p95 {chunk['p95']:.3f} ms ({int(chunk['n'] or 0)} chunks)"
                if chunk["n"]
                else "none streamed"
            ),
            flush=True,
        )
    return 0


def configure(name: str, parser: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``proxy``."""
    parser.add_argument(
        "--upstream", required=True, metavar="URL", help="The OpenAI-compatible server (http://host:port)."
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"Address to listen on (default {DEFAULT_LISTEN}; loopback unless --allow-remote).",
    )
    parser.add_argument(
        "--allow-remote",
        "--allow_remote",
        dest="allow_remote",
        action="store_true",
        help="Allow a --listen address that is not loopback.",
    )
    parser.add_argument(
        "--top-logprobs",
        "--top_logprobs",
        dest="top_logprobs",
        type=int,
        default=MAX_TOP_LOGPROBS,
        metavar="N",
        help=f"Alternatives asked per token when the client asks none (default {MAX_TOP_LOGPROBS}).",
    )
    parser.add_argument(
        "--vocab-size",
        "--vocab_size",
        dest="vocab_size",
        type=int,
        metavar="N",
        help="The model's vocabulary size: gives each step's entropy an upper bound as well.",
    )
    parser.add_argument(
        "--stop-on-repetition",
        "--stop_on_repetition",
        dest="stop_on_repetition",
        action="store_true",
        help="End a stream as soon as a repetition loop forms (finish reason corevital:repetition_loop).",
    )
    parser.add_argument(
        "--stop-on-risk-above",
        "--stop_on_risk_above",
        dest="stop_on_risk_above",
        type=float,
        metavar="R",
        help="End a stream when its running risk exceeds R (finish reason corevital:risk_above).",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file of settings (see docs/configuration.md).")
    taken = set(OUTPUT_SETTINGS) | {"log_level", "topk", "topk_mass_k", "thresholds", "calibration"}
    add_run_flags(parser, exclude=(*{f.setting for f in RUN_FLAGS if f.setting not in taken}, "perf"))
    parser.set_defaults(handler=cmd_proxy)
