"""Request and response bodies of the gateway, as marshmallow schemas (also the OpenAPI document)."""
from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields


class ErrorSchema(Schema):
    code = fields.String(required=True, metadata={"example": "FORBIDDEN"})
    level = fields.String(metadata={"example": "FATAL"})
    reason = fields.String(required=True)


class ReplyBodySchema(Schema):
    Result = fields.String(required=True, metadata={"enum": ["OK", "PARTIAL", "FAILED"]})
    Error = fields.List(fields.Nested(ErrorSchema))


class HeaderSchema(Schema):
    Verb = fields.String(metadata={"example": "reply"})
    Noun = fields.String(allow_none=True, metadata={"example": "EndDeviceEvents"})
    Timestamp = fields.String()
    MessageID = fields.String(allow_none=True)
    CorrelationID = fields.String(allow_none=True)


class ReplySchema(Schema):
    """IEC 61968-100-style reply: what every answer of the gateway looks like."""

    Header = fields.Nested(HeaderSchema)
    Reply = fields.Nested(ReplyBodySchema, required=True)
    message_id = fields.String(metadata={"description": "id of the accepted message (202 only)"})
    duplicates = fields.Integer(metadata={"description": "alarms of this request accepted before (not "
                                                          "published again)"})


# --- the request endpoints (/v1/requests/...) ---------------------------------------------
# Their replies come from the systems asked (the MDMS, an HES through the MDMS) and are passed
# on as those wrote them, so these schemas name what gridbus relies on and let the rest through.

class RequestErrorSchema(Schema):
    class Meta:
        unknown = INCLUDE

    code = fields.String(required=True, metadata={"example": "METER_UNREACHABLE"})
    level = fields.String(metadata={"example": "FATAL", "description": "FATAL, WARNING, or INFORM on an "
                                                                       "answer that has no outcome yet"})
    reason = fields.String(required=True)
    meter = fields.String(metadata={"description": "the meter the error is about, when it is about one"})


class RequestReplyBodySchema(Schema):
    class Meta:
        unknown = INCLUDE

    Result = fields.String(metadata={"enum": ["OK", "PARTIAL", "FAILED"],
                                     "description": "absent while the request has no outcome (pending): "
                                                    "an acknowledgement is never a reply"})
    Error = fields.List(fields.Nested(RequestErrorSchema))


class RequestAnswerSchema(Schema):
    """What a request endpoint answers: the reply of the systems asked, a FAILED reply of the
    gateway's, or, before there is an outcome (202, 504), a Reply with no Result, the request
    id and ``pending``: GET the request id for the outcome."""

    class Meta:
        unknown = INCLUDE

    Header = fields.Dict(metadata={"description": "IEC 61968-100 header: Verb, Noun, Timestamp, Source, "
                                                  "CorrelationID"})
    Reply = fields.Nested(RequestReplyBodySchema, required=True)
    Payload = fields.Dict(metadata={"description": "what was asked for (MeterReadings, BillingDeterminants, "
                                                   "EndDeviceControls)"})
    request_id = fields.String(metadata={"description": "the gateway's id of the request: GET /v1/requests/{id}"})
    state = fields.String(metadata={"example": "replied"})
    pending = fields.Boolean(metadata={"description": "true: no outcome yet"})
    duplicate = fields.Boolean(metadata={"description": "true: a request sent before with this id; "
                                                        "answered, not executed again"})
    note = fields.String()


class RequestSummarySchema(Schema):
    """One request as the gateway keeps it."""

    class Meta:
        unknown = INCLUDE

    request_id = fields.String(required=True)
    kind = fields.String(metadata={"enum": ["meter-readings", "billing-determinants", "commands"]})
    action = fields.String(allow_none=True)
    system = fields.String()
    requested_by = fields.String(allow_none=True)
    meters = fields.Integer()
    state = fields.String()
    result = fields.String(allow_none=True)
    created = fields.Float()
    updated = fields.Float()
    expires = fields.Float(allow_none=True)
    approved_by = fields.String(allow_none=True)
    reply = fields.Dict(allow_none=True, metadata={"description": "the reply, once there is one"})


class RequestStatusSchema(RequestSummarySchema):
    """``GET /v1/requests/{request_id}``: the request, its reply and its audit trail."""

    audit = fields.List(fields.Dict(), metadata={"description": "who did what and when"})


class RequestsFoundSchema(Schema):
    """``GET /v1/requests?messageId=...`` (or ``commandId``): the caller's requests with that id."""

    requests = fields.List(fields.Nested(RequestSummarySchema), required=True)
    count = fields.Integer(required=True)
