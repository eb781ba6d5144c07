"""review.py: strict AdmissionReview parsing, and the answer's encoding."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from extender.admission.review import Review, ReviewError, answer, parse_review


def review_body(request: Any = None, **top: Any) -> bytes:
    doc = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", **top}
    if request is not None:
        doc["request"] = request
    return orjson.dumps(doc)


POD = {"metadata": {"name": "p"}, "spec": {}}
CREATE = {
    "uid": "u-1",
    "operation": "CREATE",
    "kind": {"group": "", "version": "v1", "kind": "Pod"},
    "object": POD,
}


def test_a_create_review_is_read() -> None:
    assert parse_review(review_body(CREATE)) == Review("u-1", "CREATE", "Pod", POD)


def test_an_update_or_delete_needs_no_object() -> None:
    request = {**CREATE, "operation": "DELETE"}
    del request["object"]
    assert parse_review(review_body(request)) == Review("u-1", "DELETE", "Pod", {})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'"AdmissionReview"', "not a JSON object"),
        (
            orjson.dumps({"kind": "AdmissionReview", "request": CREATE}),
            "expected apiVersion admission.k8s.io/v1",
        ),
        (review_body(CREATE, apiVersion="admission.k8s.io/v1beta1"), "expected apiVersion"),
        (review_body(CREATE, kind="TokenReview"), "kind AdmissionReview"),
        (review_body(), "request is missing"),
        (review_body(["CREATE"]), "request is missing or not an object"),
        (review_body({k: v for k, v in CREATE.items() if k != "uid"}), "request.uid"),
        (review_body({**CREATE, "uid": ""}), "request.uid"),
        (review_body({**CREATE, "uid": 7}), "request.uid"),
        (review_body({k: v for k, v in CREATE.items() if k != "operation"}), "request.operation"),
        (review_body({k: v for k, v in CREATE.items() if k != "kind"}), "request.kind.kind"),
        (review_body({**CREATE, "kind": "Pod"}), "request.kind.kind"),
        (review_body({k: v for k, v in CREATE.items() if k != "object"}), "request.object"),
        (review_body({**CREATE, "object": "pod"}), "request.object"),
    ],
)
def test_garbage_is_refused_with_the_reason(body: bytes, message: str) -> None:
    with pytest.raises(ReviewError, match=message):
        parse_review(body)


def test_the_answer_allows_and_carries_the_patch_as_base64_json() -> None:
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"a/b": "c"}}]
    doc = answer("u-1", ops)
    assert doc["apiVersion"] == "admission.k8s.io/v1"
    assert doc["kind"] == "AdmissionReview"
    response = doc["response"]
    assert (response["uid"], response["allowed"], response["patchType"]) == (
        "u-1",
        True,
        "JSONPatch",
    )
    assert orjson.loads(base64.b64decode(response["patch"], validate=True)) == ops


@pytest.mark.parametrize("patch", [None, []])
def test_without_a_patch_there_is_no_patch_type(patch: list[dict[str, Any]] | None) -> None:
    assert answer("u-2", patch) == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "u-2", "allowed": True},
    }
