"""Request and response bodies of the gateway, as marshmallow schemas (also the OpenAPI document)."""
from __future__ import annotations

from marshmallow import Schema, fields


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


class PushBodySchema(Schema):
    """A JSON document the route's first transformer reads: a canonical document, a vendor
    alarm document, or an array of alarms."""
