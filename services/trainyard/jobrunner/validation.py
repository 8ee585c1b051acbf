"""Field rules of the job-runner's requests, checked once at the edge by the interceptor
(App.validators): each returns every violation at once. Rules that need state stay in the domain."""

from __future__ import annotations

from collections.abc import Mapping

from trainyard.api.jobrunner.v1 import messages_pb2 as msgs
from trainyard.jobrunner.training_jobs import pipeline_violations
from trainyard.runtime.errors import FieldViolation
from trainyard.runtime.interceptors import Validator
from trainyard.runtime.pagination import page_size_violations


def _create_training_job(request: msgs.CreateTrainingJobRequest) -> list[FieldViolation]:
    return pipeline_violations(request.pipeline or request.pipeline_step)


def _list(request: msgs.ListTrainingJobsRequest | msgs.ListJobsRequest) -> list[FieldViolation]:
    return page_size_violations(request.page_size)


VALIDATORS: Mapping[str, Validator] = {
    msgs.CreateTrainingJobRequest.DESCRIPTOR.full_name: _create_training_job,
    msgs.ListTrainingJobsRequest.DESCRIPTOR.full_name: _list,
    msgs.ListJobsRequest.DESCRIPTOR.full_name: _list,
}
