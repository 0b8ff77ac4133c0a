#!/usr/bin/env python3
"""docs-run: runs the shell blocks of README.md and docs/*.md as a reader would, and checks them.

Every ```sh / ```bash / ```shell / ```console block is either run or marked skipped with a reason. The
conventions (an HTML comment on the line before a block's opening fence, invisible on GitHub) are described in
tests/e2e/docs/README.md:

    <!-- docs-run: skip (why it cannot run here) -->
    <!-- docs-run: background ready=http://127.0.0.1:6732/authorized_keys -->   last command keeps running
    <!-- docs-run: file emu.toml -->         the next block (any language) is written to that file
    <!-- docs-run: output -->                the next block is the expected output of the previous command

and, inside shell blocks, `# → text` (on its own line after a command, or at the end of the command's line)
states a line the command prints (`…` matches anything; the text may be part of a longer line). `# → exit
status N` expects that exit status instead of 0.

Each document runs in its own scratch directory (a reader's checkout: `examples/`, `deploy/` and
`target/release/` are there) and, when it can, in its own network namespace, so the fixed ports the docs use
(6732, 8443, 9732, ...) never meet anything else on the machine. Its blocks run in order in one bash process,
so files, variables and background servers carry from block to block. A `cargo` shim on PATH maps `cargo
build --release ...` to the already built binaries and `cargo run --release -- ARGS` to `tzkms ARGS`.

Usage: docs_run.py [--repo DIR] [--bin-dir DIR] [--keep] [DOC.md ...]
Environment: TZKMS_BIN (default target/release/tzkms); kv-emulator and tzkms-load are taken beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SHELL_LANGS = {"sh", "bash", "shell", "console", "zsh"}
MARKER = re.compile(r"^\s*<!--\s*docs-run:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)\s*$")
EXPECT = "# →"
STEP_TIMEOUT_S = 60
READY_TIMEOUT_S = 30
OUTPUT_WAIT_S = 10
BINARIES = ("tzkms", "kv-emulator", "tzkms-load")
# A placeholder a reader must replace: `<alias>`, `<head+2>`, `tz3…`.
PLACEHOLDER = re.compile(r"<[A-Za-z][\w .+|-]*>|…")


@dataclasses.dataclass
class Block:
    doc: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclasses.dataclass
class Step:
    code: str  # the command(s), comments removed from expectation lines
    expect: list[str]
    exit_status: int = 0


def parse_blocks(path: Path, name: str) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, lang = m.group(1), m.group(2), m.group(3).lower()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{ticks}\s*$", lines[i]):
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1  # the closing fence
        marker = None
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0:
            mm = MARKER.match(lines[j])
            if mm:
                marker = mm.group(1)
        blocks.append(Block(name, start + 1, lang, "\n".join(body) + "\n", marker))
    return blocks


def strip_comment(line: str) -> str:
    """The line without a trailing shell comment (a `#` after whitespace, outside quotes)."""
    quote = None
    prev = " "
    for k, c in enumerate(line):
        if quote:
            if c == quote and (quote == "'" or prev != "\\"):
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and prev in " \t":
            return line[:k].rstrip()
        prev = c
    return line.rstrip()


def bash_complete(text: str) -> bool:
    return subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True).returncode == 0


def split_steps(text: str) -> list[Step]:
    """Cuts a shell block into commands (the smallest groups of lines bash parses whole), each with the
    `# →` lines that follow it or end its line."""
    steps: list[Step] = []
    pending: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith(EXPECT) and not pending:
            if not steps:
                raise ValueError(f"`{stripped}` comes before any command")
            add_expectation(steps[-1], stripped[len(EXPECT):].strip())
            continue
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        pending.append(raw)
        code = "\n".join(pending)
        if raw.rstrip().endswith("\\") or not bash_complete(code + "\n"):
            continue
        step = Step(code=code, expect=[])
        for line in pending:
            k = line.find(EXPECT)
            if k >= 0:
                add_expectation(step, line[k + len(EXPECT):].strip())
        steps.append(step)
        pending = []
    if pending:
        raise ValueError("the block ends inside an unfinished command:\n" + "\n".join(pending))
    return steps


def add_expectation(step: Step, text: str) -> None:
    m = re.fullmatch(r"exit status (\d+)", text)
    if m:
        step.exit_status = int(m.group(1))
    else:
        step.expect.append(text)


def pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part) for part in expected.split("…")))


def unmatched(expected: list[str], output: str) -> str | None:
    """The first expected line not found, in order, in the output (ANSI colours removed), or None."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines()
    k = 0
    for exp in expected:
        pat = pattern(exp)
        while k < len(lines) and not pat.search(lines[k]):
            k += 1
        if k == len(lines):
            return exp
        k += 1
    return None


