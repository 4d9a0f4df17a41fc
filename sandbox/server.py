"""A local stand-in for the SmartPages REST API ("the sandbox").

The portal, its tests, the demo and the benchmarks talk to this real HTTP server on 127.0.0.1 instead of
https://smartpages-api.smartsolutions.is. It serves the documented template endpoints and the
pass endpoints (reference page "Passes") with the same auth and paging rules, plausible Icelandic data
covering every template type and input-field format, and faults that can be switched on at run time.

It is pure standard library on purpose: the benchmark imports it without Django, and it must never be the
bottleneck of a sync of 10,000 templates, so every template is serialised once and list pages are built by
joining the cached bytes.

It is one module of about a thousand lines on purpose: the state (`SmartPagesSandbox`) and the request
handler that serves it share private helpers and the fault switches, and the benchmark and `make run` start it
as one file with no Django. Its sections: faults, the sandbox's state and pass rules, the HTTP server and
handler, small functions.

It never pretends to be the real service: it says "smartpages-sandbox" in its Server header, its
distribution pages say they are a stand-in, and its URLs point at itself.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import html
import json
import math
import os
import random
import socket
import struct
import threading
import time
import uuid
import zlib
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .data import (
    DEMO_TEMPLATE_ID,
    HOSTILE_TOTAL_ITEMS,
    TEMPLATE_ID_NAMESPACE,
    demo_club_card,
    generated_template,
    hostile_items,
    utc_timestamp,
)

__all__ = ["Faults", "SmartPagesSandbox"]

API_PREFIX = "/api/v1/"
TEMPLATES_PATH = "/api/v1/pass-template"
PASSES_PATH = "/api/v1/pass"
MAX_BODY_BYTES = 1_000_000
DEFAULT_PAGE_SIZE = 20
SERVER_NAME = "smartpages-sandbox"

FAULT_SCOPES = ("all", "templates", "passes")
PASS_STATUSES = ("ACTIVE", "REDEEMED", "VOIDED", "UPDATES_OFF")


@dataclass
class Faults:
    """What the sandbox does wrong, on purpose. Replace ``sandbox.faults`` to switch at run time."""

    error_rate: float = 0.0  # fraction of API requests answered 503 with a small JSON error body
    rate_limit_rate: float = 0.0  # fraction answered 429 with header Retry-After: <retry_after>
    retry_after: int = 1
    reset_rate: float = 0.0  # fraction where the connection is closed abruptly (RST, no response)
    broken_json_page: int | None = None  # template-list page (0-based) whose 200 body is invalid JSON, every time
    slow_seconds: float = 0.0  # sleep before every API response (within scope)
    mutate_after_page: int | None = None  # after serving this list page once, the list changes under the client
    hostile_items: bool = False  # the first list page also carries HOSTILE_ITEMS, and totalItems says 10**11
    scope: str = "all"  # "all" | "templates" | "passes": which endpoints the faults hit
    # A 409 for a used externalIdentifier leaves out the existing pass's id (the API reference does not
    # document the error body, so the real service may not name it).
    conflict_without_pass_id: bool = False
    # Hostile upstreams (issue 22): every in-scope answer, status line and headers included, sent one byte
    # every drip_seconds; a gzip-encoded answer that inflates to gzip_bomb_bytes of blanks; a 302 to
    # redirect_to + the asked path (e.g. another host).
    drip_seconds: float = 0.0
    gzip_bomb_bytes: int = 0
    redirect_to: str | None = None
    seed: int = 0  # faults drawn from random.Random(seed) so runs are repeatable

    def __post_init__(self) -> None:
        for name in ("error_rate", "rate_limit_rate", "reset_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate!r}")
        if self.error_rate + self.rate_limit_rate + self.reset_rate > 1.0:
            raise ValueError("error_rate + rate_limit_rate + reset_rate must not exceed 1")
        if self.scope not in FAULT_SCOPES:
            raise ValueError(f"scope must be one of {FAULT_SCOPES}, got {self.scope!r}")
        if self.slow_seconds < 0 or self.retry_after < 0 or self.drip_seconds < 0 or self.gzip_bomb_bytes < 0:
            raise ValueError("slow_seconds, retry_after, drip_seconds and gzip_bomb_bytes must not be negative")


class SmartPagesSandbox:
    """The SmartPages stand-in: data (templates, passes, request counts) plus the HTTP server serving it.

    The socket is bound in the constructor, so ``url`` is known before ``start()``.
    """

    def __init__(
        self,
        *,
        templates: int = 25,
        seed: int = 1,
        key_id: str = "sandbox",
        key_token: str = "sandbox-secret",
        page_size_cap: int = 100,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        verbose: bool = False,
        passes_file: str | os.PathLike | None = None,
    ) -> None:
        if templates < 0 or page_size_cap < 1:
            raise ValueError("templates must be >= 0 and page_size_cap >= 1")
        self.seed = seed
        self.page_size_cap = page_size_cap
        self.verbose = verbose
        self._expected_credentials = f"{key_id}:{key_token}".encode()

        # One lock guards everything below: templates, passes, counters and the fault state.
        self._lock = threading.Lock()
        self._template_order: list[str] = []
        self._templates: dict[str, dict] = {}
        self._encoded_templates: dict[str, bytes] = {}
        self._next_template_index = 0
        self._passes: dict[str, dict] = {}
        self._pass_id_by_external_id: dict[tuple[str, str], str] = {}
        self._request_counts: Counter[tuple[str, str]] = Counter()
        # (time.time(), method, path) of the latest requests, bounded for a sandbox left running for days.
        self._request_log: deque[tuple[float, str, str]] = deque(maxlen=1_000_000)
        self._open_connections: set[socket.socket] = set()
        self._connections_accepted = 0

        self._http_server = _SandboxHTTPServer((host, port), _SandboxRequestHandler, sandbox=self)
        bound_host, bound_port = self._http_server.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self._serving_thread: threading.Thread | None = None
        self._serving = False  # True from start()/serve_forever() until the serving loop has returned
        self._stopped = False

        self.faults = faults or Faults()
        # Called with each pass just created, before its reply is sent (a test's hook: e.g. kill the portal's
        # database connection right after a POST that succeeded upstream).
        self.after_pass_created = None
        for _ in range(templates):
            self._append_generated_template()
        # Passes kept on disk (the demo's `make run`: refresh works after a restart); None keeps them in memory
        # only, as tests and benchmarks want. One JSON line per pass written; the last line of a pass wins.
        self._passes_file = Path(passes_file) if passes_file is not None else None
        if self._passes_file is not None:
            self._load_passes()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SmartPagesSandbox:
        """Serve in a daemon thread and return self (so ``sandbox = SmartPagesSandbox().start()`` reads well)."""
        if not self._serving:
            self._serving = True
            self._serving_thread = threading.Thread(
                target=self._serve, kwargs={"poll_interval": 0.05}, name=SERVER_NAME, daemon=True
            )
            self._serving_thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` or KeyboardInterrupt (for the management command)."""
        self._serving = True
        try:
            self._serve(poll_interval=0.2)
        finally:
            self._close_server_and_connections()

    def stop(self) -> None:
        """Stop serving, close the listening socket and every kept-alive connection. Safe to call twice."""
        if self._serving:
            # shutdown() blocks until the serving loop has returned, so only call it while one runs.
            self._http_server.shutdown()
        if self._serving_thread is not None:
            self._serving_thread.join()
            self._serving_thread = None
        self._close_server_and_connections()

    def _serve(self, poll_interval: float) -> None:
        try:
            self._http_server.serve_forever(poll_interval=poll_interval)
        finally:
            self._serving = False

    def __enter__(self) -> SmartPagesSandbox:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _close_server_and_connections(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            connections = list(self._open_connections)
        self._http_server.server_close()
        # Clients keep connections alive; without this a "stopped" sandbox would go on answering them
        # from its handler threads.
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ------------------------------------------------------------------ faults

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults | None) -> None:
        with self._lock:
            self._faults = faults or Faults()
            # A new Faults starts a new, repeatable sequence of draws and may mutate the list once more.
            self._fault_random = random.Random(self._faults.seed)
            self._list_mutated = False

    # ------------------------------------------------------------------ templates

    def template_ids(self) -> list[str]:
        with self._lock:
            return list(self._template_order)

    def get_template(self, template_id: str) -> dict:
        """A deep copy of the template exactly as served. KeyError when unknown."""
        with self._lock:
            return json.loads(self._encoded_templates[template_id])

    def add_template(self, template: dict | None = None, **overrides) -> dict:
        """Append a template: the given one (as is), or a generated plausible one; then apply ``overrides``
        (camelCase keys as in the API). Returns a copy of what is served."""
        with self._lock:
            if template is None:
                new_template = self._generate_template(self._next_template_index)
                self._next_template_index += 1
            else:
                new_template = json.loads(json.dumps(template))
                new_template.setdefault("id", str(uuid.uuid4()))
            new_template.update(json.loads(json.dumps(overrides)))
            if new_template["id"] in self._templates:
                raise ValueError(f"template {new_template['id']} already exists")
            self._store_template(new_template)
            self._template_order.append(new_template["id"])
            return json.loads(self._encoded_templates[new_template["id"]])

    def update_template(self, template_id: str, **changes) -> dict:
        """Change top-level keys of a template (camelCase, as in the API). KeyError when unknown."""
        if "id" in changes and changes["id"] != template_id:
            raise ValueError("a template's id cannot change")
        with self._lock:
            updated = dict(self._templates[template_id], **json.loads(json.dumps(changes)))
            self._store_template(updated)
            return json.loads(self._encoded_templates[template_id])

    def remove_template(self, template_id: str) -> None:
        """Remove a template, as if the issuer deleted it upstream. KeyError when unknown."""
        with self._lock:
            self._forget_template(template_id)

    # ------------------------------------------------------------------ passes and counters

    def passes(self, template_id: str | None = None) -> list[dict]:
        """Copies of the passes created so far, oldest first, optionally for one template."""
        with self._lock:
            return [
                json.loads(json.dumps(issued))
                for issued in self._passes.values()
                if template_id is None or issued["passTemplateId"] == template_id
            ]

    def request_count(self, method: str | None = None, path_prefix: str = "") -> int:
        """Requests received (faulted ones included), optionally only one method and paths with a prefix.

        Paths are counted without query string or trailing slash. Mind that "/api/v1/pass" is also a prefix
        of "/api/v1/pass-template"; pass a method (POST, PUT) or "/api/v1/pass/" to count pass calls only.
        """
        wanted_method = method.upper() if method else None
        with self._lock:
            return sum(
                count
                for (request_method, path), count in self._request_counts.items()
                if (wanted_method is None or request_method == wanted_method) and path.startswith(path_prefix)
            )

    def request_times(self, method: str | None = None, path_prefix: str = "") -> list[float]:
        """When (time.time()) each matching request arrived, oldest first: for measuring a client's rate."""
        return [at for at, _path in self._logged(method, path_prefix)]

    def request_paths(self, method: str | None = None, path_prefix: str = "") -> list[str]:
        """The paths of the matching requests, oldest first: for checking the order of a client's calls."""
        return [path for _at, path in self._logged(method, path_prefix)]

    def _logged(self, method: str | None, path_prefix: str) -> list[tuple[float, str]]:
        wanted_method = method.upper() if method else None
        with self._lock:
            return [
                (at, path)
                for at, request_method, path in self._request_log
                if (wanted_method is None or request_method == wanted_method) and path.startswith(path_prefix)
            ]

    @property
    def connections_accepted(self) -> int:
        """Connections clients opened since the last reset_counts(): how well they keep theirs alive."""
        with self._lock:
            return self._connections_accepted

    def reset_counts(self) -> None:
        with self._lock:
            self._request_counts.clear()
            self._request_log.clear()
            self._connections_accepted = 0

    def add_passes(self, template_id: str, count: int) -> list[str]:
        """Passes made directly (no HTTP, no validation), for tests and benchmarks that need many; their ids."""
        made = []
        with self._lock:
            for n in range(count):
                pass_id = str(uuid.uuid4())
                self._passes[pass_id] = {
                    "id": pass_id,
                    "passTemplateId": template_id,
                    "externalIdentifier": None,
                    "status": "ACTIVE",
                    "isVoided": False,
                    "inputFields": [{"identifier": "name", "value": f"Holder {n}"}],
                    "distributionUrl": f"{self.url}/distribution/pass/{pass_id}",
                    "createdAt": utc_timestamp(datetime.now(UTC)),
                }
                self._remember(self._passes[pass_id])
                made.append(pass_id)
        return made

    def change_pass(self, pass_id: str, *, status: str | None = None, values: dict | None = None) -> dict:
        """Change a pass the way SmartPages itself (its staff pages, a scanner) would, behind the portal's back:
        void it (status VOIDED), redeem it (REDEEMED), make it active again, or edit its values."""
        if status is not None and status not in PASS_STATUSES:
            raise ValueError(f"status must be one of {PASS_STATUSES}")
        with self._lock:
            found = self._passes[pass_id]
            if status is not None:
                found["status"], found["isVoided"] = status, status == "VOIDED"
            if values:
                _merge_input_fields(found, [{"identifier": key, "value": value} for key, value in values.items()])
            self._remember(found)
            return json.loads(json.dumps(found))

    # ------------------------------------------------------------------ passes on disk

    def _load_passes(self) -> None:
        """Read the passes file (a line cut short by a killed sandbox is skipped), then write it anew with one
        line per pass, so it does not grow for ever."""
        path = self._passes_file
        if path.exists():
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    try:
                        found = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(found, dict) and isinstance(found.get("id"), str):
                        self._passes[found["id"]] = found
            for found in self._passes.values():
                if found.get("externalIdentifier") is not None:
                    self._pass_id_by_external_id[(found["passTemplateId"], found["externalIdentifier"])] = found["id"]
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = path.with_name(path.name + ".new")
        with fresh.open("w", encoding="utf-8") as out:
            for found in self._passes.values():
                out.write(json.dumps(found, ensure_ascii=False) + "\n")
        os.replace(fresh, path)

    def _remember(self, found: dict) -> None:
        """Append a pass as it is now to the passes file (call with the lock held)."""
        if self._passes_file is not None:
            with self._passes_file.open("a", encoding="utf-8") as out:
                out.write(json.dumps(found, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------------ internals (call with the lock held)

    def _store_template(self, template: dict) -> None:
        template.setdefault("deliveryPageUrl", self._delivery_page_url(template["id"]))
        self._templates[template["id"]] = template
        self._encoded_templates[template["id"]] = _encode_json(template)

    def _forget_template(self, template_id: str) -> None:
        del self._templates[template_id]
        del self._encoded_templates[template_id]
        self._template_order.remove(template_id)

    def _append_generated_template(self) -> None:
        with self._lock:
            template = self._generate_template(self._next_template_index)
            self._next_template_index += 1
            self._store_template(template)
            self._template_order.append(template["id"])

    def _delivery_page_url(self, template_id: str) -> str:
        # Same shape as the real service's URL, but pointing at the sandbox.
        return f"{self.url}/distribution/passTemplate/{template_id}/{template_id}"

    def _generate_template(self, index: int) -> dict:
        if index == 0:
            return demo_club_card(self._delivery_page_url(DEMO_TEMPLATE_ID))
        template_id = str(uuid.uuid5(TEMPLATE_ID_NAMESPACE, f"{self.seed}:{index}"))
        # One Random per index: template N is the same whether it was made at start-up or added later.
        rng = random.Random(f"smartpages-sandbox:{self.seed}:{index}")
        return generated_template(index, template_id, rng, self._delivery_page_url(template_id))

    def _mutate_template_list(self) -> None:
        """Make the list change under a paging client: two new templates appear at the front (so everything
        shifts towards later pages) and the last one disappears (so totalItems changes by +1)."""
        for _ in range(2):
            template = self._generate_template(self._next_template_index)
            self._next_template_index += 1
            self._store_template(template)
            self._template_order.insert(0, template["id"])
        self._forget_template(self._template_order[-1])

    def _list_page_body(self, page: int, page_size: int) -> bytes:
        with self._lock:
            total_items = len(self._template_order)
            total_pages = math.ceil(total_items / page_size)
            page_ids = self._template_order[page * page_size : (page + 1) * page_size]
            encoded = [self._encoded_templates[template_id] for template_id in page_ids]
            if self._faults.hostile_items:
                if page == 0:
                    encoded = [_encode_json(item) for item in hostile_items()] + encoded
                total_items = HOSTILE_TOTAL_ITEMS
            data = b",".join(encoded)
        head = _encode_json(
            {
                "page": page,
                "pageSize": page_size,
                "totalPages": total_pages,
                "totalItems": total_items,
            }
        )
        return head[:-1] + b',"data":[' + data + b"]}"

    def _draw_fault(self, path: str) -> str | None:
        """'reset', 'rate_limit', 'error' or None for this request. One draw per in-scope request keeps the
        sequence repeatable for a sequential client."""
        faults = self._faults
        if not _in_fault_scope(path, faults.scope):
            return None
        with self._lock:
            draw = self._fault_random.random()
        if draw < faults.reset_rate:
            return "reset"
        if draw < faults.reset_rate + faults.rate_limit_rate:
            return "rate_limit"
        if draw < faults.reset_rate + faults.rate_limit_rate + faults.error_rate:
            return "error"
        return None

    def _is_authorised(self, authorization_header: str | None) -> bool:
        scheme, _, encoded = (authorization_header or "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            credentials = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(credentials, self._expected_credentials)

    def _create_pass(self, body: object) -> tuple[int, dict]:
        if not isinstance(body, dict):
            return 400, {"error": "request body must be a JSON object"}
        template_id = body.get("passTemplateId")
        if not isinstance(template_id, str):
            return 400, {"error": "passTemplateId is required"}
        input_fields = body.get("inputFields", [])
        if not isinstance(input_fields, list) or not all(
            isinstance(field, dict) and isinstance(field.get("identifier"), str) for field in input_fields
        ):
            return 400, {"error": "inputFields must be a list of {identifier, value}"}
        external_id = body.get("externalIdentifier")
        if external_id is not None and not isinstance(external_id, str):
            return 400, {"error": "externalIdentifier must be a string"}
        is_voided = body.get("isVoided", False)
        if not isinstance(is_voided, bool):
            return 400, {"error": "isVoided must be a boolean"}
        problem = _pass_values_problem(body)
        if problem:
            return 400, {"error": problem}

        # Everything from here to storing the pass happens under the lock, so two concurrent POSTs with the
        # same externalIdentifier cannot both be told 201.
        with self._lock:
            template = self._templates.get(template_id)
            if template is None:
                return 404, {"error": "pass template not found"}
            refusal = _issue_refusal(template, input_fields)
            if refusal:
                return 400, {"error": refusal}
            clash = self._unique_clash(template, input_fields, except_pass_id=None)
            if clash:
                return 409, clash
            if external_id is not None:
                existing_pass_id = self._pass_id_by_external_id.get((template_id, external_id))
                if existing_pass_id is not None:
                    conflict = {"error": "externalIdentifier already in use for this pass template"}
                    if not self._faults.conflict_without_pass_id:
                        conflict["passId"] = existing_pass_id
                    return 409, conflict
            pass_id = str(uuid.uuid4())
            new_pass = {
                "id": pass_id,
                "passTemplateId": template_id,
                "externalIdentifier": external_id,
                "status": "VOIDED" if is_voided else "ACTIVE",
                "isVoided": is_voided,
                "inputFields": [{"identifier": f["identifier"], "value": f.get("value")} for f in input_fields],
                "distributionUrl": f"{self.url}/distribution/pass/{pass_id}",
                "createdAt": utc_timestamp(datetime.now(UTC)),
            }
            for optional_key in ("validFrom", "expirationDate", "stampsLeft", "alreadyPaid", "backFields"):
                if optional_key in body:
                    new_pass[optional_key] = body[optional_key]
            self._passes[pass_id] = new_pass
            if external_id is not None:
                self._pass_id_by_external_id[(template_id, external_id)] = pass_id
            self._remember(new_pass)
            return 201, json.loads(json.dumps(new_pass))

    def _unique_clash(self, template: dict, input_fields: list[dict], *, except_pass_id: str | None) -> dict | None:
        """The 409 body when a value of a unique (isUnique) field is held by another live pass of the template."""
        unique = {f["identifier"] for f in template.get("inputFields", []) if isinstance(f, dict) and f.get("isUnique")}
        wanted = {f["identifier"]: f.get("value") for f in input_fields if f["identifier"] in unique and f.get("value")}
        if not wanted:
            return None
        for other in self._passes.values():
            if other["passTemplateId"] != template["id"] or other["id"] == except_pass_id or other["isVoided"]:
                continue
            for field in other["inputFields"]:
                if field["identifier"] in wanted and field.get("value") == wanted[field["identifier"]]:
                    return {
                        "error": "value of a unique input field already in use for this pass template",
                        "field": field["identifier"],
                        "passId": other["id"],
                    }
        return None

    def _create_pass_and_notify(self, body: object) -> tuple[int, dict]:
        status, reply = self._create_pass(body)
        hook = self.after_pass_created
        if status == 201 and hook is not None:
            hook(reply)
        return status, reply

    def _get_pass(self, pass_id: str) -> tuple[int, dict]:
        with self._lock:
            found = self._passes.get(pass_id)
            if found is None:
                return 404, {"error": "pass not found"}
            return 200, json.loads(json.dumps(found))

    def _update_pass(self, pass_id: str, body: object) -> tuple[int, dict]:
        if not isinstance(body, dict):
            return 400, {"error": "request body must be a JSON object"}
        if "isVoided" in body and not isinstance(body["isVoided"], bool):
            return 400, {"error": "isVoided must be a boolean"}
        input_fields = body.get("inputFields")
        if input_fields is not None and (
            not isinstance(input_fields, list)
            or not all(isinstance(field, dict) and isinstance(field.get("identifier"), str) for field in input_fields)
        ):
            return 400, {"error": "inputFields must be a list of {identifier, value}"}
        external_id = body.get("externalIdentifier")
        if external_id is not None and not isinstance(external_id, str):
            return 400, {"error": "externalIdentifier must be a string"}
        with self._lock:
            found = self._passes.get(pass_id)
            if found is None:
                return 404, {"error": "pass not found"}
            template_id = found["passTemplateId"]
            if input_fields is not None:
                if found["isVoided"]:
                    return 400, {"error": "a voided pass cannot be updated"}
                merged = {f["identifier"]: f.get("value") for f in found["inputFields"]}
                merged.update({f["identifier"]: f.get("value") for f in input_fields})
                template = self._templates.get(template_id, {"status": "ACTIVE"})
                refusal = _field_refusal(template, [{"identifier": k, "value": v} for k, v in merged.items()])
                if refusal:
                    return 400, {"error": refusal}
                current = {f["identifier"]: f.get("value") for f in found["inputFields"]}
                if template.get("lockInputFields") and merged != current:
                    return 400, {"error": "editing input values on passes is disabled for this pass template"}
                clash = self._unique_clash(template, input_fields, except_pass_id=pass_id)
                if clash:
                    return 409, clash
            if external_id is not None and external_id != found.get("externalIdentifier"):
                if found.get("externalIdentifier") is not None:
                    return 400, {"error": "externalIdentifier cannot be changed once set"}
                holder = self._pass_id_by_external_id.get((template_id, external_id))
                if holder is not None:
                    return 409, {"error": "externalIdentifier already in use for this pass template", "passId": holder}
                found["externalIdentifier"] = external_id
                self._pass_id_by_external_id[(template_id, external_id)] = pass_id
            if "isVoided" in body:
                found["isVoided"] = body["isVoided"]
                found["status"] = "VOIDED" if body["isVoided"] else "ACTIVE"
            if input_fields is not None:
                _merge_input_fields(found, input_fields)
            for key in ("validFrom", "expirationDate", "stampsLeft", "alreadyPaid", "backFields"):
                if key in body:
                    found[key] = body[key]
            self._remember(found)
            return 200, json.loads(json.dumps(found))

    def _distribution_page(self, pass_id: str) -> tuple[int, str]:
        with self._lock:
            found = self._passes.get(pass_id)
            found = dict(found) if found else None
        if found is None:
            return 404, _html_page("Pass not found", "<p>The sandbox has no pass with this id.</p>")
        body = (
            f"<p>This is the <strong>SmartPages sandbox</strong>'s stand-in for the wallet page. "
            f"The real service would offer the pass for Apple Wallet and Google Wallet here.</p>"
            f"<p>Pass <code>{html.escape(found['id'])}</code>, status {html.escape(found['status'])}.</p>"
        )
        return 200, _html_page("Sandbox wallet page", body)

    def _template_delivery_page(self, template_id: str) -> tuple[int, str]:
        with self._lock:
            template = self._templates.get(template_id)
            name = (template or {}).get("name") or template_id
        if template is None:
            return 404, _html_page("Pass template not found", "<p>The sandbox has no template with this id.</p>")
        body = (
            f"<p>This is the <strong>SmartPages sandbox</strong>'s stand-in for the delivery page of "
            f"“{html.escape(name)}”. Passes are not handed out here.</p>"
        )
        return 200, _html_page("Sandbox delivery page", body)


class _SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # 50 clients connecting at once (the race tests) must not overflow the listen backlog (default 5),
    # or their SYNs are dropped and retried a second later.
    request_queue_size = 128

    def __init__(self, server_address, handler_class, *, sandbox: SmartPagesSandbox) -> None:
        self.sandbox = sandbox
        super().__init__(server_address, handler_class)


class _SandboxRequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 with Content-Length on every answer, so clients keep their connections alive.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY the second can wait for a delayed ACK.
    disable_nagle_algorithm = True
    # Idle kept-alive connections give up their thread after a while.
    timeout = 120
    server: _SandboxHTTPServer

    def setup(self) -> None:
        super().setup()
        sandbox = self.server.sandbox
        with sandbox._lock:
            sandbox._open_connections.add(self.connection)
            sandbox._connections_accepted += 1

    def finish(self) -> None:
        sandbox = self.server.sandbox
        with sandbox._lock:
            sandbox._open_connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass  # the client (or a reset fault) already closed the socket

    def version_string(self) -> str:
        return SERVER_NAME

    def log_message(self, format: str, *args) -> None:
        if self.server.sandbox.verbose:
            print(f"{SERVER_NAME} {self.address_string()} - {format % args}", flush=True)

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # ------------------------------------------------------------------ dispatch

    def _handle(self) -> None:
        sandbox = self.server.sandbox
        split_url = urlsplit(self.path)
        path = split_url.path.rstrip("/") or "/"
        with sandbox._lock:
            sandbox._request_counts[(self.command, path)] += 1
            sandbox._request_log.append((time.time(), self.command, path))

        # Read the body before anything else, faults included, so a kept-alive connection stays in step.
        body_bytes = self._read_body()
        if body_bytes is None:
            return

        if path.startswith(API_PREFIX):
            self._handle_api(path, split_url.query, body_bytes)
        else:
            self._handle_public_page(path)

    def _handle_api(self, path: str, query: str, body_bytes: bytes) -> None:
        sandbox = self.server.sandbox
        faults = sandbox.faults
        fault = sandbox._draw_fault(path)
        if faults.slow_seconds and _in_fault_scope(path, faults.scope):
            time.sleep(faults.slow_seconds)
        if fault == "reset":
            self._reset_connection()
            return
        if fault == "rate_limit":
            self._send_json(
                429, {"error": "too many requests (sandbox fault)"}, headers={"Retry-After": str(faults.retry_after)}
            )
            return
        if fault == "error":
            self._send_json(503, {"error": "service unavailable (sandbox fault)"})
            return
        if _in_fault_scope(path, faults.scope) and self._send_hostile_answer(faults, path, query):
            return

        if not sandbox._is_authorised(self.headers.get("Authorization")):
            self._send_json(401, {"error": "missing or invalid Authorization: Bearer base64(KEY_ID:KEY_TOKEN)"})
            return

        if path == TEMPLATES_PATH:
            if self._allow("GET"):
                self._send_template_page(query)
        elif path.startswith(TEMPLATES_PATH + "/"):
            if self._allow("GET"):
                self._send_template(path.removeprefix(TEMPLATES_PATH + "/"))
        elif path == PASSES_PATH:
            if self._allow("POST"):
                self._send_pass_write(sandbox._create_pass_and_notify, body_bytes)
        elif path.startswith(PASSES_PATH + "/"):
            pass_id = path.removeprefix(PASSES_PATH + "/")
            if self._allow("GET", "PUT"):
                if self.command == "GET":
                    self._send_json(*sandbox._get_pass(pass_id))
                else:
                    self._send_pass_write(lambda body: sandbox._update_pass(pass_id, body), body_bytes)
        else:
            self._send_json(404, {"error": "no such endpoint"})

    def _handle_public_page(self, path: str) -> None:
        sandbox = self.server.sandbox
        parts = path.strip("/").split("/")
        if self.command != "GET":
            self._send_json(405, {"error": "method not allowed"}, headers={"Allow": "GET"})
        elif path == "/":
            with sandbox._lock:
                template_count = len(sandbox._template_order)
            self._send_json(200, {"service": SERVER_NAME, "realService": False, "templates": template_count})
        elif len(parts) == 3 and parts[:2] == ["distribution", "pass"]:
            self._send_html(*sandbox._distribution_page(parts[2]))
        elif len(parts) == 4 and parts[:2] == ["distribution", "passTemplate"]:
            self._send_html(*sandbox._template_delivery_page(parts[2]))
        else:
            self._send_html(404, _html_page("Not found", "<p>The SmartPages sandbox has no page here.</p>"))

    # ------------------------------------------------------------------ endpoints

    def _send_template_page(self, query: str) -> None:
        sandbox = self.server.sandbox
        try:
            page, page_size = _parse_paging(query)
        except ValueError as error:
            self._send_json(400, {"error": str(error)})
            return
        page_size = min(page_size, sandbox.page_size_cap)
        body = sandbox._list_page_body(page, page_size)

        faults = sandbox.faults
        if faults.broken_json_page == page:
            body = body[: len(body) // 2]  # cut mid-object: a 200 whose body is not JSON
        self._send_body(200, body, "application/json; charset=utf-8")

        if faults.mutate_after_page == page:
            with sandbox._lock:
                if not sandbox._list_mutated and faults is sandbox._faults:
                    sandbox._list_mutated = True
                    sandbox._mutate_template_list()

    def _send_template(self, template_id: str) -> None:
        sandbox = self.server.sandbox
        with sandbox._lock:
            encoded = sandbox._encoded_templates.get(template_id)
        if encoded is None:
            self._send_json(404, {"error": "pass template not found"})
        else:
            self._send_body(200, encoded, "application/json; charset=utf-8")

    # ------------------------------------------------------------------ plumbing

    def _allow(self, *methods: str) -> bool:
        if self.command in methods:
            return True
        self._send_json(405, {"error": "method not allowed"}, headers={"Allow": ", ".join(methods)})
        return False

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            self._send_json(411, {"error": "send a Content-Length; chunked bodies are not supported"})
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(400, {"error": "bad or too large Content-Length"})
            return None
        return self.rfile.read(length) if length else b""

    def _send_pass_write(self, write, body_bytes: bytes) -> None:
        try:
            body = json.loads(body_bytes or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._send_json(400, {"error": "request body is not valid JSON"})
            return
        self._send_json(*write(body))

    def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        self._send_body(status, _encode_json(payload), "application/json; charset=utf-8", headers)

    def _send_html(self, status: int, page: str) -> None:
        self._send_body(status, page.encode(), "text/html; charset=utf-8")

    def _send_body(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_hostile_answer(self, faults: Faults, path: str, query: str) -> bool:
        """A redirect, a gzip bomb or a dripped answer when those faults are on; False when none is."""
        if faults.redirect_to:
            target = faults.redirect_to.rstrip("/") + path + (f"?{query}" if query else "")
            self._send_json(302, {"error": "moved (sandbox fault)"}, headers={"Location": target})
            return True
        if faults.gzip_bomb_bytes:
            self._send_body(
                200, _gzip_bomb(faults.gzip_bomb_bytes), "application/json", headers={"Content-Encoding": "gzip"}
            )
            return True
        if faults.drip_seconds:
            body = _encode_json({"error": "dripped (sandbox fault)"})
            answer = (
                f"HTTP/1.1 200 OK\r\nServer: {SERVER_NAME}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            self.close_connection = True
            try:
                for index in range(len(answer)):
                    self.wfile.write(answer[index : index + 1])
                    self.wfile.flush()
                    if self.server.sandbox._stopped:
                        break
                    time.sleep(faults.drip_seconds)
            except OSError:
                pass  # the client gave up, as it should
            return True
        return False

    def _reset_connection(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN: the client gets
        # "connection reset by peer" with no response at all, like a crashing proxy.
        # detach() first: the request's file objects still hold the socket, so a plain close() would not
        # close the descriptor until later, and by then socketserver has sent a polite FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        os.close(self.connection.detach())
        self.close_connection = True


# ---------------------------------------------------------------------- small functions


@functools.cache
def _gzip_bomb(inflated_bytes: int) -> bytes:
    """Blanks (valid JSON whitespace) gzip-compressed: 500 MB become about half a megabyte."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * (1 << 20)
    parts = []
    for start in range(0, inflated_bytes, len(block)):
        parts.append(compressor.compress(block[: inflated_bytes - start]))
    parts.append(compressor.flush())
    return b"".join(parts)


def _encode_json(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _html_page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} · SmartPages sandbox</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}"
        "<p><small>Served by the local SmartPages sandbox, not by SmartPages.</small></p></body></html>"
    )


def _merge_input_fields(found: dict, input_fields: list[dict]) -> None:
    values = {f["identifier"]: f.get("value") for f in found["inputFields"]}
    values.update({f["identifier"]: f.get("value") for f in input_fields})
    found["inputFields"] = [{"identifier": key, "value": value} for key, value in values.items()]


def _in_fault_scope(path: str, scope: str) -> bool:
    if scope == "all":
        return True
    is_template_path = path == TEMPLATES_PATH or path.startswith(TEMPLATES_PATH + "/")
    if scope == "templates":
        return is_template_path
    return not is_template_path and (path == PASSES_PATH or path.startswith(PASSES_PATH + "/"))


def _parse_paging(query: str) -> tuple[int, int]:
    params = parse_qs(query, keep_blank_values=True)

    def non_negative_int(name: str, default: int) -> int:
        values = params.get(name)
        if not values:
            return default
        try:
            number = int(values[-1])
        except ValueError:
            raise ValueError(f"{name} must be an integer") from None
        if number < 0:
            raise ValueError(f"{name} must not be negative")
        return number

    page = non_negative_int("page", 0)
    page_size = non_negative_int("page_size", DEFAULT_PAGE_SIZE)
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    return page, page_size


def _issue_refusal(template: dict, input_fields: list[dict]) -> str | None:
    """Why a pass cannot be created from this template with these values, or None."""
    if template.get("status") != "ACTIVE":
        return "pass template is voided"
    if template.get("disableIssue"):
        return "issuing passes is disabled for this pass template"
    return _field_refusal(template, input_fields)


def _field_refusal(template: dict, input_fields: list[dict]) -> str | None:
    """Why these values do not fit the template's input fields (unknown or missing mandatory ones), or None."""
    known = {field["identifier"]: field for field in template.get("inputFields", [])}
    given = {field["identifier"]: field.get("value") for field in input_fields}
    unknown = sorted(set(given) - set(known))
    if unknown:
        return f"unknown input field identifier(s): {', '.join(unknown)}"
    missing = [
        identifier
        for identifier, field in known.items()
        if field.get("isMandatory") and (given.get(identifier) is None or str(given[identifier]).strip() == "")
    ]
    if missing:
        return f"mandatory input field(s) missing: {', '.join(missing)}"
    return None


def _pass_values_problem(body: dict) -> str:
    """Why the pass's own values of a create are malformed ("" when they are not): dates in ISO 8601 with
    an offset, back fields a list of {label, value} strings."""
    for key in ("validFrom", "expirationDate"):
        if key in body and body[key] is not None:
            value = body[key]
            try:
                moment = datetime.fromisoformat(value) if isinstance(value, str) else None
            except ValueError:
                moment = None
            if moment is None or moment.tzinfo is None:
                return f"{key} must be an ISO 8601 date-time with an offset"
    back = body.get("backFields")
    if back is not None and not (
        isinstance(back, list)
        and all(
            isinstance(item, dict) and isinstance(item.get("label"), str) and isinstance(item.get("value"), str)
            for item in back
        )
    ):
        return "backFields must be a list of {label, value} strings"
    return ""
