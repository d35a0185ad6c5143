"""Network namespaces for a chaos run, so one node can be cut off from its
peers while clients still reach it.

One run creates, all named with its run prefix (``coord-PID-TOKEN-`` for
namespaces, ``coPIDHEX-TOKEN`` for links)::

    root namespace   bridge  coPID-TOKb   10.A.B.1/24   clients, load, participants
    coord-PID-TOK-n1 eth0    10.A.B.11/24 <- veth -> coPID-TOKh1 (a bridge port)
    coord-PID-TOK-n2 eth0    10.A.B.12/24 <- veth -> coPID-TOKh2
    ...

A /24 in 10.128-254.x.0 that no address or route of the machine overlaps is
picked at random. Nodes bind their ports on their namespace's address and
start through ``ip netns exec`` (:meth:`Network.launch_prefix`).

A partition isolates one node from its peers: on both ends of its veth, an
egress HTB qdisc sends packets between that node and a peer (u32 on the
peer's address) to a class whose only queue is a ``pfifo limit 0``, which
drops every packet it is given. Everything else (clients, participants)
passes. Heal deletes the two qdiscs. HTB, u32 and pfifo rather than
``prio`` and ``action drop``: kernels built small (this CI's) lack sch_prio
and act_gact, and tc filters on ingress cannot drop without an action.

Only root can do this; :func:`unavailable` says why not otherwise.
:meth:`Network.close` deletes everything the run created, and nothing else,
also after an error or Ctrl-C (use ``with``); :func:`remove_leftovers`
deletes what a killed run of a given PID left behind.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Network", "NetnsError", "remove_leftovers", "unavailable"]

COMMAND_TIMEOUT_S = 10.0
NAMESPACE_PREFIX = "coord-"
LINK_PREFIX = "co"
NODES_MAX = 9  # link names: coPIDHEX-TOKh9 stays within IFNAMSIZ (15)
SUBNET_TRIES_MAX = 64
BRIDGE_HOST = 1
NODE_HOST_BASE = 10
DROP_CLASS = "1:2"
PASS_RATE = "10gbit"


class NetnsError(RuntimeError):
    """A namespace, link, address or qdisc could not be made or removed; the message has the command."""


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NetnsError(f"{' '.join(argv)}: {error}") from None
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done


def _namespace_prefix(pid: int) -> str:
    return f"{NAMESPACE_PREFIX}{pid}-"


def _link_prefix(pid: int) -> str:
    return f"{LINK_PREFIX}{pid:x}-"


def _namespaces() -> list[str]:
    listing = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def _links() -> list[str]:
    listing = _run(["ip", "-o", "link", "show"], check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in listing.splitlines() if line.count(":") >= 2]


def unavailable() -> str | None:
    """Why this process cannot run nodes in network namespaces, or None if it can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"needs {' and '.join(missing)} (iproute2)"
    probe = f"{_namespace_prefix(os.getpid())}probe"
    try:
        _run(["ip", "netns", "add", probe])
    except NetnsError as error:
        return f"ip netns add failed: {error}"
    _run(["ip", "netns", "delete", probe], check=False)
    return None


def remove_leftovers(pid: int) -> list[str]:
    """Delete the namespaces and links that runs of process ``pid`` created
    and did not remove (it was killed); the names removed."""
    removed = []
    for namespace in _namespaces():
        if (
            namespace.startswith(_namespace_prefix(pid))
            and _run(["ip", "netns", "delete", namespace], check=False).returncode == 0
        ):
            removed.append(namespace)
    for link in _links():
        if link.startswith(_link_prefix(pid)) and _run(["ip", "link", "delete", link], check=False).returncode == 0:
            removed.append(link)
    return removed


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for line in _run(["ip", "-o", "-4", "addr", "show"]).stdout.splitlines():
        words = line.split()
        if "inet" in words:
            used.append(ipaddress.ip_interface(words[words.index("inet") + 1]).network)
    for line in _run(["ip", "-4", "route", "show", "table", "all"], check=False).stdout.splitlines():
        words = line.split()
        candidates = [w for w in words[:2] if w[:1].isdigit()]
        if candidates:
            try:
                used.append(ipaddress.ip_network(candidates[0], strict=False))
            except ValueError:
                continue
    return used


