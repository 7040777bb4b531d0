"""Who held an item, and whether its own worker died while holding it.

A ``start`` line of a shard journal names the item's holder: the worker process (``pid``),
its Ray node (``node``; ``host:<hostname>`` outside Ray) and the driver's run (``run``). When
an attempt finds an item started and never ended, each such start counts as a death of the
item's own worker only if the worker really died, on a node that is still there, in this run:

- the holder is alive (this very process, or a live pid on this node): the attempt raised or
  was cancelled, the worker did not die;
- the holder's node is lost (Ray reports it dead, after up to ``NODE_GRACE_S`` for Ray to
  notice): a preempted or failed machine, not the item;
- the holder belongs to another run of the driver (a driver stopped with Ctrl-C or killed takes
  its workers with it): not the item.

An item whose own worker died twice is poisoned (recorded, not tried again).
"""

from __future__ import annotations

import os
import socket
import time

NODE_GRACE_S = 30.0  # Ray's default health check declares a lost node dead within ~15 s


def current_node() -> str:
    """This process's Ray node id, or ``host:<hostname>`` outside a Ray worker."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        pass
    return f"host:{socket.gethostname()}"


def holder(run: str | None) -> dict:
    """The fields a ``start`` line carries about its holder."""
    return {"pid": os.getpid(), "node": current_node(), "run": run}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def _node_dead(node: str, wait_s: float) -> bool | None:
    """True if Ray reports ``node`` dead (waiting up to ``wait_s`` for it to notice), False if
    alive at the end, None if unknown (not in a Ray worker, or not a Ray node id)."""
    if not node or node.startswith("host:"):
        return None
    try:
        import ray

        if not ray.is_initialized():
            return None
        deadline = time.monotonic() + wait_s
        while True:
            state = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
            if node not in state:
                return None
            if not state[node]:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(1.0)
    except Exception:  # noqa: BLE001  (no answer: count the death, as before)
        return None


def died_holding(start: dict, run: str | None, here: str, wait_s: float = NODE_GRACE_S) -> bool:
    """Whether the worker that wrote ``start`` (a journal start record) died while holding its
    item, seen from an attempt of run ``run`` on node ``here``. Records of older versions
    (no pid/node/run) count as deaths, as they always did."""
    pid, node, held_run = start.get("pid"), start.get("node"), start.get("run")
    if run is not None and held_run is not None and held_run != run:
        return False
    if node is not None and node == here:
        return not (pid == os.getpid() or _pid_alive(pid))
    if node is not None:
        return _node_dead(node, wait_s) is not True
    return True
