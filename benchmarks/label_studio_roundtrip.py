"""The round trip through a real Label Studio server, end to end (``make test-label-studio``).

    python benchmarks/label_studio_roundtrip.py --label-studio .venv-labelstudio/bin/label-studio

1. makes a small pool with texts and a few labels, and runs
   ``arm-jax select --format label-studio`` (tasks + labelling config);
2. starts Label Studio on SQLite in a temporary directory (``label-studio init`` for two users
   with API tokens, then ``label-studio start --no-browser``) on a free local port;
3. creates a project with the shipped labelling config, imports the tasks through the HTTP API,
   posts annotations as the two users (one "Tie", one skipped task), exports the project as
   JSON;
4. feeds the export to ``arm-jax train`` and checks what it read (labels, the tie, two raters);
5. stops the server. Exit 0 when everything held; prints the Label Studio version.

Never part of ``make test`` (it needs the label-studio package and a server). Nothing leaves
the machine: the server listens on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

TOKENS = {"ana@example.org": "arm-jax-token-ana-0001", "bo@example.org": "arm-jax-token-bo-0002"}
PASSWORD = "arm-jax-roundtrip"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, path: str, token: str, body=None, method=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method or ("POST" if body is not None else "GET"))
    req.add_header("Authorization", f"Token {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def _arm_jax(*args) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "arm_jax.cli.main", *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"arm-jax {' '.join(map(str, args))} failed ({out.returncode}):\n{out.stderr}")
    return out


def _wait_until_up(base: str, token: str, server: subprocess.Popen, log: Path, seconds: int = 240) -> None:
    """Poll the server's API once a second until it answers; SystemExit if it exits or stays silent."""
    for _ in range(seconds):
        try:
            _api(base, "/api/projects/", token)
            return
        except Exception:  # noqa: BLE001 - not up yet
            if server.poll() is not None:
                raise SystemExit(f"label-studio exited ({server.returncode}); see {log}") from None
            time.sleep(1)
    raise SystemExit(f"label-studio did not answer within {seconds} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label-studio", default=shutil.which("label-studio") or ".venv-labelstudio/bin/label-studio",
                   help="the label-studio executable (default: on PATH, else .venv-labelstudio/bin/label-studio)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    ls = str(Path(args.label_studio).resolve())
    work = Path(tempfile.mkdtemp(prefix="arm-jax-ls-"))
    data_dir = work / "ls-data"
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "DJANGO_DB": "sqlite",
           "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true"}
    server = None
    try:
        # 1. a pool with texts, a few labels, the tasks
        rng = np.random.default_rng(0)
        n = 24
        np.savez(work / "pool.npz", embeddings=rng.normal(size=(n, 6)).astype(np.float32),
                 item_ids=np.array([f"r{i}" for i in range(n)]), prompt_ids=np.repeat(np.arange(6), 4),
                 prompts=np.array([f"Question {i // 4}: how do I boil an egg?" for i in range(n)]),
                 responses=np.array([f"Answer {i}: " + "boil it " * (1 + i % 5) for i in range(n)]))
        labels = work / "labels.jsonl"
        labels.write_text("".join(json.dumps({"winner": f"r{2 * i}", "loser": f"r{2 * i + 1}"}) + "\n" for i in range(6)))
        _arm_jax("select", "--pool", work / "pool.npz", "--labels", labels, "--out", work / "next.json", "--k", "4",
                 "--format", "label-studio", "--depth", "1", "--width", "8", "--steps", "50")
        tasks = json.loads((work / "next.json").read_text())
        config = (work / "next.label_config.xml").read_text()

        # 2. Label Studio on SQLite, two users with tokens
        version = subprocess.run([ls, "version"], capture_output=True, text=True, env=env).stdout
        version = next((line.split(":", 1)[1].strip() for line in version.splitlines()
                        if "Label Studio version" in line), version.strip())
        for user, token in TOKENS.items():
            subprocess.run([ls, "init", "--data-dir", str(data_dir), "--username", user, "--password", PASSWORD,
                            "--user-token", token, "--enable-legacy-api-token", "--agree-fix-sqlite"],
                           check=True, capture_output=True, env=env)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(work / "server.log", "w")
        server = subprocess.Popen([ls, "start", "--data-dir", str(data_dir), "--no-browser", "--port", str(port),
                                   "--host", base, "--enable-legacy-api-token"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
        ana, bo = TOKENS.values()
        _wait_until_up(base, ana, server, work / "server.log")

        # 3. project, import, annotate (bo joins the project's organisation through init)
        project = _api(base, "/api/projects/", ana, {"title": "arm-jax round trip", "label_config": config})
        pid = project["id"]
        _api(base, f"/api/projects/{pid}/import", ana, tasks)
        listed = _api(base, f"/api/tasks/?project={pid}&page_size=100", ana)
        listed = listed["tasks"] if isinstance(listed, dict) else listed
        listed = sorted(listed, key=lambda t: t["data"]["rank"])
        assert len(listed) == 4, f"imported {len(listed)} tasks, expected 4"

        def choice(value):
            return [{"from_name": "preference", "to_name": "text_a", "type": "choices", "value": {"choices": [value]}}]

        t1, t2, t3, t4 = (t["id"] for t in listed)
        _api(base, f"/api/tasks/{t1}/annotations/", ana, {"result": choice("A")})
        _api(base, f"/api/tasks/{t1}/annotations/", bo, {"result": choice("B")})
        _api(base, f"/api/tasks/{t2}/annotations/", bo, {"result": choice("Tie")})
        _api(base, f"/api/tasks/{t3}/annotations/", ana, {"result": [], "was_cancelled": True})  # skipped
        _api(base, f"/api/tasks/{t4}/annotations/", ana, {"result": choice("B")})
        export = _api(base, f"/api/projects/{pid}/export?exportType=JSON", ana)
        (work / "export.json").write_text(json.dumps(export, indent=1))

        # 4. the export back into arm-jax
        out = _arm_jax("train", "--pool", work / "pool.npz", "--labels", work / "export.json",
                       "--out", work / "model.msgpack", "--depth", "0")
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from arm_jax.workflow import labels as labels_lib
        from arm_jax.workflow import pool as pool_io

        read = labels_lib.load_labels(work / "export.json", pool_io.load_pool(work / "pool.npz"))
        v = read.votes
        assert v is not None and v.n == 4, f"expected 4 labels from the export, got {None if v is None else v.n}"
        assert read.n_ties == 1 and read.n == 3, (read.n, read.n_ties)
        assert len(v.annotators) == 2, v.annotators
        assert "2 raters" in out.stderr, out.stderr
        print(f"Label Studio {version}: imported 4 tasks, 5 annotations by 2 users (1 tie, 1 skipped), "
              f"exported {len(export)} tasks; arm-jax read 4 labels (3 decided, 1 tie) from raters "
              f"{', '.join(v.annotators)} and trained: OK")
        return 0
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
