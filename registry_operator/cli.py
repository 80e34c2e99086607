"""Command line entry point: `registry-operator <command>`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from registry_operator import __version__


def _cmd_version(_: argparse.Namespace) -> int:
    print(__version__)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from registry_operator.operator import run_operator

    return run_operator(controller_spec=args.controllers, kubeconfig=args.kubeconfig)


def _cmd_authn_server(args: argparse.Namespace) -> int:
    from registry_operator.operator import run_authn_server

    return run_authn_server(namespace=args.namespace, port=args.port, kubeconfig=args.kubeconfig)


def _cmd_node_agent(args: argparse.Namespace) -> int:
    from registry_operator.nodeagent.cli import run_from_args

    return run_from_args(args)


def _cmd_dev(args: argparse.Namespace) -> int:
    # Imported lazily: the dev cluster is tooling and must not load in the operator image's hot path.
    from registry_operator.devenv.run import run_dev

    return run_dev(with_operator=not args.no_operator)


def _cmd_manifests(args: argparse.Namespace) -> int:
    from registry_operator.api.crd import write_crd_files

    changed = write_crd_files(args.output_dir)
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print(f"{args.output_dir}: up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="registry-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("version", help="print the operator version").set_defaults(func=_cmd_version)

    run = sub.add_parser("run", help="run the operator (settings come from environment variables)")
    run.add_argument(
        "--controllers",
        default="*",
        help="controllers to run: '*' (all), a list 'caroot,imageregistry', or '*,-imagebuildenv'",
    )
    run.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG, else in-cluster config")
    run.set_defaults(func=_cmd_run)

    authn = sub.add_parser(
        "authn-server", help="registry pod sidecar: check logins for docker_auth's ext_auth"
    )
    authn.add_argument(
        "--namespace", default=os.environ.get("NAMESPACE", ""), help="the registry's namespace"
    )
    authn.add_argument("--port", type=int, default=5002, help="port on 127.0.0.1 (default: %(default)s)")
    authn.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG, else in-cluster config")
    authn.set_defaults(func=_cmd_authn_server)

    from registry_operator.nodeagent.cli import add_arguments as add_node_agent_arguments

    node_agent = sub.add_parser(
        "node-agent", help="DaemonSet: make this node's container runtimes trust and resolve the registries"
    )
    add_node_agent_arguments(node_agent)
    node_agent.set_defaults(func=_cmd_node_agent)

    dev = sub.add_parser("dev", help="run a local control plane (and the operator) until Ctrl-C")
    dev.add_argument("--no-operator", action="store_true", help="start only the local cluster")
    dev.set_defaults(func=_cmd_dev)

    manifests = sub.add_parser("manifests", help="generate the CRD manifests from the API types")
    manifests.add_argument("--output-dir", type=Path, default=Path("manifests/crds"), help="%(default)s")
    manifests.set_defaults(func=_cmd_manifests)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
