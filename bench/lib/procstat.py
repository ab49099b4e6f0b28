"""CPU time and peak memory of a server process (and its descendants) from /proc."""
import os

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(path):
    """(command name, fields after it) of a /proc stat file; None when it is gone."""
    try:
        with open(path) as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.index("(") + 1:raw.rindex(")")], raw.rsplit(")", 1)[1].split()


def _ticks(fields):
    # After the command name: state is field 3, so utime (14) and stime (15) are at 11, 12.
    return int(fields[11]) + int(fields[12])


def _pids():
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _children(pid):
    kids = []
    for p in _pids():
        st = _stat(f"/proc/{p}/stat")
        if st and int(st[1][1]) == pid:
            kids.append(p)
    return kids


def _tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def cpu_seconds(pid):
    """utime + stime of pid and its live descendants, in seconds."""
    stats = (_stat(f"/proc/{p}/stat") for p in _tree(pid))
    return sum(_ticks(st[1]) for st in stats if st) / TICKS


def peak_rss_mb(pid):
    """Largest VmHWM among pid and its descendants, in MiB."""
    best = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        best = max(best, int(line.split()[1]))
        except OSError:
            continue
    return best / 1024


def rss_mb(pid):
    """Current VmRSS of pid alone, in MiB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def thread_cpu(pid):
    """CPU seconds per thread name (threads of the same name summed), for bottleneck hints."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        st = _stat(f"/proc/{pid}/task/{tid}/stat")
        if st:
            out[st[0]] = out.get(st[0], 0) + _ticks(st[1]) / TICKS
    return out


def top_threads(before, after, n=4):
    """'name 1.2s, ...' for the threads that used the most CPU between two thread_cpu calls."""
    d = {k: v - before.get(k, 0) for k, v in after.items()}
    best = sorted(d.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:.1f}s" for k, v in best if v > 0)


# Process names (/proc/<pid>/comm) of each broker on this machine.
BROKER_COMMS = {"nats": ("nats-server",), "amqp": ("beam.smp",), "kafka": ("tansu",)}


def comm_cpu(names):
    """utime + stime, in seconds, of every live process whose comm is in names."""
    stats = (_stat(f"/proc/{p}/stat") for p in _pids())
    return sum(_ticks(st[1]) for st in stats if st and st[0] in names) / TICKS


def machine_busy():
    """CPU seconds spent not idle, summed over all cores, since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    return (sum(vals[:8]) - vals[3] - vals[4]) / TICKS


class CpuBudget:
    """CPU used between start() and stop(): the server's, the broker's, and the machine's.

    `other_pid` is a second measured process (and its descendants), e.g. the relay scenario's
    receiving server; it is reported as "other" and left out of "rest"."""

    def __init__(self, broker, server_pid=None, other_pid=None):
        self.names = BROKER_COMMS.get(broker, ())
        self.pid = server_pid
        self.other_pid = other_pid

    def start(self):
        self.b0, self.m0 = comm_cpu(self.names), machine_busy()
        self.s0 = cpu_seconds(self.pid) if self.pid else 0
        self.o0 = cpu_seconds(self.other_pid) if self.other_pid else 0
        return self

    def stop(self, per):
        """CPU seconds per 1,000 of `per` units: server, broker, other, rest (load generator,
        counting tool, other processes), machine total."""
        server = (cpu_seconds(self.pid) - self.s0) if self.pid else 0
        other = (cpu_seconds(self.other_pid) - self.o0) if self.other_pid else 0
        broker = comm_cpu(self.names) - self.b0
        machine = machine_busy() - self.m0
        k = 1000 / per if per else 0
        return {"server": server * k, "broker": broker * k, "other": other * k,
                "rest": max(machine - server - broker - other, 0) * k, "machine": machine * k}
