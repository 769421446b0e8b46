"""A real Keystone and Glance 33 on loopback: the tests' OpenStack peer.

Both come from PyPI into a virtualenv of their own under
``~/.cache/imgfac-test/`` (their pins would clash with the project's), made
once and reused; they run under gunicorn on free 127.0.0.1 ports with their
databases on the PostgreSQL server at 127.0.0.1:5432 (SQLite answers
"database is locked" when several uploads run at once).  Glance stores
images in a folder (the ``file`` store).  Keystone is bootstrapped with an
admin, then a project, a user with a password, and an application
credential of that user are made for the tests.

The ``openstack`` fixture (tests/integration/conftest.py) starts one per
test session.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests

from .daemon import free_port

#: What the peer's virtualenv holds; a change of this list makes a new one.
PACKAGES = ("glance>=33,<34", "keystone", "gunicorn", "psycopg2-binary")
CACHE = Path(os.environ.get("IMGFAC_TEST_CACHE", Path.home() / ".cache" / "imgfac-test"))
VENV = CACHE / "openstack-glance33"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
REGION = "RegionOne"
PROJECT = "imgfac-tests"
USER = "imgfac-pusher"
#: Distinctive, so a test can search for them in logs and answers.
PASSWORD = "os-PASSWORD-5e0c1d9a7b-DistinctiveValue"
ADMIN_PASSWORD = "os-admin-" + "3f8a2c"
START_TIMEOUT = 90.0


def say(message: str) -> None:
    """Progress on the terminal even while pytest captures output (the first install is slow)."""
    print(f"[openstack peer] {message}", file=sys.__stderr__, flush=True)


def ensure_installed() -> Path:
    """The peer's virtualenv, made (pip install from PyPI, about 2.5 min the first time) unless there.

    A lock file keeps two test runs from installing into the same folder at once.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "openstack-glance33.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install()


