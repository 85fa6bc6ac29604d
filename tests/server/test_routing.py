"""Consistent hashing of users onto replicas, and the spill-over choice (no model, no Ray)."""

import os
import subprocess
import sys
from collections import Counter

import pytest

from steer_away.server.router import user_of
from steer_away.server.routing import UserRing, choose

USERS = [f"user-{i}" for i in range(4000)]


def test_a_user_s_order_names_every_replica_once_their_own_first():
    ring = UserRing(4)
    for user in USERS[:200]:
        order = ring.order(user)
        assert sorted(order) == [0, 1, 2, 3]
        assert order == ring.order(user)  # stable


def test_the_ring_is_the_same_in_every_process():
    """A replica set restarted (new processes, another hash seed) keeps every user where they were."""
    code = "from steer_away.server.routing import UserRing; r = UserRing(3); print([r.order(f'user-{i}')[0] for i in range(50)])"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    ring = UserRing(3)
    assert other.strip() == str([ring.order(f"user-{i}")[0] for i in range(50)])


def test_users_spread_over_replicas_and_a_new_replica_takes_only_its_share():
    four, five = UserRing(4), UserRing(5)
    owners = Counter(four.order(u)[0] for u in USERS)
    assert all(0.15 < n / len(USERS) < 0.35 for n in owners.values()), owners
    moved = [u for u in USERS if four.order(u)[0] != five.order(u)[0]]
    assert 0.1 < len(moved) / len(USERS) < 0.3  # about 1/5: the share the new replica takes
    assert all(five.order(u)[0] == 4 for u in moved)  # and only to the new replica


def test_a_ring_needs_a_replica():
    with pytest.raises(ValueError, match="at least one replica"):
        UserRing(0)


def test_choose_keeps_a_user_home_until_full_then_spills_along_their_order():
    order = [2, 0, 1]
    assert choose(order, [0, 0, 0], capacity=2, down=set()) == 2
    assert choose(order, [0, 0, 2], capacity=2, down=set()) == 0  # home full: the next on the ring
    assert choose(order, [2, 0, 2], capacity=2, down=set()) == 1
    assert choose(order, [3, 4, 2], capacity=2, down=set()) == 2  # all full: the least loaded
    assert choose(order, [0, 0, 0], capacity=2, down={2}) == 0  # home down
    assert choose(order, [0, 0, 0], capacity=2, down={0, 1, 2}) is None


@pytest.mark.parametrize("body, user", [
    (b'{"user": "u7", "messages": []}', "u7"),
    (b'{"messages": []}', None),
    (b'{"user": 7}', None),
    (b"not json", None),
    (b"[1, 2]", None),
    (b"\xff\xfe", None),
])
def test_the_user_is_read_from_the_body_when_there_is_one(body, user):
    assert user_of(body) == user
