"""The SmartPages sandbox, spoken to over real HTTP. No database, no Django settings, no mocks."""

import base64
import json
import threading
import uuid

import pytest
import requests

from sandbox import DEMO_TEMPLATE_ID, Faults, SmartPagesSandbox
from sandbox.data import FIELD_FORMATS, TEMPLATE_TYPES

TIMEOUT = 10

# The template object as the SmartPages API documents it: key -> accepted JSON types. Optional keys may be null or absent.
REQUIRED_TEMPLATE_KEYS = {
    "id": str,
    "type": str,
    "status": str,
    "inputFields": list,
    "isSharingProhibited": bool,
    "isNFC": bool,
    "singleDeviceOnly": bool,
    "firstDeviceOnly": bool,
    "oneDeviceAtATime": bool,
    "oncePerDevice": bool,
    "onePassOfTemplateTypePerDevice": bool,
    "posDistributionOnly": bool,
    "allowReward": bool,
    "hasDynamicBarcode": bool,
    "dynamicBarcodeType": str,
    "lockInputFields": bool,
    "disableIssue": bool,
    "deliverByKennitala": bool,
    "locations": list,
    "useEmailDomainVerification": bool,
    "allowedEmailDomains": list,
    "supportsGoogleWallet": bool,
    "deliveryPageUrl": str,
}
OPTIONAL_TEMPLATE_KEYS = {
    "name": str,
    "description": str,
    "stamps": int,
    "passPrice": (int, float),
    "whenLastUpdateSent": str,
    "dynamicBarcodeExpirationTimeSeconds": (int, float),
    "kennitalaAgeVerification": int,
    "exchangedForTemplateId": str,
}
REQUIRED_FIELD_KEYS = {
    "label": str,
    "identifier": str,
    "isMandatory": bool,
    "isUnique": bool,
    "format": str,
    "type": str,
}


def bearer(key_id="sandbox", key_token="sandbox-secret"):
    return {"Authorization": "Bearer " + base64.b64encode(f"{key_id}:{key_token}".encode()).decode()}


@pytest.fixture
def sandbox():
    with SmartPagesSandbox() as running:
        yield running


@pytest.fixture
def api():
    with requests.Session() as session:
        session.headers.update(bearer())
        yield session


def fetch_all_templates(api, sandbox, page_size=100):
    templates, page = [], 0
    while True:
        reply = api.get(
            f"{sandbox.url}/api/v1/pass-template", params={"page": page, "page_size": page_size}, timeout=TIMEOUT
        ).json()
        templates.extend(reply["data"])
        page += 1
        if page >= reply["totalPages"]:
            return templates


def create_demo_pass(api, sandbox, external_id=None, template_id=DEMO_TEMPLATE_ID):
    body = {
        "passTemplateId": template_id,
        "inputFields": [
            {"identifier": "name", "value": "Guðrún Þórsdóttir"},
            {"identifier": "email", "value": "gudrun@example.is"},
        ],
    }
    if external_id is not None:
        body["externalIdentifier"] = external_id
    return api.post(f"{sandbox.url}/api/v1/pass", json=body, timeout=TIMEOUT)


# ---------------------------------------------------------------------- auth


def test_api_calls_without_the_right_bearer_credentials_get_401_with_a_json_error(sandbox):
    url = f"{sandbox.url}/api/v1/pass-template"
    attempts = [
        {},
        bearer(key_token="wrong"),
        {"Authorization": "Bearer not-base64!"},
        {"Authorization": "Basic " + base64.b64encode(b"sandbox:sandbox-secret").decode()},
    ]
    for headers in attempts:
        reply = requests.get(url, headers=headers, timeout=TIMEOUT)
        assert reply.status_code == 401
        assert "error" in reply.json()
    assert requests.get(url, headers=bearer(), timeout=TIMEOUT).status_code == 200


def test_the_sandbox_accepts_the_credentials_it_was_given():
    with SmartPagesSandbox(key_id="abc", key_token="xyz", templates=1) as sandbox:
        url = f"{sandbox.url}/api/v1/pass-template/{DEMO_TEMPLATE_ID}"
        assert requests.get(url, headers=bearer("abc", "xyz"), timeout=TIMEOUT).status_code == 200
        assert requests.get(url, headers=bearer(), timeout=TIMEOUT).status_code == 401


