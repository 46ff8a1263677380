"""The SQLite results store: rows, status updates, and concurrent writers losing nothing."""

import itertools
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from jaxlab.launch.store import Store

WRITER = textwrap.dedent("""
    import sys, time
    from jaxlab.launch.store import Store
    path, worker, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = Store(path)
    import os
    open(go + "-ready-" + worker, "w").close()
    while not os.path.exists(go):   # start together
        time.sleep(0.01)
    other = "b" if worker == "a" else "a"
    for i in range(n):
        if i == n // 2:   # halfway, wait for the other writer: the rows must interleave
            while store.meta(f"last-{other}") is None:
                time.sleep(0.01)
        rid = f"{worker}-{i}"
        store.register(rid, rid, f"/runs/{rid}", {"w": worker}, {"K.i": str(i)}, [])
        store.start(rid, None, worker)
        store.finish(rid, "done", {"final_val_loss": float(i), "step": i, "steps": n})
        store.set_meta(f"last-{worker}", i)
""")


def test_two_processes_writing_at_once_lose_no_rows(tmp_path):
    path, go, n = tmp_path / "sweep.db", tmp_path / "go", 80
    Store(path)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), w, str(n), str(go)])
             for w in ("a", "b")]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"go-ready-{w}").exists() for w in "ab"):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = Store(path)
    rows = store.rows()
    assert len(rows) == 2 * n
    assert sorted(r["run_id"] for r in rows) == sorted(f"{w}-{i}" for w in "ab" for i in range(n))
    assert {r["status"] for r in rows} == {"done"}
    assert all(r["attempts"] == 1 for r in rows)
    assert all(r["final_val_loss"] == float(r["run_id"].split("-")[1]) for r in rows)
    assert store.counts()["done"] == 2 * n
    order = [r["run_id"][0] for r in sorted(rows, key=lambda r: r["finished_at"])]
    # Each writer's second half waits for a row of the other's, so the log switches writer >= 2 times.
    assert sum(x != y for x, y in itertools.pairwise(order)) >= 2
    assert store.meta("last-a") == n - 1 and store.meta("last-b") == n - 1


def test_threads_sharing_a_store_lose_no_rows(tmp_path):
    store = Store(tmp_path / "sweep.db")

    def work(w):
        for i in range(50):
            store.register(f"{w}{i}", "x", "/d", {}, {}, [])
            store.finish(f"{w}{i}", "diverged", {"diverged_step": i})

    threads = [threading.Thread(target=work, args=(w,)) for w in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.counts() == {"pending": 0, "running": 0, "done": 0, "diverged": 200,
                              "failed": 0, "interrupted": 0}


def test_register_is_idempotent_and_attempts_count(tmp_path):
    store = Store(tmp_path / "sweep.db")
    assert store.register("r1", "n", "/d", {"ax": "v"}, {"A.b": "1"}, ["f.gin"])
    assert not store.register("r1", "n", "/d", {"ax": "v"}, {"A.b": "1"}, ["f.gin"])
    store.start("r1", None)
    store.finish("r1", "failed", None, returncode=1, error="boom")
    store.start("r1", 40)
    store.finish("r1", "done", {"final_val_loss": 2.5, "optimizer": "adamw", "other": 1})
    (row,) = store.rows()
    assert (row["attempts"], row["resumed_from"], row["status"], row["error"]) == (2, 40, "done",
                                                                                  None)
    assert row["labels"] == {"ax": "v"} and row["bindings"] == {"A.b": "1"}
    assert row["summary"]["other"] == 1 and row["optimizer"] == "adamw"
    df = store.dataframe()
    assert list(df["axis.ax"]) == ["v"]
    with pytest.raises(ValueError, match="status 'weird'"):
        store.finish("r1", "weird", None)
    with pytest.raises(KeyError, match="not in the store"):
        store.start("nope", None)
