"""Arguments of `registry-operator node-agent` (kept here so cli.py only wires the subcommand)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from registry_operator import logsetup
from registry_operator.nodeagent import files
from registry_operator.nodeagent.agent import AgentOptions, run_node_agent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--host-root",
        type=Path,
        default=Path(env("NODE_AGENT_HOST_ROOT", "/host")),
        help="where the node's filesystem is mounted; every path below is under it (default: %(default)s)",
    )
    parser.add_argument(
        "--containerd-certs-d",
        default=env("NODE_AGENT_CONTAINERD_CERTS_D", files.DEFAULT_CONTAINERD_CERTS_D),
        help="containerd's registry config_path on the node (default: %(default)s)",
    )
    parser.add_argument(
        "--containers-certs-d",
        default=env("NODE_AGENT_CONTAINERS_CERTS_D", files.DEFAULT_CONTAINERS_CERTS_D),
        help="CRI-O / podman / skopeo certs.d on the node; '' to skip (default: %(default)s)",
    )
    parser.add_argument(
        "--dns",
        choices=[m.value for m in files.DnsMode],
        default=env("NODE_AGENT_DNS", files.DnsMode.HOSTS.value),
        help="hosts: an owned /etc/hosts block (hostname -> Service ClusterIP); resolver: --dns-server "
        "as first nameserver in /etc/resolv.conf; none (default: %(default)s)",
    )
    parser.add_argument(
        "--dns-server", default=env("NODE_AGENT_DNS_SERVER"), help="CoreDNS IP for --dns=resolver"
    )
    parser.add_argument("--hosts-file", default=files.DEFAULT_HOSTS_FILE, help="(default: %(default)s)")
    parser.add_argument("--resolv-conf", default=files.DEFAULT_RESOLV_CONF, help="(default: %(default)s)")
    parser.add_argument(
        "--state-dir",
        default=env("NODE_AGENT_STATE_DIR", files.DEFAULT_STATE_DIR),
        help="where the record of the agent's own files lives on the node (default: %(default)s)",
    )
    parser.add_argument(
        "--namespace", default=env("NODE_AGENT_NAMESPACE") or None, help="only registries of this namespace"
    )
    parser.add_argument(
        "--selector", default=env("NODE_AGENT_SELECTOR") or None, help="label selector on ImageRegistries"
    )
    parser.add_argument(
        "--resync-period",
        type=float,
        default=float(env("NODE_AGENT_RESYNC_PERIOD", "30")),
        help="seconds between re-reads of the CA secrets (CA rotations) (default: %(default)s)",
    )
    parser.add_argument(
        "--cleanup", action="store_true", help="remove every file and block the agent wrote, then exit"
    )
    parser.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG, else in-cluster config")


def run_from_args(args: argparse.Namespace) -> int:
    logsetup.configure()
    dns = files.DnsMode(args.dns)
    if dns is files.DnsMode.RESOLVER and not args.dns_server:
        print("registry-operator: node-agent --dns=resolver needs --dns-server (CoreDNS's Service IP)")
        return 2
    layout = files.Layout(
        host_root=args.host_root,
        containerd_certs_d=args.containerd_certs_d,
        containers_certs_d=args.containers_certs_d or None,
        hosts_file=args.hosts_file,
        resolv_conf=args.resolv_conf,
        state_dir=args.state_dir,
        dns_mode=dns,
        dns_server=args.dns_server,
    )
    options = AgentOptions(
        layout=layout, namespace=args.namespace, selector=args.selector, resync_period=args.resync_period
    )
    return run_node_agent(args.kubeconfig, options, cleanup=args.cleanup)