def test_the_sandbox_says_it_is_the_sandbox_and_not_the_real_service(sandbox, api):
    reply = api.get(f"{sandbox.url}/api/v1/pass-template", timeout=TIMEOUT)
    assert reply.headers["Server"] == "smartpages-sandbox"
    assert "smartsolutions.is" not in reply.text
    assert requests.get(f"{sandbox.url}/", timeout=TIMEOUT).json()["realService"] is False


# ---------------------------------------------------------------------- paging


def test_the_template_list_is_paged_by_what_the_server_says_not_by_what_was_asked(api):
    with SmartPagesSandbox(templates=250, page_size_cap=100) as sandbox:
        first = api.get(
            f"{sandbox.url}/api/v1/pass-template", params={"page": 0, "page_size": 500}, timeout=TIMEOUT
        ).json()
        assert (first["page"], first["pageSize"], first["totalPages"], first["totalItems"]) == (0, 100, 3, 250)
        assert len(first["data"]) == 100

        last = api.get(
            f"{sandbox.url}/api/v1/pass-template", params={"page": 2, "page_size": 500}, timeout=TIMEOUT
        ).json()
        assert len(last["data"]) == 50

        past_the_end = api.get(
            f"{sandbox.url}/api/v1/pass-template", params={"page": 3, "page_size": 500}, timeout=TIMEOUT
        ).json()
        assert past_the_end["data"] == [] and past_the_end["totalItems"] == 250

        assert [t["id"] for t in fetch_all_templates(api, sandbox, page_size=500)] == sandbox.template_ids()


def test_the_default_page_is_the_first_twenty_templates(sandbox, api):
    reply = api.get(f"{sandbox.url}/api/v1/pass-template", timeout=TIMEOUT).json()
    assert (reply["page"], reply["pageSize"], reply["totalPages"], reply["totalItems"]) == (0, 20, 2, 25)
    assert [t["id"] for t in reply["data"]] == sandbox.template_ids()[:20]
    assert reply["data"][0]["id"] == DEMO_TEMPLATE_ID


def test_bad_paging_parameters_get_400_with_a_json_error(sandbox, api):
    for params in ({"page": -1}, {"page": "abc"}, {"page_size": 0}, {"page_size": ""}, {"page_size": "1.5"}):
        reply = api.get(f"{sandbox.url}/api/v1/pass-template", params=params, timeout=TIMEOUT)
        assert reply.status_code == 400, params
        assert reply.json()["error"]


# ---------------------------------------------------------------------- template data


def test_every_template_carries_every_documented_field_with_the_documented_shape(sandbox, api):
    templates = fetch_all_templates(api, sandbox)
    assert len(templates) == 25
    for template in templates:
        for key, expected_type in REQUIRED_TEMPLATE_KEYS.items():
            assert isinstance(template[key], expected_type), (template["id"], key)
        for key, expected_type in OPTIONAL_TEMPLATE_KEYS.items():
            assert template.get(key) is None or isinstance(template[key], expected_type), (template["id"], key)
        uuid.UUID(template["id"])
        assert template["type"] in TEMPLATE_TYPES
        assert template["status"] in ("ACTIVE", "VOIDED")
        assert template["dynamicBarcodeType"] in ("BASIC", "INCLUDE_TEMPLATE_ID")
        assert template["deliveryPageUrl"].startswith(sandbox.url)
        for field in template["inputFields"]:
            for key, expected_type in REQUIRED_FIELD_KEYS.items():
                assert isinstance(field[key], expected_type), (template["id"], key)
            assert field.get("description") is None or isinstance(field["description"], str)
            assert field["format"] in FIELD_FORMATS and field["type"] in ("ISSUER", "MEMBER")
        identifiers = [field["identifier"] for field in template["inputFields"]]
        assert len(identifiers) == len(set(identifiers))
        for location in template["locations"]:
            assert isinstance(location["relevantText"], str)
            assert location.get("name") is None or isinstance(location["name"], str)
            # Iceland, roughly.
            assert 63 < location["point"]["latitude"] < 67 and -25 < location["point"]["longitude"] < -13
        for domain in template["allowedEmailDomains"]:
            assert isinstance(domain["sortOrder"], int) and isinstance(domain["emailDomain"], str)


def test_the_generated_templates_cover_every_type_format_field_type_and_status(sandbox, api):
    templates = fetch_all_templates(api, sandbox)
    fields = [field for template in templates for field in template["inputFields"]]
    assert {t["type"] for t in templates} == set(TEMPLATE_TYPES)
    assert {f["format"] for f in fields} == set(FIELD_FORMATS)
    assert {f["type"] for f in fields} == {"ISSUER", "MEMBER"}
    assert {t["status"] for t in templates} == {"ACTIVE", "VOIDED"}


