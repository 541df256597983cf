"""The JupyterLab server of the browser tests, and a fresh browser page on it (see conftest.py)."""

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "outputs" / "e2e"
LAB_SETTINGS = {  # JupyterLab user settings for the test server only
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_chromium():
    """Path of the Chromium binary: ``$E2E_CHROMIUM``, else the first of chromium, chromium-browser on PATH."""
    for name in (os.environ.get("E2E_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    pytest.fail("no Chromium found: run `make e2e` (it installs Debian's chromium) or set E2E_CHROMIUM")


class LabServer:
    """A running ``jupyter lab`` process, and the REST calls the tests need."""

    def __init__(self, workdir, data_dir, log_path):
        self.workdir = Path(workdir)
        self.port = _free_port()
        self.token = secrets.token_hex(24)
        self.base = f"http://127.0.0.1:{self.port}"
        jupyter = self.workdir / "jupyter"
        for name, values in LAB_SETTINGS.items():
            path = jupyter / "settings" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = dict(os.environ, KOALA_QUICK="1", KOALA_DATA=str(data_dir), TF_CPP_MIN_LOG_LEVEL="2",
                   JUPYTER_CONFIG_DIR=str(jupyter / "config"), JUPYTER_RUNTIME_DIR=str(jupyter / "runtime"),
                   JUPYTERLAB_SETTINGS_DIR=str(jupyter / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(jupyter / "workspaces"))
        command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                   "--port-retries=0", f"--IdentityProvider.token={self.token}",
                   f"--ServerApp.root_dir={self.workdir}", "--ServerApp.terminals_enabled=False",
                   "--LabApp.extension_manager=readonly"]
        if os.geteuid() == 0:  # CI runs as root
            command.append("--allow-root")
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, cwd=self.workdir, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def url(self, path):
        return f"{self.base}/{path.lstrip('/')}?token={self.token}"

    def api(self, path, method="GET", timeout=10):
        request = urllib.request.Request(f"{self.base}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def wait_ready(self, timeout=240):  # generous: the CPU may be shared with a training job
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.api("status", timeout=2)
                return
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"jupyter lab did not answer on {self.base} within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines=30):
        self._log.flush()
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def kernel_pids(self):
        """Process ids of the server's child processes (the kernels)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def shutdown_kernels(self):
        """Shut down every kernel (and its session), so the next notebook starts on an idle CPU."""
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE", timeout=30)
        for kernel in self.api("kernels"):
            self.api(f"kernels/{kernel['id']}", method="DELETE", timeout=30)

    def stop(self):
        """Stop the server and its kernels: politely through the API, then by signal; never leave one running."""
        kernels = self.kernel_pids() if self.process.poll() is None else []
        if self.process.poll() is None:
            try:
                self.api("shutdown", method="POST", timeout=30)  # shuts the kernels down too
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        for pid in kernels:  # kernels run in their own process groups: end any left by a failed shutdown
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        self._log.close()
        alive = [pid for pid in kernels if Path(f"/proc/{pid}").exists() and _is_running(pid)]
        if alive:
            raise RuntimeError(f"kernel processes {alive} still running after the JupyterLab server stopped")


def _is_running(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@contextlib.contextmanager
def open_page(browser, lab):
    """A fresh browser page (1400 x 1700 px: the quiz fits); the kernels are shut down when it closes."""
    context = browser.new_context(viewport={"width": 1400, "height": 1700})
    context.set_default_timeout(30_000)
    context.set_default_navigation_timeout(120_000)  # JupyterLab's first load on a busy CPU
    try:
        yield context.new_page()
    finally:
        context.close()
        lab.shutdown_kernels()
