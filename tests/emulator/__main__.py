"""`python -m tests.emulator --kubeconfig K --port-base P`: the emulated mesh, for a local demo.

Prints one JSON line with the URL map (every hop's base URL, the URL templates, the host map),
then serves until interrupted (SIGINT / SIGTERM). Faults, counters, routes: the control API on
the last port (see tests/emulator/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from lightkube import KubeConfig
from lightkube.config.kubeconfig import SingleConfig

from .mesh import PORT_ORDER, Emulator
from .routing import SYSTEM_NAMESPACE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, "
                        "~/.kube/config or the in-cluster service account)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port-base", type=int, default=0,
                        help=f"hop i listens on P+i ({', '.join(PORT_ORDER)}); "
                             "0: ephemeral ports")
    parser.add_argument("--system-namespace", default=SYSTEM_NAMESPACE)
    parser.add_argument("--map", action="append", default=[], metavar="HOST=URL",
                        help="deliver to HOST (fnmatch pattern) at URL instead, e.g. "
                             "'*.stage.svc.cluster.local=http://127.0.0.1:9000'; repeatable")
    parser.add_argument("--retries", type=int, default=2,
                        help="delivery retries where spec.delivery has none")
    parser.add_argument("--retry-backoff", type=float, default=0.05,
                        help="seconds between delivery retries where spec.delivery has none")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> None:
    host_map = {}
    for item in args.map:
        pattern, sep, url = item.partition("=")
        if not sep:
            raise SystemExit(f"--map {item!r}: expected HOST=URL")
        host_map[pattern] = url
    kubeconfig = (KubeConfig.from_file(args.kubeconfig) if args.kubeconfig
                  else KubeConfig.from_env())
    config: KubeConfig | SingleConfig | None = kubeconfig
    if args.context:
        config = kubeconfig.get(context_name=args.context)
        if config is None:
            raise SystemExit(f"--context {args.context}: not in the kubeconfig")
    emulator = Emulator(config, host=args.host, port_base=args.port_base,
                        system_namespace=args.system_namespace, host_map=host_map,
                        retries=args.retries, retry_backoff=args.retry_backoff)
    await emulator.start()
    print(json.dumps(emulator.url_map()), flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await emulator.stop()


if __name__ == "__main__":
    parsed = parse_args()
    logging.basicConfig(level=logging.DEBUG if parsed.verbose else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(parsed))
