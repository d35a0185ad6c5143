"""Raft frames sealed with the cluster secret (consensus/peer_frames.py):
what opens, what is refused, and that no nonce is used twice with a key."""

from __future__ import annotations

import pytest
from pysyncobj.encryptor import getEncryptor

from coordinator.consensus import RaftSettings
from coordinator.consensus.peer_frames import FRAME_OVERHEAD_BYTES, SALTS_KEPT_MAX, FrameRefused, PeerFrames

SECRET = "frames-test-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def nodes() -> tuple[PeerFrames, PeerFrames]:
    return PeerFrames(SECRET), PeerFrames(SECRET)  # two node processes of one cluster


def test_a_frame_opens_on_another_node_with_its_time(nodes):
    sender, receiver = nodes
    frame = sender.encrypt_at_time(b"append entries", 1234)
    assert frame[:1] == b"\xc1" and len(frame) == len(b"append entries") + FRAME_OVERHEAD_BYTES
    assert receiver.extract_timestamp(frame) == 1234
    assert receiver.decrypt(frame) == b"append entries"
    assert receiver.decrypt(frame) == b"append entries"  # also without extract_timestamp first


def test_every_byte_is_authenticated_the_time_too(nodes):
    sender, receiver = nodes
    frame = sender.encrypt_at_time(b"x" * 100, 77)
    for position in (0, 1, 17, 25, 33, 40, len(frame) - 1):  # marker, salt, counter, time, body, tag
        forged = bytearray(frame)
        forged[position] ^= 0x01
        with pytest.raises((FrameRefused, ValueError)):
            receiver.extract_timestamp(bytes(forged))
        with pytest.raises((FrameRefused, ValueError)):
            receiver.decrypt(bytes(forged))
    for cut in (0, 1, FRAME_OVERHEAD_BYTES - 1, len(frame) - 1):
        with pytest.raises(FrameRefused):
            receiver.decrypt(frame[:cut])


def test_another_secret_opens_nothing(nodes):
    sender, _ = nodes
    stranger = PeerFrames("another-secret-0123456789abcdef")
    with pytest.raises(FrameRefused):
        stranger.decrypt(sender.encrypt_at_time(b"entries", 1))
    with pytest.raises(FrameRefused):
        nodes[1].decrypt(stranger.encrypt_at_time(b"join me", 1))


def test_nonces_never_repeat_under_one_key(nodes):
    sender, _ = nodes
    headers = [sender.encrypt_at_time(b"same", 5)[:33] for _ in range(1000)]
    assert len(set(headers)) == 1000  # one salt per process, the counter never repeats
    assert PeerFrames(SECRET).encrypt_at_time(b"same", 5)[1:17] != headers[0][1:17]  # another process: another key


def test_fernet_frames_are_read_and_sent_when_told(nodes):
    """A node of an older release seals with PySyncObj's Fernet."""
    _, receiver = nodes
    old_release = getEncryptor(SECRET)
    token = old_release.encrypt_at_time(b"hello", 42)
    assert receiver.extract_timestamp(token) == 42 and receiver.decrypt(token) == b"hello"
    during_upgrade = PeerFrames(SECRET, send="fernet")
    assert old_release.decrypt(during_upgrade.encrypt_at_time(b"entries", 43)) == b"entries"
    with pytest.raises(Exception):  # noqa: B017 - Fernet's InvalidToken: what an old node does with a sealed frame
        old_release.decrypt(receiver.encrypt_at_time(b"entries", 43))


def test_the_keys_of_unknown_salts_are_bounded():
    receiver = PeerFrames(SECRET)
    senders = [PeerFrames(SECRET) for _ in range(SALTS_KEPT_MAX + 5)]
    for sender in senders:
        assert receiver.decrypt(sender.encrypt_at_time(b"x", 1)) == b"x"
    assert len(receiver._openers) == SALTS_KEPT_MAX
    assert receiver.decrypt(senders[0].encrypt_at_time(b"again", 2)) == b"again"  # derived again


def test_the_setting_says_what_is_sent():
    assert RaftSettings().peer_frames == "aead"
    with pytest.raises(ValueError, match="peer_frames"):
        RaftSettings(peer_frames="plain")
    with pytest.raises(ValueError):
        PeerFrames(SECRET, send="plain")
