#!/usr/bin/env python3
"""What this machine allows, whatever the filesystem's code does.

Prints the floors that bound mfsha's single-threaded and throughput figures here, measured
with the simplest possible code (no mfsha involved except the FUSE round trip):

  * one durable small write: append + fdatasync, overwrite + fdatasync, O_DIRECT|O_DSYNC;
  * one loopback TCP round trip (blocking sockets);
  * one replicated durable write, the least a three-voter commit on this one machine costs:
    the leader appends + fdatasyncs its file (on a thread) while two follower processes each
    receive the record over loopback TCP, append + fdatasync their own file and answer; the
    write is done when any two of the three syncs are in (a quorum of 2 of 3). Printed
    beside the one-process durable write measured the same way, with 1 and 32 writers (the
    32 sharing each sync as a group commit would);
  * one FUSE round trip on an mfsha mount, answered by the mount without the master
    (fsync of a directory), if --mount is given;
  * a cold 1 GiB file read locally, and the same file sent by one process with sendfile()
    over loopback TCP to another that only receives it: the least any design with a separate
    chunkserver process must do to serve a read (mfsha additionally checks CRCs, which
    needs the data in user space, and frames and copies it in the client).

Usage: scripts/bench-floors.py [--dir DIR] [--mount MOUNTPOINT] [--rounds N] [--commit-only]
                               [--steps-json]
--commit-only prints the durable and replicated write floors alone (the commit-cost bench
runs it in the same run as its own figures). --steps-json prints, as one JSON object, the
cost in µs of each step a metadata operation cannot avoid (FUSE round trip, loopback round
trip, one synced write, one replicated synced write): `mfsha bench fuse` runs it in the same
run and prints each figure as a multiple of the sum of its steps.
DIR (default /var/tmp/mfsha-floors) must be on the disk the cluster uses. Run as root so the
page cache can be dropped; nothing else should be running.
"""

import argparse
import json
import mmap
import os
import select
import signal
import threading
import socket
import statistics
import time

MIB = 1 << 20


def per_op_us(n, fn):
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n * 1e6


def durable_writes(path, n=3000):
    out = {}
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        record = b"r" * 300
        out["append + fdatasync"] = per_op_us(
            n, lambda i: (os.write(fd, record), os.fdatasync(fd)))
        os.ftruncate(fd, 0)
        os.write(fd, b"\0" * (16 * MIB))
        os.fsync(fd)
        out["overwrite + fdatasync"] = per_op_us(
            n, lambda i: (os.pwrite(fd, record, (i * 300) % (16 * MIB - 300)), os.fdatasync(fd)))
    finally:
        os.close(fd)
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
    try:
        page = mmap.mmap(-1, 4096)  # O_DIRECT needs an aligned buffer
        page.write(b"d" * 4096)
        out["4 KiB O_DIRECT|O_DSYNC overwrite"] = per_op_us(
            n, lambda i: os.pwrite(fd, page, (i % 4096) * 4096))
    finally:
        os.close(fd)
        os.unlink(path)
    return out