def test_the_generated_templates_exercise_the_settings_the_portal_must_handle(sandbox, api):
    templates = fetch_all_templates(api, sandbox)
    assert any(t["disableIssue"] for t in templates)
    assert any(t["posDistributionOnly"] for t in templates)
    assert any(t.get("passPrice") for t in templates)
    assert any(t["locations"] for t in templates)
    assert any(t["hasDynamicBarcode"] and t["dynamicBarcodeExpirationTimeSeconds"] for t in templates)
    assert any(
        t.get("kennitalaAgeVerification") and any(f["format"] == "KENNITALA" for f in t["inputFields"])
        for t in templates
    )
    verified = [t for t in templates if t["useEmailDomainVerification"]]
    assert verified and all(t["allowedEmailDomains"] for t in verified)
    assert all(any(f["format"] == "EMAIL" for f in t["inputFields"]) for t in verified)
    for template in templates:
        if template["type"] in ("PUNCH", "MULTI_TICKET"):
            assert template["stamps"] > 0
    # Optional keys appear both as null and as absent.
    for key in ("description", "passPrice", "kennitalaAgeVerification", "stamps"):
        assert any(key in t and t[key] is None for t in templates), key
        assert any(key not in t for t in templates), key
    icelandic_text = " ".join((t.get("name") or "") + " " + (t.get("description") or "") for t in templates)
    assert set("þðæöáíúýéó") <= set(icelandic_text.lower())


def test_the_demo_template_is_the_club_card_of_the_seed_scenario(sandbox, api):
    demo = api.get(f"{sandbox.url}/api/v1/pass-template/{DEMO_TEMPLATE_ID}", timeout=TIMEOUT).json()
    assert demo["type"] == "MEMBER" and demo["status"] == "ACTIVE"
    assert demo["name"] == "Klúbbkort Sundfélagsins"
    assert not demo["disableIssue"] and demo["passPrice"] is None and not demo["posDistributionOnly"]
    fields = {f["identifier"]: (f["format"], f["type"], f["isMandatory"]) for f in demo["inputFields"]}
    assert fields == {
        "name": ("TEXT", "ISSUER", True),
        "email": ("EMAIL", "ISSUER", True),
        "phone": ("PHONE_NUMBER", "ISSUER", False),
    }
    assert demo["inputFields"][0]["label"] == "Nafn / Name"


def test_the_first_templates_include_one_with_email_and_phone_and_one_with_two_emails(sandbox):
    second, third = (sandbox.get_template(template_id) for template_id in sandbox.template_ids()[1:3])
    assert {"EMAIL", "PHONE_NUMBER"} <= {f["format"] for f in second["inputFields"]}
    assert [f["format"] for f in third["inputFields"]].count("EMAIL") == 2
    for template in (second, third):
        assert template["status"] == "ACTIVE" and not template["disableIssue"]


def test_the_same_seed_makes_the_same_templates_and_another_seed_makes_others():
    first, again, other = SmartPagesSandbox(seed=7), SmartPagesSandbox(seed=7), SmartPagesSandbox(seed=8)
    try:

        def without_urls(sandbox):
            return [dict(sandbox.get_template(i), deliveryPageUrl=None) for i in sandbox.template_ids()]

        assert without_urls(first) == without_urls(again)
        assert first.template_ids()[1:] != other.template_ids()[1:]
        assert first.template_ids()[0] == other.template_ids()[0] == DEMO_TEMPLATE_ID
    finally:
        for sandbox in (first, again, other):
            sandbox.stop()


def test_an_unknown_template_id_gets_404_with_a_json_error(sandbox, api):
    reply = api.get(f"{sandbox.url}/api/v1/pass-template/{uuid.uuid4()}", timeout=TIMEOUT)
    assert reply.status_code == 404
    assert reply.json()["error"]


