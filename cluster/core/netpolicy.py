"""Which addresses the coordinator may call as participants (SSRF guard).

A saga chooses the method, path and body of its calls and gets the answer
back (in its output, in ``/v1/services/{name}/outcomes``, in error text),
so a service registered at an internal address would turn the coordinator
into a proxy. The policy is ``[services]`` in ``cluster.toml``
(:mod:`coordinator.cluster.core.config`)::

    [services]
    allowed_networks = ["10.20.0.0/16", "fd00:20::/32"]   # CIDRs
    allowed_hosts = ["payments.internal"]                 # host names, exact

* Neither list set: the default, loopback and private networks
  (``DEFAULT_NETWORKS``): local clusters, the demo and the tests work,
  public and link-local addresses are refused.
* Either list set: only what they list. A host name in ``allowed_hosts``
  may resolve to any address but a guarded one.
* Guarded addresses (``GUARDED_NETWORKS``: link-local, cloud metadata,
  unspecified, multicast) are refused even inside an allowed network,
  unless a listed network lies inside the guarded one (the operator named
  it explicitly; ``0.0.0.0/0`` does not count).
* An IPv6 address that carries an IPv4 one (mapped ``::ffff:a.b.c.d``,
  compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) is
  refused when the IPv4 address is guarded; mapped and compatible forms are
  judged as their IPv4 address.

The check runs on every address a name resolves to, at call time
(:class:`PolicyResolver` for HTTP in :mod:`coordinator.cluster.executor.http_caller`,
:meth:`ServicePolicy.resolve` for gRPC in :mod:`coordinator.cluster.executor.grpc_caller`):
DNS may change after registration. Registration (``PUT /v1/services``)
refuses literal addresses early (:meth:`ServicePolicy.refusal`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

__all__ = [
    "ALLOWED_HOSTS_MAX",
    "ALLOWED_NETWORKS_MAX",
    "DEFAULT_NETWORKS",
    "GUARDED_NETWORKS",
    "AddressRefused",
    "PolicyResolver",
    "Resolve",
    "ServicePolicy",
    "literal_address",
    "system_resolve",
]

ALLOWED_NETWORKS_MAX = 256
ALLOWED_HOSTS_MAX = 256

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)

GUARDED_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local; 169.254.169.254 is the metadata service of most clouds
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS metadata over IPv6 (inside the private fc00::/7)
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "168.63.129.16/32",  # Azure wire server
        "0.0.0.0/8",  # "this host": connecting to 0.0.0.0 reaches the local machine
        "::/128",  # unspecified
        "224.0.0.0/4",  # multicast
        "ff00::/8",
        "255.255.255.255/32",  # broadcast
    )
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)

Resolve = Callable[[str, int], Awaitable[list[str]]]


class AddressRefused(Exception):
    """A participant address the ``[services]`` policy refuses. Not an
    OSError on purpose: aiohttp passes it through instead of wrapping it as a
    connection error (which would be retried)."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        where = host if host == address else f"{host} ({address})"
        super().__init__(f"refused by the [services] address policy: {where} is {reason}; never called")
        self.host = host
        self.address = address
        self.reason = reason


