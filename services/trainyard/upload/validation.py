"""Field rules of the upload service's requests, checked once at the edge by the interceptor
(App.validators): each returns every violation at once. Rules that need state stay in the domain."""

from __future__ import annotations

from collections.abc import Mapping

from trainyard.api.upload.v1 import messages_pb2 as msgs
from trainyard.runtime.errors import FieldViolation
from trainyard.runtime.interceptors import Validator
from trainyard.runtime.pagination import page_size_violations
from trainyard.upload.store import MAX_PAGE_SIZE


def _list_uploads(request: msgs.ListUploadsRequest) -> list[FieldViolation]:
    return page_size_violations(request.page_size, maximum=MAX_PAGE_SIZE)


VALIDATORS: Mapping[str, Validator] = {
    msgs.ListUploadsRequest.DESCRIPTOR.full_name: _list_uploads,
}
