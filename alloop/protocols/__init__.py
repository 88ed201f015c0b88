"""The contracts between alloop's core and its plugins.

The loop, the workspace and ``alloop serve`` speak only these protocols; strategies, learners,
encoders, teachers and connectors (built-in or third-party, found through entry points)
implement them and are built one way: ``Cls.from_params(params, context=...)``.
Optional capabilities are small protocols checked with ``isinstance``
(:class:`CompletePull`, :class:`FinalAnnotations`, :class:`WebhookSource`, :class:`IncrementalPull`,
:class:`RoundPresenter`, :class:`StreamPresenter`, :class:`FeatureLearner`,
:class:`ExternalLearner`).
"""

from alloop.protocols.connector import (
    SECRET_HEADER,
    AnnotationRecord,
    CompletePull,
    Connector,
    ConnectorContext,
    FinalAnnotations,
    IncrementalPull,
    Prediction,
    PullResult,
    RoundPresenter,
    StreamPresenter,
    TaskList,
    TaskLookup,
    TaskPayload,
    TaskRef,
    WebhookEvent,
    WebhookSource,
)
from alloop.protocols.context import PluginContext
from alloop.protocols.encoder import Encoder, SampleRef
from alloop.protocols.learner import (
    LEARNER_INPUTS,
    ExportItem,
    ExternalLearner,
    ExternalResult,
    FeatureLearner,
    Learner,
)
from alloop.protocols.teacher import Teacher, TeacherContext

__all__ = [
    "LEARNER_INPUTS",
    "SECRET_HEADER",
    "AnnotationRecord",
    "CompletePull",
    "Connector",
    "ConnectorContext",
    "Encoder",
    "ExportItem",
    "ExternalLearner",
    "ExternalResult",
    "FeatureLearner",
    "FinalAnnotations",
    "IncrementalPull",
    "Learner",
    "PluginContext",
    "Prediction",
    "PullResult",
    "RoundPresenter",
    "SampleRef",
    "StreamPresenter",
    "TaskList",
    "TaskLookup",
    "TaskPayload",
    "TaskRef",
    "Teacher",
    "TeacherContext",
    "WebhookEvent",
    "WebhookSource",
]