def parse_marker(marker: str) -> tuple[str, dict[str, str], str]:
    """(directive, options, rest) of `skip (reason)`, `background ready=URL`, `file NAME`, `output`."""
    m = re.match(r"(\w+)\s*(.*)$", marker)
    if not m:
        raise ValueError(f"unreadable docs-run marker `{marker}`")
    directive, rest = m.group(1), m.group(2).strip()
    options = dict(re.findall(r"(\w+)=(\S+)", rest))
    return directive, options, rest


# ---------------------------------------------------------------------------------------------- running


class DocFailure(Exception):
    pass


class Shell:
    """One bash process per document; commands are sourced one by one, each one's output to its own file."""

    def __init__(self, scratch: Path, env: dict[str, str]):
        self.scratch = scratch
        self.meta = scratch / ".docs-run"
        self.meta.mkdir()
        self.status_r, status_w = os.pipe()
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=scratch,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=open(self.meta / "shell.stderr", "wb"),
            text=True,
            pass_fds=(status_w,),
            start_new_session=True,
        )
        os.close(status_w)
        self.fd = status_w  # its number in the shell
        # allexport: variables reach the commands as a reader's exported ones would; monitor: each
        # background job in its own process group, so it can be stopped whole.
        self.send("set -a -m\n")
        self.n = 0
        self.background: list[int] = []

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def status(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            r, _, _ = select.select([self.status_r], [], [], left)
            if r:
                chunk = os.read(self.status_r, 4096)
                if not chunk:
                    raise DocFailure("the shell exited (a command ran `exit`?)")
                buf += chunk
        return buf.decode().strip()

    def run(self, code: str, background: bool) -> tuple[Path, int]:
        """Runs one command; returns its output file and its exit status (or pid if background)."""
        self.n += 1
        script = self.meta / f"cmd-{self.n}.sh"
        out = self.meta / f"out-{self.n}"
        script.write_text(code + "\n")
        if background:
            self.send(f"{{ . {script} ; }} >{out} 2>&1 </dev/null &\necho \"$!\" >&{self.fd}\n")
            pid = int(self.status(10))
            self.background.append(pid)
            return out, pid
        self.send(f". {script} >{out} 2>&1 </dev/null\necho \"$?\" >&{self.fd}\n")
        try:
            return out, int(self.status(STEP_TIMEOUT_S))
        except TimeoutError:
            raise DocFailure(
                f"still running after {STEP_TIMEOUT_S} s (a server in a block not marked "
                f"`background`?); output so far:\n{tail(out)}"
            ) from None

    def close(self) -> None:
        for pid in self.background:
            signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for pid in self.background:
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if alive(pid):
                signal_group(pid, signal.SIGKILL)
        try:
            self.send("exit 0\n")
            self.proc.wait(5)
        except (BrokenPipeError, subprocess.TimeoutExpired, OSError):
            self.proc.kill()
        # anything the document's commands left behind (a stray child of a background job)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        os.close(self.status_r)


def signal_group(pid: int, sig: int) -> None:
    for target in (lambda: os.killpg(pid, sig), lambda: os.kill(pid, sig)):
        try:
            target()
            return
        except (ProcessLookupError, PermissionError):
            continue


def alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def tail(path: Path, n: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    lines = text.splitlines()
    return "\n".join("    | " + line for line in lines[-n:]) or "    | (no output)"


def answers(url: str) -> bool:
    """True when something answers at URL: any HTTP status over http(s) (certificates not checked), or a TCP
    connection for tcp:HOST:PORT."""
    if url.startswith("tcp:"):
        host, _, port = url[4:].rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
                return True
        except OSError:
            return False
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def wait_ready(url: str, pid: int, out: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if answers(url):
            return
        if not alive(pid):
            raise DocFailure(f"the background command exited before {url} answered:\n{tail(out)}")
        time.sleep(0.1)
    raise DocFailure(f"{url} did not answer within {READY_TIMEOUT_S} s:\n{tail(out)}")


def check_output(step: Step, out: Path, wait: bool) -> None:
    deadline = time.monotonic() + (OUTPUT_WAIT_S if wait else 0)
    while True:
        missing = unmatched(step.expect, out.read_text(errors="replace"))
        if missing is None:
            return
        if time.monotonic() >= deadline:
            raise DocFailure(f"expected a line matching `{missing}` in the output:\n{tail(out)}")
        time.sleep(0.1)


def check_placeholders(step: Step) -> None:
    for line in step.code.splitlines():
        code = strip_comment(line)
        m = PLACEHOLDER.search(code)
        if m:
            raise DocFailure(
                f"placeholder `{m.group(0)}` in `{code.strip()}`: write a concrete value, or mark the block "
                "`<!-- docs-run: skip (reason) -->`"
            )


def run_doc(name: str, blocks: list[Block], scratch: Path, env: dict[str, str]) -> list[dict]:
    """Runs one document's blocks in order; returns one result per shell block (and per file/output block)."""
    results: list[dict] = []
    shell = Shell(scratch, env)
    failed = False
    last_out: Path | None = None
    last_was_background = False
    try:
        for block in blocks:
            is_shell = block.lang in SHELL_LANGS
            directive, options, rest = parse_marker(block.marker) if block.marker else ("", {}, "")
            if directive == "skip":
                reason = re.sub(r"^\((.*)\)$", r"\1", rest).strip()
                if not reason:
                    raise DocFailure(f"{block.where}: a skip marker needs a reason: `skip (why)`")
                if is_shell:
                    results.append({"block": block.where, "status": "skipped", "reason": reason})
                continue
            if not is_shell and directive not in ("file", "output"):
                continue
            if failed:
                if is_shell:
                    results.append({"block": block.where, "status": "not run", "reason": "an earlier block failed"})
                continue
            started = time.monotonic()
            try:
                if directive == "file":
                    target = scratch / rest.split()[0]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(block.text)
                    results.append({"block": block.where, "status": "file", "reason": f"written to {rest.split()[0]}"})
                    continue
                if directive == "output":
                    if last_out is None:
                        raise DocFailure("an output block with no command before it")
                    expected = [line for line in block.text.splitlines() if line.strip()]
                    check_output(Step("", expected), last_out, wait=last_was_background)
                    results.append({"block": block.where, "status": "output", "reason": f"{len(expected)} lines matched"})
                    continue
                if directive not in ("", "background"):
                    raise DocFailure(f"unknown docs-run marker `{block.marker}`")
                if directive == "background" and "ready" not in options:
                    raise DocFailure("a background block needs ready=URL (or ready=tcp:HOST:PORT)")
                try:
                    steps = split_steps(block.text)
                except ValueError as e:
                    raise DocFailure(str(e)) from None
                if not steps:
                    raise DocFailure("a shell block without a command")
                for k, step in enumerate(steps):
                    check_placeholders(step)
                    background = directive == "background" and k == len(steps) - 1
                    out, value = shell.run(step.code, background)
                    last_out, last_was_background = out, background
                    where = f"`{step.code.splitlines()[0].strip()}`"
                    if background:
                        wait_ready(options["ready"], value, out)
                        check_output(step, out, wait=True)
                        continue
                    if value != step.exit_status:
                        raise DocFailure(f"{where} exited {value} (expected {step.exit_status}):\n{tail(out)}")
                    try:
                        check_output(step, out, wait=False)
                    except DocFailure as e:
                        raise DocFailure(f"{where}: {e}") from None
                results.append({
                    "block": block.where,
                    "status": "passed",
                    "reason": f"{len(steps)} command(s)" + (", the last one in the background" if directive else ""),
                    "seconds": round(time.monotonic() - started, 2),
                })
            except DocFailure as e:
                failed = True
                results.append({"block": block.where, "status": "failed", "reason": str(e)})
    finally:
        shell.close()
    return results


# ------------------------------------------------------------------------------------------ environment


CARGO_SHIM = r"""#!/usr/bin/env bash
# docs-run's stand-in for cargo: the release binaries are already built (by .ci/run or by hand).
set -euo pipefail
bin="$(dirname "$0")/../bin"
case "${1:-} ${2:-}" in
  "build --release")
    for b in tzkms kv-emulator tzkms-load; do [ -x "$bin/$b" ] || { echo "cargo shim: no $bin/$b" >&2; exit 1; }; done
    echo "    Finished \`release\` profile (docs-run: binaries built beforehand)" >&2 ;;
  "run --release")
    shift 2
    [ "${1:-}" = "--" ] && shift
    exec "$bin/tzkms" "$@" ;;
  *)
    echo "cargo shim: docs-run does not run \`cargo $*\`; mark the block skip with a reason" >&2
    exit 1 ;;
esac
"""


def reader_checkout(repo: Path, bins: dict[str, Path], scratch: Path) -> dict[str, str]:
    """A scratch directory that looks like a built checkout to the commands; returns their environment."""
    scratch.mkdir(parents=True)
    for entry in ("examples", "deploy"):
        (scratch / entry).symlink_to(repo / entry)
    tools = scratch.parent / ".tools"
    if not tools.exists():
        (tools / "bin").mkdir(parents=True)
        (tools / "shim").mkdir()
        for name, path in bins.items():
            (tools / "bin" / name).symlink_to(path)
        cargo = tools / "shim" / "cargo"
        cargo.write_text(CARGO_SHIM)
        cargo.chmod(0o755)
    (scratch / "target").mkdir()
    (scratch / "target" / "release").symlink_to(tools / "bin")
    home = scratch / ".home"
    home.mkdir()
    keep = ("LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "SHELL")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        PATH=f"{tools / 'shim'}:{tools / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        HOME=str(home),
        TMPDIR=str(scratch / ".docs-run"),
        TERM="dumb",
        NO_COLOR="1",
    )
    env.setdefault("LANG", "C.UTF-8")
    return env


def loopback_up() -> None:
    """Brings up `lo` in a fresh network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    import fcntl

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, ifr)[:18])[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))


def netns_available() -> bool:
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[3])
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one document, in a namespace
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("docs", nargs="*", help="documents relative to the repository (default: all)")
    args = parser.parse_args()
    repo = args.repo.resolve()

    tzkms = Path(os.environ.get("TZKMS_BIN", repo / "target/release/tzkms"))
    if not tzkms.is_absolute():
        tzkms = repo / tzkms
    bins = {name: (tzkms.parent / name).resolve() for name in BINARIES}
    if os.environ.get("KV_EMULATOR_BIN"):
        bins["kv-emulator"] = Path(os.environ["KV_EMULATOR_BIN"]).resolve()

    if args.one:
        # Child: one document, already inside its namespace.
        if os.environ.get("DOCS_RUN_NETNS") == "1":
            loopback_up()
        scratch = args.scratch / Path(args.one).name.removesuffix(".md")
        env = reader_checkout(repo, bins, scratch)
        results = run_doc(args.one, parse_blocks(repo / args.one, args.one), scratch, env)
        args.results.write_text(json.dumps(results))
        return 0

    missing = [f"{n} ({p})" for n, p in bins.items() if not os.access(p, os.X_OK)]
    if missing:
        print(f"docs-run: missing binaries: {', '.join(missing)} (cargo build --release --workspace --bins)")
        return 2
    docs = args.docs or ["README.md"] + sorted(str(p.relative_to(repo)) for p in (repo / "docs").glob("*.md"))
    use_netns = netns_available()
    if not use_netns:
        print("docs-run: cannot create network namespaces here; running in the host's (ports must be free)")
    work = Path(tempfile.mkdtemp(prefix="docs-run."))
    start = time.monotonic()
    all_results: list[dict] = []
    for doc in docs:
        t0 = time.monotonic()
        results_file = work / (Path(doc).name + ".json")
        cmd = [sys.executable, __file__, "--repo", str(repo), "--one", doc, "--scratch", str(work),
               "--results", str(results_file)]
        env = dict(os.environ, DOCS_RUN_NETNS="1" if use_netns else "0")
        if use_netns:
            cmd = ["unshare", "--net", "--"] + cmd
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not results_file.exists():
            results = [{"block": doc, "status": "failed",
                        "reason": f"the runner failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"}]
        else:
            results = json.loads(results_file.read_text())
        print(f"\n== {doc} ({time.monotonic() - t0:.1f} s)")
        for r in results:
            extra = f" ({r['seconds']} s)" if "seconds" in r else ""
            print(f"  {r['status'].upper():8} {r['block']}{extra}: {r['reason']}")
        all_results += results
    elapsed = time.monotonic() - start
    count = {s: sum(1 for r in all_results if r["status"] == s) for s in ("passed", "failed", "skipped", "not run")}
    print("\n== blocks run")
    for r in all_results:
        if r["status"] == "passed":
            print(f"  {r['block']}")
    print("== blocks skipped, with their reasons")
    for r in all_results:
        if r["status"] == "skipped":
            print(f"  {r['block']}: {r['reason']}")
    if count["failed"] or count["not run"]:
        print("== failed")
        for r in all_results:
            if r["status"] in ("failed", "not run"):
                print(f"  {r['block']}: {r['reason'].splitlines()[0]}")
    if args.keep:
        print(f"scratch directories kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"docs-run: {len(docs)} documents in {elapsed:.1f} s")
    print(f"docs-run: {count['passed']} passed, {count['failed'] + count['not run']} failed, "
          f"{count['skipped']} skipped")
    return 1 if count["failed"] or count["not run"] or not count["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
