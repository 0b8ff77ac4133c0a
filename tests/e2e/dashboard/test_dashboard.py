#!/usr/bin/env python3
"""Every panel of deploy/grafana/tzkms-dashboard.json shows data from a real tzkms.

Starts the real kv-emulator (throttling part of the sign calls through its control API), the real tzkms
binary with two Azure Key Vault keys in it, a real Prometheus scraping tzkms every second, and the real
tzkms-load driving a baker load; sends refusals (a 0x03 operation the default policy refuses, a consensus
payload under the watermark, an unknown key) beside it. Then it takes every panel's expressions from the
dashboard, substitutes the template variables as Grafana would, and evaluates each through Prometheus's
/api/v1/query until every one has a non-empty, finite, non-zero result, or the deadline passes; it then
fails naming each panel without data. Before any of that, it checks the JSON (well-formed, importable
shape, the datasource and key variables, every panel on the datasource variable) and that every metric
the dashboard names is one tzkms exports (a renamed metric would silently blank a panel).

Python standard library only. Environment: TZKMS_BIN, KV_EMULATOR_BIN, TZKMS_LOAD_BIN (default: beside
TZKMS_BIN), PROMETHEUS_BIN (default: prometheus on PATH), DASHBOARD_DEADLINE_S (default 60), DASHBOARD_JSON
(default: deploy/grafana/tzkms-dashboard.json; another file to check a changed dashboard).
"""

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DASHBOARD = os.environ.get("DASHBOARD_JSON") or os.path.join(REPO, "deploy", "grafana", "tzkms-dashboard.json")
SOURCE = os.path.join(REPO, "crates", "tzkms", "src")
SECRET = "dashboard-e2e-secret"
# Grafana's $__rate_interval is at least four scrape intervals; Prometheus scrapes every second here.
RATE_INTERVAL = "10s"
# Expressions whose value may rightly be 0 while tzkms works (a round-0 watermark; an age that was just
# reset). Every other expression must have a non-zero sample, so a panel fed by a series that exists but
# never moves (a counter created at 0) does not pass for "data".
ZERO_IS_DATA = ("tzkms_watermark_round", "tzkms_azure_last_answer_age_seconds")

results = {"passed": 0, "failed": 0}


def ok(what):
    results["passed"] += 1
    print(f"ok - {what}", flush=True)


def not_ok(what, detail=""):
    results["failed"] += 1
    print(f"not ok - {what}", flush=True)
    for line in str(detail).splitlines():
        print(f"    {line}", flush=True)


def binary(env, default):
    path = os.environ.get(env) or default
    if not (path and os.path.isfile(path) and os.access(path, os.X_OK)):
        sys.exit(f"test_dashboard: no executable for {env} at {path!r} (build it, or set {env})")
    return os.path.abspath(path)


# ------------------------------------------------------------------------------------------ static checks