def test_changes_made_in_python_show_up_over_http(sandbox, api):
    added = sandbox.add_template(type="COUPON", name="Nýr afsláttarmiði")
    sandbox.update_template(DEMO_TEMPLATE_ID, name="Klúbbkortið 2026")
    removed_id = sandbox.template_ids()[5]
    sandbox.remove_template(removed_id)

    served = {t["id"]: t for t in fetch_all_templates(api, sandbox)}
    assert served[added["id"]]["name"] == "Nýr afsláttarmiði" and served[added["id"]]["type"] == "COUPON"
    assert served[DEMO_TEMPLATE_ID]["name"] == "Klúbbkortið 2026"
    assert removed_id not in served and len(served) == 25
    assert api.get(f"{sandbox.url}/api/v1/pass-template/{removed_id}", timeout=TIMEOUT).status_code == 404
    # get_template hands out copies: changing one does not change what is served.
    sandbox.get_template(DEMO_TEMPLATE_ID)["name"] = "changed in the caller"
    assert sandbox.get_template(DEMO_TEMPLATE_ID)["name"] == "Klúbbkortið 2026"


# ---------------------------------------------------------------------- passes


def test_a_pass_can_be_created_read_and_voided(sandbox, api):
    created = create_demo_pass(api, sandbox, external_id="gudrun@example.is")
    assert created.status_code == 201
    issued = created.json()
    assert issued["passTemplateId"] == DEMO_TEMPLATE_ID
    assert issued["externalIdentifier"] == "gudrun@example.is"
    assert (issued["status"], issued["isVoided"]) == ("ACTIVE", False)
    assert issued["distributionUrl"] == f"{sandbox.url}/distribution/pass/{issued['id']}"
    assert issued["createdAt"].endswith("Z")
    uuid.UUID(issued["id"])

    read = api.get(f"{sandbox.url}/api/v1/pass/{issued['id']}", timeout=TIMEOUT)
    assert read.status_code == 200 and read.json() == issued

    voided = api.put(f"{sandbox.url}/api/v1/pass/{issued['id']}", json={"isVoided": True}, timeout=TIMEOUT)
    assert voided.status_code == 200
    assert (voided.json()["status"], voided.json()["isVoided"]) == ("VOIDED", True)
    assert sandbox.passes(DEMO_TEMPLATE_ID)[0]["status"] == "VOIDED"


def test_an_unknown_pass_id_gets_404(sandbox, api):
    assert api.get(f"{sandbox.url}/api/v1/pass/{uuid.uuid4()}", timeout=TIMEOUT).status_code == 404
    assert (
        api.put(f"{sandbox.url}/api/v1/pass/{uuid.uuid4()}", json={"isVoided": True}, timeout=TIMEOUT).status_code
        == 404
    )


def test_a_second_pass_with_the_same_external_identifier_gets_409_with_the_existing_pass_id(sandbox, api):
    first = create_demo_pass(api, sandbox, external_id="gudrun@example.is").json()
    duplicate = create_demo_pass(api, sandbox, external_id="gudrun@example.is")
    assert duplicate.status_code == 409
    assert duplicate.json() == {
        "error": "externalIdentifier already in use for this pass template",
        "passId": first["id"],
    }
    # Unique per template only, and passes without one never clash.
    assert create_demo_pass(api, sandbox, external_id="someone-else").status_code == 201
    assert create_demo_pass(api, sandbox).status_code == 201
    assert create_demo_pass(api, sandbox).status_code == 201
    assert len(sandbox.passes(DEMO_TEMPLATE_ID)) == 4


def test_the_same_external_identifier_is_fine_on_another_template(sandbox, api):
    other_template = sandbox.add_template(
        type="MEMBER",
        status="ACTIVE",
        disableIssue=False,
        inputFields=[
            {
                "label": "Nafn",
                "identifier": "name",
                "isMandatory": True,
                "isUnique": False,
                "format": "TEXT",
                "type": "ISSUER",
            }
        ],
    )
    assert create_demo_pass(api, sandbox, external_id="shared").status_code == 201
    reply = api.post(
        f"{sandbox.url}/api/v1/pass",
        json={
            "passTemplateId": other_template["id"],
            "externalIdentifier": "shared",
            "inputFields": [{"identifier": "name", "value": "Ýmir"}],
        },
        timeout=TIMEOUT,
    )
    assert reply.status_code == 201