def _install() -> Path:
    marker = VENV / "installed.txt"
    wanted = "\n".join(PACKAGES)
    if marker.exists() and marker.read_text() == wanted:
        return VENV
    say(f"installing Keystone and Glance 33 from PyPI into {VENV} (once; a few minutes)")
    begun = time.monotonic()
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar=off"]
    process = subprocess.Popen([*pip, *PACKAGES], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(("Collecting", "Successfully", "ERROR")):
            say(line.rstrip())
    if process.wait() != 0:
        raise RuntimeError(f"pip install of {', '.join(PACKAGES)} failed (exit {process.returncode})")
    marker.write_text(wanted)
    say(f"installed in {time.monotonic() - begun:.0f} s")
    return VENV


@dataclass
class ApplicationCredential:
    """An application credential of the test user (id and secret)."""

    id: str
    secret: str


class OpenStackPeer:
    """Keystone and Glance under gunicorn on loopback ports, with their PostgreSQL databases."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.venv = ensure_installed()
        self.keystone_port = free_port()
        self.glance_port = free_port()
        self.auth_url = f"http://127.0.0.1:{self.keystone_port}/v3"
        self.glance_url = f"http://127.0.0.1:{self.glance_port}"
        self.store_dir = workdir / "images"
        suffix = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.databases = {"keystone": f"imgfac_keystone_{suffix}", "glance": f"imgfac_glance_{suffix}"}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []
        self.application_credential = ApplicationCredential("", "")
        self.user_id = ""
        self.project_id = ""

    # -- start and stop ------------------------------------------------------

    def start(self) -> None:
        begun = time.monotonic()
        for database in self.databases.values():
            _admin_sql(f'CREATE DATABASE "{database}"')
        self._start_keystone()
        self._start_glance()
        self._make_test_identity()
        say(f"Keystone {self.auth_url} and Glance {self.glance_url} up in {time.monotonic() - begun:.1f} s")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in self._logs:
            log.close()
        for database in self.databases.values():
            _admin_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def log_text(self) -> str:
        """Both services' logs (what a failing test shows)."""
        return "".join(
            (self.workdir / name).read_text(errors="replace")
            for name in ("keystone.log", "glance.log")
            if (self.workdir / name).exists()
        )

    # -- Keystone ------------------------------------------------------------

    def _database_url(self, name: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{self.databases[name]}"

    def _start_keystone(self) -> None:
        folder = self.workdir / "keystone"
        folder.mkdir(parents=True)
        conf = folder / "keystone.conf"
        conf.write_text(
            "[DEFAULT]\n"
            "[database]\n"
            f"connection = {self._database_url('keystone')}\n"
            "[token]\nprovider = fernet\n"
            f"[fernet_tokens]\nkey_repository = {folder / 'fernet-keys'}\n"
            f"[fernet_receipts]\nkey_repository = {folder / 'fernet-keys'}\n"
            f"[credential]\nkey_repository = {folder / 'credential-keys'}\n"
        )
        manage = [str(self.venv / "bin" / "keystone-manage"), "--config-file", str(conf)]
        owner = ["--keystone-user", "root", "--keystone-group", "root"]
        self._run([*manage, "fernet_setup", *owner])
        self._run([*manage, "credential_setup", *owner])
        self._run([*manage, "db_sync"])
        url = f"http://127.0.0.1:{self.keystone_port}/v3/"
        self._run(
            [
                *manage,
                "bootstrap",
                "--bootstrap-password",
                ADMIN_PASSWORD,
                "--bootstrap-admin-url",
                url,
                "--bootstrap-internal-url",
                url,
                "--bootstrap-public-url",
                url,
                "--bootstrap-region-id",
                REGION,
            ]
        )
        # Keystone parses sys.argv as its own options: gunicorn's must not reach it.
        (folder / "keystone_app.py").write_text(
            "import sys\nsys.argv = sys.argv[:1]\nfrom keystone.wsgi.api import application  # noqa\n"
        )
        self._gunicorn(
            "keystone", "keystone_app:application", self.keystone_port, {"OS_KEYSTONE_CONFIG_FILES": str(conf)}, folder
        )
        self._wait_for(f"{self.auth_url}/", "Keystone")

    # -- Glance --------------------------------------------------------------

    def _start_glance(self) -> None:
        folder = self.workdir / "glance"
        folder.mkdir(parents=True)
        for sub in ("images", "staging", "tasks"):
            (folder / sub).mkdir()
        self.store_dir = folder / "images"
        shutil.copy(self.venv / "etc" / "glance" / "glance-api-paste.ini", folder / "glance-api-paste.ini")
        keystone = f"http://127.0.0.1:{self.keystone_port}"
        (folder / "glance-api.conf").write_text(
            "[DEFAULT]\n"
            "enabled_backends = fs:file\n"
            f"worker_self_reference_url = {self.glance_url}\n"
            "[database]\n"
            f"connection = {self._database_url('glance')}\n"
            "[keystone_authtoken]\n"
            f"www_authenticate_uri = {keystone}\nauth_url = {keystone}\nauth_type = password\n"
            "project_domain_name = Default\nuser_domain_name = Default\nproject_name = admin\n"
            f"username = admin\npassword = {ADMIN_PASSWORD}\n"
            f"[paste_deploy]\nflavor = keystone\nconfig_file = {folder / 'glance-api-paste.ini'}\n"
            "[glance_store]\ndefault_backend = fs\n"
            f"[fs]\nfilesystem_store_datadir = {folder / 'images'}\n"
            f"[os_glance_staging_store]\nfilesystem_store_datadir = {folder / 'staging'}\n"
            f"[os_glance_tasks_store]\nfilesystem_store_datadir = {folder / 'tasks'}\n"
        )
        self._run([str(self.venv / "bin" / "glance-manage"), "--config-dir", str(folder), "db_sync"])
        self._gunicorn(
            "glance", "glance.wsgi.api:application", self.glance_port, {"OS_GLANCE_CONFIG_DIR": str(folder)}, folder
        )
        self._wait_for(f"{self.glance_url}/versions", "Glance")

    # -- the tests' project, user and application credential ----------------

    def admin_token(self) -> str:
        return self.token(
            {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}},
                },
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
            }
        )

    def user_token(self) -> str:
        """A token of the test user, scoped to the test project."""
        return self.token(
            {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": USER, "domain": {"id": "default"}, "password": PASSWORD}},
                },
                "scope": {"project": {"name": PROJECT, "domain": {"id": "default"}}},
            }
        )

    def token(self, auth: dict[str, Any]) -> str:
        answer = requests.post(f"{self.auth_url}/auth/tokens", json={"auth": auth}, timeout=30)
        assert answer.status_code == 201, answer.text
        return answer.headers["X-Subject-Token"]

    def _make_test_identity(self) -> None:
        admin = {"X-Auth-Token": self.admin_token()}

        def post(path: str, body: dict[str, Any], headers: dict[str, str] = admin) -> Any:
            answer = requests.post(f"{self.auth_url}{path}", json=body, headers=headers, timeout=30)
            assert answer.status_code in (200, 201), f"{path}: {answer.status_code} {answer.text}"
            return answer.json()

        service = post("/services", {"service": {"type": "image", "name": "glance"}})["service"]
        for interface in ("public", "internal", "admin"):
            post(
                "/endpoints",
                {
                    "endpoint": {
                        "service_id": service["id"],
                        "interface": interface,
                        "region_id": REGION,
                        "url": self.glance_url,
                    }
                },
            )
        self.project_id = post("/projects", {"project": {"name": PROJECT, "domain_id": "default"}})["project"]["id"]
        self.user_id = post("/users", {"user": {"name": USER, "domain_id": "default", "password": PASSWORD}})["user"][
            "id"
        ]
        roles = requests.get(f"{self.auth_url}/roles?name=member", headers=admin, timeout=30).json()["roles"]
        assigned = requests.put(
            f"{self.auth_url}/projects/{self.project_id}/users/{self.user_id}/roles/{roles[0]['id']}",
            headers=admin,
            timeout=30,
        )
        assert assigned.status_code == 204, assigned.text
        mine = {"X-Auth-Token": self.user_token()}
        made = post(
            f"/users/{self.user_id}/application_credentials",
            {"application_credential": {"name": "imgfac-tests"}},
            headers=mine,
        )["application_credential"]
        self.application_credential = ApplicationCredential(made["id"], made["secret"])

    # -- Glance as the tests see it ------------------------------------------

    def glance(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A Glance v2 call as the test user."""
        headers = {"X-Auth-Token": self.user_token(), **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.glance_url}{path}", headers=headers, timeout=120, **kwargs)

    def image(self, image_id: str) -> dict[str, Any] | None:
        """The Glance image ``image_id`` (None when there is none)."""
        answer = self.glance("GET", f"/v2/images/{image_id}")
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, answer.text
        document: dict[str, Any] = answer.json()
        return document

    def images(self) -> list[dict[str, Any]]:
        """Every image of the test project."""
        answer = self.glance("GET", "/v2/images?limit=1000")
        assert answer.status_code == 200, answer.text
        found: list[dict[str, Any]] = answer.json()["images"]
        return found

    # -- helpers -------------------------------------------------------------

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.workdir, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(
                f"{Path(command[0]).name} {command[-1]} failed: {done.stdout[-2000:]}{done.stderr[-4000:]}"
            )

    def _gunicorn(self, name: str, app: str, port: int, env: dict[str, str], folder: Path) -> None:
        log = open(self.workdir / f"{name}.log", "wb")
        self._logs.append(log)
        command = [
            str(self.venv / "bin" / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--worker-class",
            "gthread",
            "--timeout",
            "300",
            "--no-control-socket",
            "--chdir",
            str(folder),
            app,
        ]
        self.processes.append(
            subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env={**os.environ, **env},
                start_new_session=True,
            )
        )

    def _wait_for(self, url: str, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in self.processes):
                raise RuntimeError(f"{what} exited at start:\n{self.log_text()[-4000:]}")
            try:
                if requests.get(url, timeout=5).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not answer at {url} within {START_TIMEOUT} s:\n{self.log_text()[-4000:]}")


def _admin_sql(statement: str) -> None:
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(statement)  # type: ignore[arg-type]


if __name__ == "__main__":
    import tempfile

    peer = OpenStackPeer(Path(tempfile.mkdtemp(prefix="openstack-peer-")))
    try:
        peer.start()
        print(peer.auth_url, peer.glance_url, peer.application_credential.id)
        if len(sys.argv) > 1:
            time.sleep(float(sys.argv[1]))
    finally:
        peer.stop()