@functools.lru_cache(maxsize=1024)
def literal_address(host: str) -> Address | None:
    """`host` as an IP address when it is one (brackets and a zone allowed), else None.
    Cached: every participant call parses its URL's host, and a cluster calls
    few hosts (ipaddress's parse is ~5 us); addresses are immutable."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _embedded_ipv4(address: Address) -> tuple[ipaddress.IPv4Address | None, bool]:
    """The IPv4 address an IPv6 one carries, and whether it stands for it
    on this host (mapped, compatible) rather than through a gateway."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None, False
    plain = ipaddress.IPv6Address(int(address))  # without a zone
    if plain.ipv4_mapped is not None:
        return plain.ipv4_mapped, True
    if plain in _COMPATIBLE and int(plain) > 1:  # not :: or ::1
        return ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF), True
    if plain in _NAT64:
        return ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF), False
    if plain.sixtofour is not None:
        return plain.sixtofour, False
    return None, False


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to now (the system resolver)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """The ``[services]`` section: see the module docstring."""

    allowed_networks: tuple[Network, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # lower case, no trailing dot

    def __post_init__(self) -> None:
        if len(self.allowed_networks) > ALLOWED_NETWORKS_MAX or len(self.allowed_hosts) > ALLOWED_HOSTS_MAX:
            raise ValueError(f"at most {ALLOWED_NETWORKS_MAX} networks and {ALLOWED_HOSTS_MAX} hosts")

    @classmethod
    def parse(cls, networks: Iterable[Any], hosts: Iterable[Any]) -> ServicePolicy:
        """From the cluster file's lists; ValueError names the bad entry."""
        parsed_networks = []
        for i, raw in enumerate(networks):
            if not isinstance(raw, str):
                raise ValueError(f'allowed_networks[{i}]: must be a CIDR string such as "10.0.0.0/8"')
            try:
                parsed_networks.append(ipaddress.ip_network(raw.strip(), strict=True))
            except ValueError as exc:
                raise ValueError(f"allowed_networks[{i}]: {raw!r} is not a network: {exc}") from None
        parsed_hosts = []
        for i, raw in enumerate(hosts):
            if not isinstance(raw, str) or not _HOST_NAME.match(raw):
                raise ValueError(f"allowed_hosts[{i}]: {raw!r} is not a host name")
            if literal_address(raw) is not None:
                raise ValueError(f"allowed_hosts[{i}]: {raw!r} is an address; list it in allowed_networks as {raw}/32")
            parsed_hosts.append(raw.lower().rstrip("."))
        return cls(tuple(parsed_networks), tuple(parsed_hosts))

    @property
    def configured(self) -> bool:
        return bool(self.allowed_networks or self.allowed_hosts)

    def host_listed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allowed_hosts

    def _explicitly_listed(self, address: Address, guarded: Network) -> bool:
        return any(
            net.version == guarded.version and net.subnet_of(guarded) and address in net  # type: ignore[arg-type]
            for net in self.allowed_networks
        )

    def refusal(self, address: str | Address, host: str | None = None) -> str | None:
        """Why `address` (that `host` resolved to) may not be called, or None when it may."""
        return _refusal(self, address, host)

    def _refusal(self, address: str | Address, host: str | None) -> str | None:
        if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            parsed = literal_address(address)
            if parsed is None:
                return "not an IP address"
            address = parsed
        plain: Address = ipaddress.IPv6Address(int(address)) if isinstance(address, ipaddress.IPv6Address) else address
        embedded, local = _embedded_ipv4(plain)
        for candidate in (plain, embedded):
            if candidate is None:
                continue
            for guarded in GUARDED_NETWORKS:
                if candidate.version == guarded.version and candidate in guarded:
                    if not self._explicitly_listed(candidate, guarded):
                        kind = "link-local" if guarded.prefixlen in (10, 16) else "a guarded address"
                        return f"{kind} ({guarded}); list it in [services] allowed_networks to allow it"
        judged = embedded if local and embedded is not None else plain
        if host is not None and literal_address(host) is None and self.host_listed(host):
            return None
        networks = self.allowed_networks if self.configured else DEFAULT_NETWORKS
        if any(judged.version == net.version and judged in net for net in networks):
            return None
        if self.configured:
            return "outside [services] allowed_networks and allowed_hosts"
        return "not loopback or private (the default [services] policy); list it in [services] allowed_networks"

    def check(self, address: str | Address, host: str) -> None:
        reason = self.refusal(address, host)
        if reason is not None:
            raise AddressRefused(host, str(address), reason)

    async def resolve(self, host: str, port: int, resolve: Resolve = system_resolve) -> list[str]:
        """The addresses `host` has now, each checked; AddressRefused when
        any is refused (a name that also points somewhere refused is not
        trusted); OSError when it does not resolve."""
        literal = literal_address(host)
        if literal is not None:
            self.check(literal, host)
            return [str(literal)]
        addresses = await resolve(host, port)
        if not addresses:
            raise OSError(f"{host} resolved to no address")
        for address in addresses:
            self.check(address, host)
        return addresses


# Every participant call and connection asks; a cluster calls few addresses,
# and a policy (frozen) and an address give the same answer every time.
@functools.lru_cache(maxsize=1024)
def _refusal(policy: ServicePolicy, address: str | Address, host: str | None) -> str | None:
    return policy._refusal(address, host)


class PolicyResolver(AbstractResolver):
    """An aiohttp resolver that checks every address it hands the connector
    (which connects only to those), so a name is judged at connection time.
    aiohttp does not resolve literal addresses: the caller checks those."""

    def __init__(self, policy: ServicePolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        for result in results:
            self._policy.check(result["host"], host)
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
