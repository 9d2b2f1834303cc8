"""Drives headless Chromium over the DevTools protocol against a running tipoff:
signs in to /admin/ui with the admin token, checks that every service is shown, clicks
"restart" on one service and waits for its restart count to change, and writes a screenshot.

Usage: dashboard.py BASE_URL ADMIN_TOKEN SERVICE OUT_DIR
Prints "ok <restarts before> <restarts after>" and exits 0, or explains and exits 1.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # websocket-client


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Page:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression, what, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                value = self.eval(expression)
                if value:
                    return value
            except RuntimeError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"timed out waiting for {what}; page text: {self.eval('document.body.innerText')!r}")


def main():
    base, token, service, out_dir = sys.argv[1:5]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("chromium not installed", file=sys.stderr)
        return 2
    port = free_port()
    profile = tempfile.mkdtemp(prefix="tipoff-chromium-")
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", f"--remote-debugging-port={port}",
         f"--user-data-dir={profile}", "--window-size=1400,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        targets = None
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    targets = [t for t in json.load(r) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        if not targets:
            raise SystemExit("chromium did not expose a page over DevTools")
        page = Page(targets[0]["webSocketDebuggerUrl"])
        page.call("Page.enable")
        page.call("Page.navigate", url=f"{base}/admin/ui")
        page.wait("document.getElementById('sign-in') !== null", "the sign-in form")
        page.eval(f"document.getElementById('token').value = {json.dumps(token)}; "
                  "document.getElementById('sign-in').click(); true")
        page.wait("document.querySelectorAll('#services tbody tr').length > 0", "the services table")
        names = page.eval("[...document.querySelectorAll('#services tbody tr')].map(r => r.dataset.name)")
        before = int(page.wait(
            f"(document.querySelector('tr[data-name=\"{service}\"] .restarts') || {{}}).textContent",
            f"the {service} row"))
        page.eval(f"document.querySelector('button[data-service=\"{service}\"][data-action=\"restart\"]').click(); true")
        after = int(page.wait(
            f"(() => {{ const c = document.querySelector('tr[data-name=\"{service}\"] .restarts'); "
            f"return c && Number(c.textContent) !== {before} ? c.textContent : null; }})()",
            f"the {service} restart count to change"))
        page.wait("document.getElementById('outbox-backlog') !== null", "the outbox backlog")
        role = page.wait("(document.getElementById('role') || {}).textContent", "the role")
        claims = page.wait("(() => { const c = document.getElementById('claims').textContent; "
                           "return c && c !== '…' ? c : null; })()", "the withdrawal claims")
        shot = page.call("Page.captureScreenshot", format="png")
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "dashboard.png"), "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print("ok", before, after, ",".join(names), role.replace(" ", "_"), claims.replace(" ", "_"))
        return 0
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
