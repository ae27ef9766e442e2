"""What the testbed benchmarks share (tools/bench-attack, tools/bench-streaming-testbed): the
testbed's hosts, background processes inside them, the machine's CPU, images and their digests."""
import hashlib, os, signal, subprocess, time

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TOOLS)
TESTBED = os.path.join(TOOLS, "testbed")


def vmswarm_binary(log):
    """$VMSWARM, or the release build (built first)."""
    if os.environ.get("VMSWARM"):
        return os.environ["VMSWARM"]
    log("building vmswarm (release)")
    subprocess.run(["swift", "build", "-c", "release", "--product", "vmswarm"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    bin_path = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
    return os.path.join(bin_path, "vmswarm")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def random_image(path, mib):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    return sha256(path)


class MachineCPU:
    """Busy share of all cores between start() and stop(), from /proc/stat."""

    @staticmethod
    def sample():
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return {"total": sum(fields[:8]), "idle": idle + iowait, "nice": nice}

    def start(self):
        self.a = self.sample()

    def stop(self):
        b = self.sample()
        total = b["total"] - self.a["total"] or 1
        return {"busy_pct": round(100 * (1 - (b["idle"] - self.a["idle"]) / total), 1),
                "nice_pct": round(100 * (b["nice"] - self.a["nice"]) / total, 1),
                "load1": float(open("/proc/loadavg").read().split()[0])}


def peak_rss_mib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Testbed:
    def __init__(self, prefix, hosts, net, rate="100mbit"):
        self.prefix, self.hosts, self.net, self.rate = prefix, hosts, net, rate

    def cmd(self, *args):
        return [TESTBED, "--prefix", self.prefix] + list(args)

    def up(self):
        subprocess.run(self.cmd("down"), capture_output=True)  # what an interrupted run may have left
        subprocess.run(self.cmd("--hosts", str(self.hosts), "--rate", self.rate, "--net", self.net, "up"), check=True)

    def down(self):
        subprocess.run(self.cmd("down"))

    def addr(self, host):
        return "%s.1.%d" % (self.net, int(host[1:]))


class Procs:
    """Background processes of one phase, each in a process group of its own; `ip netns exec` replaces
    itself with the program, so a Popen's pid is the program's."""

    def __init__(self, testbed, folder):
        self.testbed, self.folder, self.procs = testbed, folder, []

    def start(self, host, argv, name):
        proc = subprocess.Popen(self.testbed.cmd("exec", host, *argv), stdin=subprocess.DEVNULL,
                                stdout=open(os.path.join(self.folder, name + ".log"), "w"), stderr=subprocess.STDOUT,
                                cwd=self.folder, start_new_session=True)
        self.procs.append(proc)
        return proc

    def output(self, name):
        try:
            return open(os.path.join(self.folder, name + ".log")).read()
        except FileNotFoundError:
            return ""

    def wait_for(self, name, text, seconds):
        end = time.time() + seconds
        while time.time() < end:
            if text in self.output(name):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            for proc in self.procs:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        pass
            end = time.time() + wait
            while time.time() < end and any(p.poll() is None for p in self.procs):
                time.sleep(0.05)


