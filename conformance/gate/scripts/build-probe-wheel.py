"""Writes the clprobe wheel (pure Python, no network) into the directory given.

clprobe is the child the fidelity suite runs inside uv's environments. It signals that
it runs, waits until the harness lets it go, then checks that its environment is still
there and reports what it saw:

    CLPROBE_READY   file created (with the child's pid) once the child runs
    CLPROBE_GO      file the child waits for before checking (absent: no wait)
    CLPROBE_HOLD    maximum seconds to wait for CLPROBE_GO (default 30); "forever" never stops
    CLPROBE_REPORT  file the report (JSON) is written to
    CLPROBE_EXEC    optional command (JSON list) run before the check, e.g. a nested clean
    CLPROBE_DAEMON  "1": fork a daemon that does all of the above (its pid in the ready
                    file), and exit 0 as soon as it has signalled: the daemon outlives
                    the child and keeps using the environment
    CACHELOCK_ENV   set by `cachelock run`: the environment is that directory, intact
                    while its marker file `cachelock-env` is there (the probe is then
                    imported from the wheel file itself, so only the marker is checked)

The ready file holds "<pid>\n<environment>". Exit 0 when the environment was intact,
3 when it was not.
Usage: build-probe-wheel.py OUTDIR  (prints the wheel's path)
"""

import base64
import hashlib
import os
import sys
import zipfile

NAME = "clprobe"
VERSION = "0.1.0"

INIT = '''"""clprobe: a probe child for the cachelock fidelity suite."""
import json
import os
import subprocess
import sys
import time


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _daemonise(ready):
    """Forks; the parent returns only once the daemon has signalled, then exits 0."""
    if os.fork() == 0:
        return
    while not os.path.exists(ready):
        time.sleep(0.02)
    os._exit(0)


def _cachelock_env(seen, env):
    marker = os.path.join(env, "cachelock-env")
    seen["prefix"] = env
    seen["prefix_exists"] = os.path.isdir(env)
    seen["module_file_exists"] = os.path.exists(marker)
    try:
        with open(marker) as f:
            f.read()
        seen["late_import"] = "ok"
    except Exception as e:  # the environment vanished under us
        seen["late_import"] = "%s: %s" % (type(e).__name__, e)


def main():
    ready = os.environ.get("CLPROBE_READY")
    if ready and os.environ.get("CLPROBE_DAEMON") == "1":
        _daemonise(ready)
    env = os.environ.get("CACHELOCK_ENV")
    go = os.environ.get("CLPROBE_GO")
    hold = os.environ.get("CLPROBE_HOLD", "30")
    report = os.environ.get("CLPROBE_REPORT")
    run = os.environ.get("CLPROBE_EXEC")
    seen = {"pid": os.getpid(), "prefix": env or sys.prefix, "file": __file__}
    if ready:
        _write(ready, "%d\\n%s" % (os.getpid(), seen["prefix"]))
    deadline = None if hold == "forever" else time.monotonic() + float(hold)
    while go and not os.path.exists(go):
        if deadline is not None and time.monotonic() > deadline:
            seen["go_timeout"] = True
            break
        time.sleep(0.02)
    if run:
        p = subprocess.run(json.loads(run), capture_output=True, text=True)
        seen["exec_code"] = p.returncode
        seen["exec_stderr"] = p.stderr[-4000:]
    if env:
        _cachelock_env(seen, env)
    else:
        seen["prefix_exists"] = os.path.isdir(sys.prefix)
        seen["module_file_exists"] = os.path.exists(__file__)
        try:
            from clprobe import late

            seen["late_import"] = late.OK
        except Exception as e:  # the environment vanished under us
            seen["late_import"] = "%s: %s" % (type(e).__name__, e)
    ok = seen["prefix_exists"] and seen["module_file_exists"] and seen["late_import"] == "ok"
    seen["ok"] = ok
    if report:
        _write(report, json.dumps(seen))
    return 0 if ok else 3
'''

MAIN = '''import sys

from clprobe import main

sys.exit(main())
'''

LATE = '''"""Imported only after the harness lets the child go: proves the env is still there."""
OK = "ok"
'''


def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return "%s,sha256=%s,%d" % (path, digest, len(data))


def build(outdir):
    os.makedirs(outdir, exist_ok=True)
    info = "%s-%s.dist-info" % (NAME, VERSION)
    files = {
        "clprobe/__init__.py": INIT,
        "clprobe/__main__.py": MAIN,
        "clprobe/late.py": LATE,
        info + "/METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: probe child for cachelock\n"
        % (NAME, VERSION),
        info + "/WHEEL": "Wheel-Version: 1.0\nGenerator: cachelock-build-probe-wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        info + "/entry_points.txt": "[console_scripts]\nclprobe = clprobe:_entry\n",
        info + "/top_level.txt": "clprobe\n",
    }
    files["clprobe/__init__.py"] += "\n\ndef _entry():\n    sys.exit(main())\n"
    wheel = os.path.join(outdir, "%s-%s-py3-none-any.whl" % (NAME, VERSION))
    tmp = "%s.tmp-%d" % (wheel, os.getpid())
    record = []
    # Fixed timestamps: the same inputs give the same bytes, so reruns change nothing.
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for path, text in files.items():
            data = text.encode()
            z.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data)
            record.append(record_line(path, data))
        record.append(info + "/RECORD,,")
        z.writestr(zipfile.ZipInfo(info + "/RECORD", date_time=(2020, 1, 1, 0, 0, 0)), "\n".join(record) + "\n")
    os.replace(tmp, wheel)
    return wheel


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: build-probe-wheel.py OUTDIR")
    print(build(sys.argv[1]))