def _free_subnet(rng: random.Random) -> ipaddress.IPv4Network:
    used = _used_networks()
    for _ in range(SUBNET_TRIES_MAX):
        subnet = ipaddress.ip_network(f"10.{rng.randrange(128, 255)}.{rng.randrange(256)}.0/24")
        if not any(subnet.overlaps(u) for u in used if u.prefixlen > 0):
            return subnet
    raise NetnsError("no free /24 in 10.128.0.0/9 for the bridge")


@dataclass
class Network:
    """The bridge, namespaces and veths of one run. Build with :meth:`create`."""

    node_ids: tuple[str, ...]
    subnet: ipaddress.IPv4Network
    token: str
    pid: int = field(default_factory=os.getpid)
    created_namespaces: list[str] = field(default_factory=list)
    created_links: list[str] = field(default_factory=list)
    isolated: set[str] = field(default_factory=set)

    @classmethod
    def create(cls, node_ids: Sequence[str], rng: random.Random | None = None) -> Network:
        """Bridge, one namespace per node, a veth each, addresses, links up;
        checks that a partition can be made. On any failure removes what it
        made and raises :class:`NetnsError`."""
        if not 1 <= len(node_ids) <= NODES_MAX:
            raise NetnsError(f"1 to {NODES_MAX} nodes in namespaces, got {len(node_ids)}")
        rng = rng or random.Random()
        network = cls(tuple(node_ids), _free_subnet(rng), f"{rng.randrange(16**3):03x}")
        try:
            network._build()
            if len(node_ids) > 1:
                network.isolate(node_ids[0])
                network.heal(node_ids[0])
        except BaseException:
            network.close()
            raise
        return network

    # -- names and addresses -------------------------------------------------

    def namespace(self, node_id: str) -> str:
        return f"{_namespace_prefix(self.pid)}{self.token}-{node_id}"

    def _host_link(self, node_id: str) -> str:
        return f"{_link_prefix(self.pid)}{self.token}h{self.node_ids.index(node_id) + 1}"

    @property
    def bridge(self) -> str:
        return f"{_link_prefix(self.pid)}{self.token}b"

    @property
    def bridge_address(self) -> str:
        """The root namespace's address on the bridge: serve participants here."""
        return str(self.subnet.network_address + BRIDGE_HOST)

    def address(self, node_id: str) -> str:
        return str(self.subnet.network_address + NODE_HOST_BASE + self.node_ids.index(node_id) + 1)

    def hosts(self) -> dict[str, str]:
        return {node_id: self.address(node_id) for node_id in self.node_ids}

    def launch_prefix(self, node_id: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespace(node_id))

    def launch_prefixes(self) -> dict[str, tuple[str, ...]]:
        return {node_id: self.launch_prefix(node_id) for node_id in self.node_ids}

    # -- building and removing -------------------------------------------------

    def _build(self) -> None:
        prefix_len = self.subnet.prefixlen
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self.created_links.append(self.bridge)
        _run(["ip", "addr", "add", f"{self.bridge_address}/{prefix_len}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for node_id in self.node_ids:
            namespace, host_link = self.namespace(node_id), self._host_link(node_id)
            _run(["ip", "netns", "add", namespace])
            self.created_namespaces.append(namespace)
            _run(["ip", "link", "add", host_link, "type", "veth", "peer", "name", "eth0", "netns", namespace])
            self.created_links.append(host_link)
            _run(["ip", "link", "set", host_link, "master", self.bridge])
            _run(["ip", "link", "set", host_link, "up"])
            _run(["ip", "-n", namespace, "addr", "add", f"{self.address(node_id)}/{prefix_len}", "dev", "eth0"])
            _run(["ip", "-n", namespace, "link", "set", "eth0", "up"])
            _run(["ip", "-n", namespace, "link", "set", "lo", "up"])

    def close(self) -> None:
        """Delete every link and namespace this run created (stop the nodes
        first): the veths (each takes its namespace end along), the bridge,
        then the namespaces."""
        problems = []
        self.isolated.clear()
        links = sorted(self.created_links, key=lambda link: link == self.bridge)
        for link in links:
            done = _run(["ip", "link", "delete", link], check=False)
            if done.returncode != 0 and link in _links():
                problems.append(f"ip link delete {link}: {done.stderr.strip()}")
        self.created_links.clear()
        for namespace in self.created_namespaces:
            done = _run(["ip", "netns", "delete", namespace], check=False)
            if done.returncode != 0 and namespace in _namespaces():
                problems.append(f"ip netns delete {namespace}: {done.stderr.strip()}")
        self.created_namespaces.clear()
        if problems:
            raise NetnsError("; ".join(problems))

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- partitions ------------------------------------------------------------

    def _drop_qdisc(self, tc: Sequence[str], device: str, direction: str, peers: Sequence[str]) -> None:
        """On ``device``'s egress: packets to/from (``direction`` dst/src) a
        peer go to a class whose pfifo holds nothing; the rest passes unshaped."""
        _run([*tc, "qdisc", "add", "dev", device, "root", "handle", "1:", "htb"])
        _run([*tc, "class", "add", "dev", device, "parent", "1:", "classid", DROP_CLASS, "htb", "rate", PASS_RATE])
        _run([*tc, "qdisc", "add", "dev", device, "parent", DROP_CLASS, "handle", "2:", "pfifo", "limit", "0"])
        for peer in peers:
            _run(
                [
                    *tc,
                    "filter",
                    "add",
                    "dev",
                    device,
                    "parent",
                    "1:",
                    "protocol",
                    "ip",
                    "prio",
                    "1",
                    "u32",
                    "match",
                    "ip",
                    direction,
                    f"{peer}/32",
                    "flowid",
                    DROP_CLASS,
                ]
            )

    def isolate(self, node_id: str) -> list[str]:
        """Drop all traffic between ``node_id`` and the other nodes, both ways;
        the root namespace (clients, participants) still reaches it. The peers' addresses."""
        if node_id in self.isolated:
            raise NetnsError(f"{node_id} is already isolated")
        peers = [self.address(other) for other in self.node_ids if other != node_id]
        self.isolated.add(node_id)
        try:
            self._drop_qdisc(["tc", "-n", self.namespace(node_id)], "eth0", "dst", peers)
            self._drop_qdisc(["tc"], self._host_link(node_id), "src", peers)
        except NetnsError:
            self.heal(node_id)
            raise
        return peers

    def reset_links(self, node_id: str, ports: Sequence[int]) -> None:
        """Reset every established TCP connection of ``node_id`` to or from one
        of ``ports`` (its Raft links): both ends see the connection drop, the
        process lives (``ss -K`` in its namespace)."""
        terms = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
        _run(["ip", "netns", "exec", self.namespace(node_id), "ss", "-K", "state", "established", f"( {terms} )"])

    def heal(self, node_id: str) -> None:
        """Remove ``node_id``'s partition (a no-op if there is none); raises
        :class:`NetnsError` if a drop qdisc is still there afterwards."""
        self.isolated.discard(node_id)
        for tc, device in ((["tc", "-n", self.namespace(node_id)], "eth0"), (["tc"], self._host_link(node_id))):
            _run([*tc, "qdisc", "del", "dev", device, "root"], check=False)  # fails when there is none
            shown = _run([*tc, "qdisc", "show", "dev", device]).stdout
            if " htb " in f" {shown} ":
                raise NetnsError(
                    f"{' '.join(tc)} qdisc del dev {device} root: the partition is still there: {shown.strip()}"
                )

    def heal_all(self) -> None:
        for node_id in list(self.isolated):
            self.heal(node_id)