def test_pass_creation_is_refused_with_a_reason_when_the_template_cannot_issue_it(sandbox, api):
    sandbox.update_template(sandbox.template_ids()[1], status="VOIDED")
    sandbox.update_template(sandbox.template_ids()[2], disableIssue=True)
    url = f"{sandbox.url}/api/v1/pass"
    refused = {
        "voided template": create_demo_pass(api, sandbox, template_id=sandbox.template_ids()[1]),
        "issuing disabled": create_demo_pass(api, sandbox, template_id=sandbox.template_ids()[2]),
        "mandatory field missing": api.post(
            url,
            json={"passTemplateId": DEMO_TEMPLATE_ID, "inputFields": [{"identifier": "name", "value": "Jón"}]},
            timeout=TIMEOUT,
        ),
        "unknown identifier": api.post(
            url,
            json={
                "passTemplateId": DEMO_TEMPLATE_ID,
                "inputFields": [
                    {"identifier": "name", "value": "Jón"},
                    {"identifier": "email", "value": "jon@example.is"},
                    {"identifier": "shoe_size", "value": "44"},
                ],
            },
            timeout=TIMEOUT,
        ),
        "not JSON": api.post(url, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=TIMEOUT),
    }
    for reason, reply in refused.items():
        assert reply.status_code == 400, reason
        assert reply.json()["error"], reason
    assert "shoe_size" in refused["unknown identifier"].json()["error"]
    assert "email" in refused["mandatory field missing"].json()["error"]

    unknown_template = create_demo_pass(api, sandbox, template_id=str(uuid.uuid4()))
    assert unknown_template.status_code == 404
    assert sandbox.passes() == []


