"""The [services] address policy (cluster/core/netpolicy.py): which participant
addresses may be called, judged on what a name resolves to at call time."""

import pytest

from coordinator.cluster.core.netpolicy import AddressRefused, ServicePolicy

DEFAULT = ServicePolicy()
TEN = ServicePolicy.parse(["10.0.0.0/8"], [])
LINK_LOCAL_LISTED = ServicePolicy.parse(["169.254.169.254/32", "fe80::/64"], [])
EVERYTHING = ServicePolicy.parse(["0.0.0.0/0", "::/0"], [])
HOSTS = ServicePolicy.parse([], ["payments.internal"])

# (policy, address, host, allowed)
CASES = [
    (DEFAULT, "127.0.0.1", None, True),
    (DEFAULT, "127.8.9.10", None, True),
    (DEFAULT, "::1", None, True),
    (DEFAULT, "10.1.2.3", None, True),
    (DEFAULT, "172.16.0.5", None, True),
    (DEFAULT, "192.168.1.1", None, True),
    (DEFAULT, "fd12:3456::1", None, True),
    (DEFAULT, "::ffff:127.0.0.1", None, True),  # mapped loopback is loopback
    (DEFAULT, "8.8.8.8", None, False),  # public: not in the default
    (DEFAULT, "2001:4860::8888", None, False),
    (DEFAULT, "169.254.169.254", None, False),  # the metadata service
    (DEFAULT, "169.254.0.1", None, False),
    (DEFAULT, "fe80::1", None, False),
    (DEFAULT, "fe80::1%eth0", None, False),
    (DEFAULT, "::ffff:169.254.169.254", None, False),  # IPv4-mapped
    (DEFAULT, "::169.254.169.254", None, False),  # IPv4-compatible
    (DEFAULT, "64:ff9b::a9fe:a9fe", None, False),  # NAT64
    (DEFAULT, "2002:a9fe:a9fe::1", None, False),  # 6to4
    (DEFAULT, "fd00:ec2::254", None, False),  # AWS metadata over IPv6, inside fc00::/7
    (DEFAULT, "0.0.0.0", None, False),  # reaches the local host
    (DEFAULT, "::", None, False),
    (DEFAULT, "224.0.0.1", None, False),
    (TEN, "10.9.9.9", None, True),
    (TEN, "127.0.0.1", None, False),  # a configured list replaces the default
    (TEN, "192.168.1.1", None, False),
    (EVERYTHING, "8.8.8.8", None, True),
    (EVERYTHING, "169.254.169.254", None, False),  # 0.0.0.0/0 does not name link-local
    (EVERYTHING, "::ffff:169.254.169.254", None, False),
    (EVERYTHING, "fe80::1", None, False),
    (LINK_LOCAL_LISTED, "169.254.169.254", None, True),  # named explicitly
    (LINK_LOCAL_LISTED, "::ffff:169.254.169.254", None, True),
    (LINK_LOCAL_LISTED, "169.254.169.253", None, False),
    (LINK_LOCAL_LISTED, "fe80::1", None, True),
    (HOSTS, "203.0.113.7", "payments.internal", True),
    (HOSTS, "203.0.113.7", "PAYMENTS.internal.", True),
    (HOSTS, "203.0.113.7", "other.internal", False),
    (HOSTS, "127.0.0.1", "other.internal", False),
    (HOSTS, "169.254.169.254", "payments.internal", False),  # a listed name that rebinds to metadata
    (HOSTS, "::ffff:169.254.169.254", "payments.internal", False),
]


@pytest.mark.parametrize(
    ("policy", "address", "host", "allowed"), CASES, ids=[f"{c[1]}-{c[2]}-{i}" for i, c in enumerate(CASES)]
)
def test_the_address_policy(policy, address, host, allowed):
    assert (policy.refusal(address, host) is None) == allowed


def fake_resolver(table):
    async def resolve(host, port):
        return list(table[host])

    return resolve


@pytest.mark.parametrize(
    ("answers", "refused"),
    [
        (["127.0.0.1"], False),
        (["169.254.169.254"], True),
        (["::ffff:169.254.169.254"], True),
        (["fe80::1%eth0"], True),
        (["10.0.0.1", "169.254.169.254"], True),  # one refused address taints the name
        (["8.8.8.8"], True),
    ],
)
async def test_a_name_is_judged_by_every_address_it_resolves_to(answers, refused):
    resolve = fake_resolver({"svc.example": answers})
    if refused:
        with pytest.raises(AddressRefused) as info:
            await DEFAULT.resolve("svc.example", 80, resolve)
        assert "svc.example" in str(info.value) and "never called" in str(info.value)
    else:
        assert await DEFAULT.resolve("svc.example", 80, resolve) == answers


async def test_a_literal_is_not_resolved():
    async def never(host, port):
        raise AssertionError("a literal address must not be resolved")

    assert await DEFAULT.resolve("127.0.0.1", 80, never) == ["127.0.0.1"]
    with pytest.raises(AddressRefused):
        await DEFAULT.resolve("[fe80::1]", 80, never)


@pytest.mark.parametrize(
    ("networks", "hosts", "message"),
    [
        (["10.0.0.1/8"], [], "allowed_networks[0]"),  # host bits set
        (["not-a-net"], [], "allowed_networks[0]"),
        ([8], [], "allowed_networks[0]"),
        ([], ["bad host"], "allowed_hosts[0]"),
        ([], ["10.0.0.1"], "allowed_networks"),  # an address belongs in allowed_networks
        ([], [""], "allowed_hosts[0]"),
    ],
)
def test_bad_lists_are_refused_with_the_entry_named(networks, hosts, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ServicePolicy.parse(networks, hosts)