def panels_of(dashboard):
    """Every panel that is not a row, rows' nested panels included."""
    out = []
    for p in dashboard.get("panels", []):
        if p.get("type") == "row":
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def static_checks(dashboard):
    """The JSON's shape: what Grafana >= 9 needs to import it and what the live part relies on."""
    problems = []
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        problems.append("schemaVersion must be an integer >= 36 (Grafana 9)")
    for field in ("title", "uid", "panels", "templating"):
        if field not in dashboard:
            problems.append(f"no top-level {field!r}")
    if "id" in dashboard and dashboard["id"] is not None:
        problems.append("a top-level numeric id makes import overwrite another dashboard: drop it")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("no 'datasource' variable of type datasource over prometheus")
    for name in ("instance", "key"):
        v = variables.get(name)
        if not v or v.get("type") != "query" or "label_values(" not in str(v.get("query")):
            problems.append(f"no {name!r} query variable with label_values(...)")
        elif v.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"variable {name!r} does not use the datasource variable")
    ids = set()
    for p in panels_of(dashboard):
        title = p.get("title", "<untitled>")
        if p.get("id") in ids:
            problems.append(f"panel {title!r}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
            problems.append(f"panel {title!r}: gridPos {g} is not within 24 columns")
        if p.get("datasource", {}).get("uid") != "${datasource}":
            problems.append(f"panel {title!r}: datasource is not ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"panel {title!r}: no query")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            problems.append(f"panel {title!r}: refIds {refs} missing or repeated")
        for t in targets:
            if not t.get("expr"):
                problems.append(f"panel {title!r} {t.get('refId')}: empty expr")
            if t.get("datasource", {}).get("uid") not in (None, "${datasource}"):
                problems.append(f"panel {title!r} {t.get('refId')}: query datasource is not ${{datasource}}")
            unknown = set(re.findall(r"\$(\w+)", t.get("expr", ""))) - {"instance", "key", "__rate_interval"}
            if unknown:
                problems.append(f"panel {title!r} {t.get('refId')}: unknown variables {sorted(unknown)}")
    return problems, variables


def source_metric_names():
    names = set()
    for root, _, files in os.walk(SOURCE):
        for f in files:
            if f.endswith(".rs"):
                with open(os.path.join(root, f), encoding="utf-8") as fh:
                    names.update(re.findall(r'"(tzkms_[a-z_]+)"', fh.read()))
    return names


def unknown_metrics(exprs, known):
    missing = set()
    for expr in exprs:
        for name in re.findall(r"\btzkms_[a-z_]+", expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in known and base not in known:
                missing.add(name)
    return sorted(missing)


# ------------------------------------------------------------------------------------------ processes

class Procs:
    def __init__(self):
        self.live = []

    def start(self, name, args, **kw):
        p = subprocess.Popen(args, **kw)
        self.live.append((name, p))
        return p

    def stop_all(self):
        for _, p in reversed(self.live):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in reversed(self.live):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def read_lines_until(proc, done, what, timeout=30.0):
    """Reads proc's stdout lines (in a thread, so a silent process cannot hang us) until done(lines)."""
    lines = []
    finished = threading.Event()

    def reader():
        for raw in proc.stdout:
            lines.append(raw.rstrip("\n"))
            if done(lines):
                finished.set()
                break
        finished.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    if not finished.wait(timeout) or not done(lines):
        raise RuntimeError(f"{what} did not start; its output:\n" + "\n".join(lines))
    # Keep draining, so a full pipe never blocks the process.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return lines


def http(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, deadline, what, interval=0.2):
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------------------------------ queries

def substitute(expr, instance_re, key_re):
    return (expr.replace("$__rate_interval", RATE_INTERVAL)
            .replace("$instance", instance_re)
            .replace("$key", key_re))


def prom_query(prom, expr):
    status, body = http("GET", f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    data = json.loads(body)
    if status != 200 or data.get("status") != "success":
        return None, f"HTTP {status}: {data.get('errorType')}: {data.get('error')}"
    return data["data"], None


def has_data(data, zero_ok):
    """A vector with a finite (and, unless zero_ok, non-zero) sample; or such a scalar."""
    if data is None:
        return False
    if data["resultType"] == "vector":
        values = [float(s["value"][1]) for s in data["result"]]
    elif data["resultType"] == "scalar":
        values = [float(data["result"][1])]
    else:
        return False
    return any(math.isfinite(v) and (zero_ok or v != 0) for v in values)


def label_values(prom, query):
    """Grafana's label_values(selector, label) through the series API."""
    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
    if not m:
        raise ValueError(f"not label_values(selector, label): {query}")
    selector, label = m.groups()
    status, body = http("GET", f"{prom}/api/v1/series?" + urllib.parse.urlencode({"match[]": selector}))
    data = json.loads(body)
    if status != 200:
        return None
    return sorted({s[label] for s in data.get("data", []) if label in s})


def regex_of(values):
    """A multi-value variable as Grafana formats it for Prometheus: (a|b), regex metacharacters escaped."""
    return "(" + "|".join(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", v) for v in values) + ")"


# ------------------------------------------------------------------------------------------ the test

def main():
    started = time.monotonic()
    deadline_s = float(os.environ.get("DASHBOARD_DEADLINE_S", "60"))
    tzkms = binary("TZKMS_BIN", os.path.join(REPO, "target", "release", "tzkms"))
    emulator = binary("KV_EMULATOR_BIN", os.path.join(os.path.dirname(tzkms), "kv-emulator"))
    load = binary("TZKMS_LOAD_BIN", os.path.join(os.path.dirname(tzkms), "tzkms-load"))
    prometheus = binary("PROMETHEUS_BIN", shutil.which("prometheus") or "")

    # -- static checks
    try:
        with open(DASHBOARD, encoding="utf-8") as f:
            dashboard = json.load(f)
        ok(f"{os.path.relpath(DASHBOARD, REPO)} is well-formed JSON")
    except (OSError, ValueError) as e:
        not_ok("the dashboard is well-formed JSON", e)
        return 1
    problems, variables = static_checks(dashboard)
    if problems:
        not_ok("dashboard shape (Grafana >= 9 import, variables, datasource)", "\n".join(problems))
    else:
        ok("dashboard shape: schemaVersion, datasource/instance/key variables, every panel on ${datasource}")
    queries = []  # (panel title, refId, expr)
    for p in panels_of(dashboard):
        for t in p.get("targets", []):
            queries.append((p["title"], t["refId"], t["expr"]))
    var_queries = {n: v["query"] for n, v in variables.items() if v.get("type") == "query"}
    missing = unknown_metrics([q[2] for q in queries] + list(var_queries.values()), source_metric_names())
    if missing:
        not_ok("every metric the dashboard names exists in crates/tzkms/src", "unknown: " + ", ".join(missing))
    else:
        ok(f"every metric the dashboard names exists in crates/tzkms/src ({len(queries)} queries)")

    # -- live: emulator, tzkms, Prometheus, load
    tmp = tempfile.mkdtemp(prefix="tzkms-dashboard.")
    procs = Procs()
    try:
        emu = procs.start("kv-emulator", [
            emulator, "--listen", "127.0.0.1:0", "--identity-listen", "127.0.0.1:0",
            "--ca-file", os.path.join(tmp, "ca.pem"), "--client-secret", SECRET, "--control-api",
            "--latency-ms", "3", "--jitter-ms", "2",
        ], stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "emulator.log"), "w"), text=True)
        info = dict(l.split("=", 1) for l in read_lines_until(
            emu, lambda ls: any(l.startswith("challenge=") for l in ls), "kv-emulator") if "=" in l)

        secret_file = os.path.join(tmp, "azure-secret")
        with open(os.open(secret_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(SECRET)
        config = os.path.join(tmp, "tzkms.toml")
        with open(config, "w") as f:
            f.write("\n".join([
                "[keys]", "generate_if_empty = false", "",
                "[azure]", f'vault_url = "{info["vault_url"]}"', f'ca_file = "{info["ca_file"]}"', "",
                "[azure.credential]", 'kind = "client_secret"', f'tenant_id = "{info["tenant_id"]}"',
                f'client_id = "{info["client_id"]}"', f'client_secret_file = "{secret_file}"',
                f'authority_host = "{info["authority_host"]}"', "",
            ]))
        data = os.path.join(tmp, "data")
        os.mkdir(data, 0o700)
        keys = []
        for name, curve in (("dash-tz3", "p256"), ("dash-tz2", "secp256k1")):
            r = subprocess.run([tzkms, "--config", config, "--data-dir", data, "azure", "keys", "create",
                                "--name", name, "--curve", curve], capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"tzkms azure keys create failed: {r.stderr}")
            keys.append(r.stdout.split("\n")[0].strip())

        server = procs.start("tzkms", [
            tzkms, "serve", "--config", config, "--data-dir", data, "--listen", "127.0.0.1:0",
            "--metrics-listen", "127.0.0.1:0",
        ], stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "tzkms.log"), "w"), text=True)
        out = read_lines_until(server, lambda ls: any(l.startswith("metrics on http://") for l in ls)
                               and any(l.startswith("listening on http://") for l in ls), "tzkms serve")
        signer = next(l for l in out if l.startswith("listening on http://")).split("http://")[1].strip()
        ops = next(l for l in out if l.startswith("metrics on http://")).split("metrics on http://")[1]
        ops = ops.rsplit("/metrics", 1)[0].strip()

        # A share of the sign calls is throttled (429 without Retry-After: tzkms backs off and retries).
        control = info["control_api"]  # http://…/_emulator, on the emulator's plain-HTTP listener
        status, body = http("POST", f"{control}/faults",
                            headers={"content-type": "application/json"},
                            body=json.dumps({"fault": "throttle_above_rate", "target": "Sign", "max": 10,
                                             "per_ms": 1000, "retry_after_s": None}).encode())
        if status != 204:
            raise RuntimeError(f"kv-emulator control API refused the throttle: {status} {body[:200]!r}")

        port = free_port()
        prom = f"http://127.0.0.1:{port}"
        prom_config = os.path.join(tmp, "prometheus.yml")
        with open(prom_config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: tzkms\n    static_configs:\n"
                    f"      - targets: ['{ops}']\n")
        procs.start("prometheus", [
            prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
        ], stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "prometheus.log"), "w"))
        boot = time.monotonic() + 30

        def prom_ready():
            try:
                return http("GET", f"{prom}/-/ready", timeout=2)[0] == 200
            except OSError:
                return False
        wait_for(prom_ready, boot, "Prometheus /-/ready")

        loader = procs.start("tzkms-load", [
            load, "--target", f"http://{signer}", "--key", keys[0], "--key", keys[1], "--mode", "baker",
            "--delegates", "2", "--levels", "1000000", "--blocks", "--extra-round-every", "3",
            "--level-time-ms", "100", "--no-limits", "--allow-errors",
        ], stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "load.log"), "w"))

        # Refusals beside the load: policy (0x03 is not in the default policy), watermark (a preattestation
        # at level 1, far under the load's levels), an unknown key.
        def refusals():
            pre = "12" + "7a06a770" + "00" * 32 + "14" + "0000" + f"{1:08x}" + "00000000" + "00" * 32
            for body, key in (('"0300"', keys[0]), (f'"{pre}"', keys[0])):
                http("POST", f"http://{signer}/keys/{key}?version=3", body=body.encode(),
                     headers={"content-type": "application/json"})
            http("GET", f"http://{signer}/keys/tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx")

        # -- poll until every panel's every query has data
        deadline = time.monotonic() + deadline_s
        instance_values = key_values = None
        pending = {}
        last = {}
        while True:
            if loader.poll() is not None:
                raise RuntimeError(f"tzkms-load ended early (exit {loader.returncode}); see its log:\n"
                                   + open(os.path.join(tmp, "load.log")).read()[-2000:])
            refusals()
            instance_values = label_values(prom, var_queries["instance"])
            if instance_values:
                key_values = label_values(prom, var_queries["key"].replace("$instance", regex_of(instance_values)))
            if instance_values and key_values and set(keys) <= set(key_values):
                inst, key = regex_of(instance_values), regex_of(key_values)
                pending = {}
                for title, ref, expr in queries:
                    e = substitute(expr, inst, key)
                    data, err = prom_query(prom, e)
                    last[(title, ref)] = (e, err or json.dumps(data["result"])[:300])
                    if err or not has_data(data, any(z in expr for z in ZERO_IS_DATA)):
                        pending[(title, ref)] = e
                if not pending:
                    break
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)

        if instance_values:
            ok(f"variable instance: label_values gives {instance_values}")
        else:
            not_ok("variable instance: label_values gives nothing (tzkms_build_info not scraped)")
        if key_values and set(keys) <= set(key_values):
            ok(f"variable key: label_values gives both vault keys ({len(key_values)} values)")
        else:
            not_ok(f"variable key: label_values gives {key_values}, expected {keys} among them")
        for title, ref, expr in queries:
            if (title, ref) in pending or (title, ref) not in last:
                e, got = last.get((title, ref), (expr, "never evaluated: variables had no values"))
                not_ok(f"panel {title!r} query {ref} has no data after {deadline_s:.0f} s",
                       f"expr: {e}\nresult: {got}")
            else:
                ok(f"panel {title!r} query {ref} has data")

        # The throttling the panels show is the emulator's: it did answer 429s.
        status, body = http("GET", f"{control}/counters")
        sign = json.loads(body).get("Sign", {})
        if sign.get("received", 0) > sign.get("succeeded", 0) > 0:
            ok(f"emulator: {sign['received']} sign requests, {sign['succeeded']} answered 2xx (the rest throttled)")
        else:
            not_ok("emulator throttled none of the sign calls", json.dumps(sign))
    except Exception as e:  # a broken setup is a failure that says what broke
        not_ok("dashboard test setup", "".join(traceback.format_exception(e)))
        for log in ("tzkms.log", "emulator.log", "prometheus.log", "load.log"):
            path = os.path.join(tmp, log)
            if os.path.exists(path):
                print(f"--- {log} (tail)\n" + open(path).read()[-1500:], file=sys.stderr)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"dashboard: {results['passed']} passed, {results['failed']} failed "
          f"in {time.monotonic() - started:.1f}s", flush=True)
    return 1 if results["failed"] else 0


def on_signal(signum, _frame):
    # timeout(1) or run.sh stopping us: unwind through main's finally, which stops every child.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sys.exit(main())