def test_fifty_concurrent_posts_of_one_external_identifier_create_exactly_one_pass(sandbox):
    barrier = threading.Barrier(50)
    statuses, pass_ids = [], []
    record = threading.Lock()

    def claim():
        with requests.Session() as session:
            session.headers.update(bearer())
            barrier.wait()
            reply = create_demo_pass(session, sandbox, external_id="race@example.is")
        with record:
            statuses.append(reply.status_code)
            pass_ids.append(reply.json().get("id") or reply.json().get("passId"))

    threads = [threading.Thread(target=claim) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [201] + [409] * 49
    assert len(set(pass_ids)) == 1
    assert [p["id"] for p in sandbox.passes(DEMO_TEMPLATE_ID)] == pass_ids[:1]


def test_the_distribution_page_is_a_plain_stand_in_that_needs_no_auth(sandbox, api):
    issued = create_demo_pass(api, sandbox).json()
    page = requests.get(issued["distributionUrl"], timeout=TIMEOUT)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "sandbox" in page.text and issued["id"] in page.text
    assert requests.get(f"{sandbox.url}/distribution/pass/{uuid.uuid4()}", timeout=TIMEOUT).status_code == 404
    delivery = requests.get(sandbox.get_template(DEMO_TEMPLATE_ID)["deliveryPageUrl"], timeout=TIMEOUT)
    assert delivery.status_code == 200 and "Klúbbkort Sundfélagsins" in delivery.text


# ---------------------------------------------------------------------- faults


def test_a_broken_json_page_is_invalid_json_on_that_page_only_and_every_time(api):
    with SmartPagesSandbox(templates=60, faults=Faults(broken_json_page=1)) as sandbox:
        for _ in range(2):
            broken = api.get(f"{sandbox.url}/api/v1/pass-template", params={"page": 1}, timeout=TIMEOUT)
            assert broken.status_code == 200
            with pytest.raises(ValueError):
                json.loads(broken.content)
        for page in (0, 2):
            reply = api.get(f"{sandbox.url}/api/v1/pass-template", params={"page": page}, timeout=TIMEOUT)
            assert len(reply.json()["data"]) == 20


def test_error_faults_hit_about_the_configured_fraction_and_repeat_with_the_same_seed(api):
    def statuses(seed):
        with SmartPagesSandbox(templates=1, faults=Faults(error_rate=0.25, seed=seed)) as sandbox:
            replies = [
                api.get(f"{sandbox.url}/api/v1/pass-template/{DEMO_TEMPLATE_ID}", timeout=TIMEOUT) for _ in range(400)
            ]
            assert all(r.json()["error"] for r in replies if r.status_code == 503)
            assert sandbox.request_count("GET") == 400
            return [r.status_code for r in replies]

    first = statuses(seed=3)
    assert set(first) == {200, 503}
    assert 70 <= first.count(503) <= 130  # 100 expected
    assert statuses(seed=3) == first
    assert statuses(seed=4) != first


def test_a_rate_limit_fault_answers_429_with_retry_after(sandbox, api):
    sandbox.faults = Faults(rate_limit_rate=1.0, retry_after=7)
    reply = api.get(f"{sandbox.url}/api/v1/pass-template", timeout=TIMEOUT)
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "7"
    assert reply.json()["error"]


def test_a_reset_fault_drops_the_connection_without_an_answer(sandbox, api):
    sandbox.faults = Faults(reset_rate=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        api.get(f"{sandbox.url}/api/v1/pass-template", timeout=TIMEOUT)
    sandbox.faults = Faults()
    assert api.get(f"{sandbox.url}/api/v1/pass-template", timeout=TIMEOUT).status_code == 200
    assert sandbox.request_count("GET", "/api/v1/pass-template") == 2


def test_fault_scope_limits_the_faults_to_templates_or_passes(sandbox, api):
    sandbox.faults = Faults(error_rate=1.0, scope="passes")
    assert api.get(f"{sandbox.url}/api/v1/pass-template", timeout=TIMEOUT).status_code == 200
    assert create_demo_pass(api, sandbox).status_code == 503
    assert sandbox.passes() == []

    sandbox.faults = Faults(error_rate=1.0, scope="templates")
    assert api.get(f"{sandbox.url}/api/v1/pass-template", timeout=TIMEOUT).status_code == 503
    assert create_demo_pass(api, sandbox).status_code == 201


def test_mutate_after_page_changes_the_list_under_a_paging_client(api):
    with SmartPagesSandbox(templates=50, faults=Faults(mutate_after_page=0)) as sandbox:
        ids_before = sandbox.template_ids()
        first = api.get(f"{sandbox.url}/api/v1/pass-template", params={"page": 0}, timeout=TIMEOUT).json()
        second = api.get(f"{sandbox.url}/api/v1/pass-template", params={"page": 1}, timeout=TIMEOUT).json()

        assert first["totalItems"] == 50 and second["totalItems"] != 50
        ids_after = sandbox.template_ids()
        assert ids_before[-1] not in ids_after
        assert ids_after[2:] == ids_before[:-1]  # everything moved two places towards later pages
        # So the client sees the last two of page 0 again on page 1.
        assert [t["id"] for t in second["data"][:2]] == [t["id"] for t in first["data"][-2:]]

        # Only once per Faults.
        api.get(f"{sandbox.url}/api/v1/pass-template", params={"page": 0}, timeout=TIMEOUT)
        assert sandbox.template_ids() == ids_after


def test_request_counts_include_faulted_requests_and_can_be_reset(sandbox, api):
    sandbox.faults = Faults(error_rate=1.0, scope="templates")
    for _ in range(3):
        api.get(f"{sandbox.url}/api/v1/pass-template", timeout=TIMEOUT)
    create_demo_pass(api, sandbox)
    assert sandbox.request_count() == 4
    assert sandbox.request_count("GET", "/api/v1/pass-template") == 3
    assert sandbox.request_count("POST") == 1
    sandbox.reset_counts()
    assert sandbox.request_count() == 0


def test_a_stopped_sandbox_stops_answering_kept_alive_connections(api):
    sandbox = SmartPagesSandbox(templates=1).start()
    assert api.get(f"{sandbox.url}/api/v1/pass-template", timeout=TIMEOUT).status_code == 200
    sandbox.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        api.get(f"{sandbox.url}/api/v1/pass-template", timeout=TIMEOUT)


def test_the_hostile_items_switch_serves_data_no_mirror_can_store_as_it_is(sandbox, api):
    from sandbox import HOSTILE_TEMPLATE_ID, HOSTILE_TOTAL_ITEMS

    sandbox.faults = Faults(hostile_items=True)
    url = f"{sandbox.url}/api/v1/pass-template"
    first = api.get(url, params={"page": 0, "page_size": 10}, timeout=TIMEOUT).json()
    second = api.get(url, params={"page": 1, "page_size": 10}, timeout=TIMEOUT).json()

    assert (first["totalItems"], second["totalItems"], first["totalPages"]) == (HOSTILE_TOTAL_ITEMS,) * 2 + (3,)
    assert len(first["data"]) == 14 and len(second["data"]) == 10  # the hostile items come on top of page 0
    hostile = first["data"][0]
    assert hostile["id"] == HOSTILE_TEMPLATE_ID
    assert len(hostile["name"]) > 5000 and "\x00" in hostile["name"] and len(hostile["status"]) == 40
    assert hostile["deliveryPageUrl"].startswith("javascript:")
    assert first["data"][2] == 42

    sandbox.faults = Faults()
    assert api.get(url, params={"page": 0, "page_size": 10}, timeout=TIMEOUT).json()["totalItems"] == 25