def loopback_peer(serve):
    """Forks a process that accepts one loopback connection and runs `serve(conn)` on it.
    Returns the connected client socket and the child's pid."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    pid = os.fork()
    if pid == 0:
        conn, _ = listener.accept()
        serve(conn)
        conn.close()
        os._exit(0)
    client = socket.create_connection(listener.getsockname())
    listener.close()
    return client, pid


def tcp_round_trip_us(n=20000):
    def echo(conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(64):
            conn.sendall(data)

    client, pid = loopback_peer(echo)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    us = per_op_us(n, lambda i: (client.sendall(b"x" * 32), client.recv(64)))
    client.close()
    os.waitpid(pid, 0)
    return us


def replicated_commit(dir, writers, n):
    """Durable writes per second and µs each on one process, then on a leader with two
    follower processes (quorum 2 of 3), `writers` records per sync (group commit)."""
    record = b"r" * 300 * writers

    def follower(index):
        def serve(conn):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            fd = os.open(os.path.join(dir, f"follower{index}.log"),
                         os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            while True:
                got = 0
                while got < len(record):
                    data = conn.recv(len(record) - got)
                    if not data:
                        os.close(fd)
                        return
                    got += len(data)
                os.write(fd, record)
                os.fdatasync(fd)
                conn.sendall(b"k")
        return loopback_peer(serve)

    fd = os.open(os.path.join(dir, "leader.log"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    alone = per_op_us(n, lambda i: (os.write(fd, record), os.fdatasync(fd)))
    peers = [follower(i) for i in range(2)]
    for sock, _ in peers:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # The leader's own sync runs on a thread that reports on a pipe, so the leader can wait
    # for whichever two of the three syncs finish first (raft-rs counts its own too).
    work_r, work_w = os.pipe()
    done_r, done_w = os.pipe()

    def leader_syncs():
        while os.read(work_r, 1) == b"w":
            os.write(fd, record)
            os.fdatasync(fd)
            os.write(done_w, b"d")

    syncer = threading.Thread(target=leader_syncs)
    syncer.start()

    def one(i):
        for sock, _ in peers:
            sock.sendall(record)
        os.write(work_w, b"w")
        waiting = [done_r] + [sock for sock, _ in peers]
        done = 0
        while done < 2:
            ready, _, _ = select.select(waiting, [], [])
            for r in ready:
                os.read(r, 1) if r == done_r else r.recv(1)
                waiting.remove(r)
                done += 1
        # The third finishes before the next write, so all three stay in step.
        for r in waiting:
            os.read(r, 1) if r == done_r else r.recv(1)

    replicated = per_op_us(n, one)
    os.write(work_w, b"q")
    syncer.join()
    # The second follower inherited the first one's socket at fork: close both, then stop them.
    for sock, _ in peers:
        sock.close()
    for _, pid in peers:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    os.close(fd)
    for name in ["leader.log", "follower0.log", "follower1.log"]:
        os.unlink(os.path.join(dir, name))
    return alone, replicated


def fuse_round_trip_us(mount, n=20000):
    fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return per_op_us(n, lambda i: os.fsync(fd))
    finally:
        os.close(fd)


def make_file(path, size):
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    with open(path, "wb") as f:
        block = os.urandom(MIB)
        for _ in range(size // MIB):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def evict(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def local_cold_read(path):
    evict(path)
    fd = os.open(path, os.O_RDONLY)
    buf = memoryview(bytearray(MIB))
    start, total = time.perf_counter(), 0
    while (n := os.readv(fd, [buf])) > 0:
        total += n
    os.close(fd)
    return total / MIB / (time.perf_counter() - start)


def sendfile_pipe_cold(path):
    size = os.path.getsize(path)
    evict(path)

    def send_file(conn):
        fd = os.open(path, os.O_RDONLY)
        sent = 0
        while sent < size:
            sent += os.sendfile(conn.fileno(), fd, sent, size - sent)

    client, pid = loopback_peer(send_file)
    buf = memoryview(bytearray(MIB))
    start, got = time.perf_counter(), 0
    while got < size and (n := client.recv_into(buf)) > 0:
        got += n
    elapsed = time.perf_counter() - start
    os.waitpid(pid, 0)
    client.close()
    return got / MIB / elapsed


def steps(dir, mount):
    """The cost of each unavoidable step, in µs, as `mfsha bench fuse` reads them."""
    sync, replicated = replicated_commit(dir, 1, 1000)
    out = {
        "tcp_round_trip_us": tcp_round_trip_us(),
        "sync_us": sync,
        "replicated_sync_us": replicated,
    }
    if mount:
        out["fuse_round_trip_us"] = fuse_round_trip_us(mount)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="/var/tmp/mfsha-floors")
    parser.add_argument("--mount", help="an mfsha mount, for the FUSE round trip")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--commit-only", action="store_true")
    parser.add_argument("--steps-json", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    if args.steps_json:
        print(json.dumps(steps(args.dir, args.mount)))
        return
    print(f"floors on this machine (files in {args.dir})")
    if not args.commit_only:
        for what, us in durable_writes(os.path.join(args.dir, "durable.bin")).items():
            print(f"  durable write, {what:<34} {us:7.1f} µs")
    print(f"  loopback TCP round trip (blocking)              {tcp_round_trip_us():7.1f} µs")
    for writers in (1, 32):
        alone, replicated = replicated_commit(args.dir, writers, 2000)
        print(f"  {writers:2} writer(s) per sync: one process {alone:7.1f} µs/sync "
              f"({writers * 1e6 / alone:8.0f} records/s); leader + 2 followers "
              f"{replicated:7.1f} µs/sync ({writers * 1e6 / replicated:8.0f} records/s), "
              f"+{replicated - alone:.0f} µs")
    if args.commit_only:
        return
    if args.mount:
        print(f"  FUSE round trip on {args.mount} (fsyncdir)  {fuse_round_trip_us(args.mount):7.1f} µs")
    big = os.path.join(args.dir, "cold.bin")
    make_file(big, 1024 * MIB)
    ratios = []
    for r in range(args.rounds):
        local, piped = local_cold_read(big), sendfile_pipe_cold(big)
        ratios.append(piped / local)
        print(f"  round {r + 1}: local cold read {local:6.0f} MiB/s, "
              f"sendfile -> loopback -> recv {piped:6.0f} MiB/s ({piped / local:4.0%} of local)")
    print(f"  median: the bare pipe reaches {statistics.median(ratios):.0%} of the local cold read")
    os.unlink(big)


if __name__ == "__main__":
    main()
