"""Bodies of the request endpoints (IEC 61968-100 style), as marshmallow schemas."""
from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

ACTIONS = ("connect", "disconnect", "load-limit", "credit-update", "payment-mode")
METER = fields.String(validate=validate.Length(min=1, max=64))


class RequestHeaderSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    Verb = fields.String()
    Noun = fields.String()
    MessageID = fields.String(validate=validate.Length(min=1, max=128),
                              metadata={"description": "the sender's id; a resend with the same id is answered, "
                                                       "not executed again"})
    CorrelationID = fields.String(validate=validate.Length(max=128))
    AsyncReplyFlag = fields.Boolean(load_default=False)
    ReplyAddress = fields.Url(require_tld=False, schemes={"http", "https"})

    @validates_schema
    def _async_needs_address(self, data, **kwargs):
        if data.get("AsyncReplyFlag") and not data.get("ReplyAddress"):
            raise ValidationError("AsyncReplyFlag needs a ReplyAddress", "ReplyAddress")


class MeterReadingsRequest(Schema):
    class Meta:
        unknown = EXCLUDE

    meters = fields.List(METER, required=True, validate=validate.Length(min=1))
    readingTypes = fields.List(fields.String(), load_default=None)


class BillingDeterminantsRequest(Schema):
    class Meta:
        unknown = EXCLUDE

    usagePoint = fields.String(required=True, validate=validate.Length(min=1, max=64))
    from_ = fields.DateTime(required=True, data_key="from")
    to = fields.DateTime(required=True)

    @validates_schema
    def _period(self, data, **kwargs):
        if "from_" in data and "to" in data and data["to"] <= data["from_"]:
            raise ValidationError("'to' must be after 'from'", "to")


class CommandRequest(Schema):
    class Meta:
        unknown = EXCLUDE

    commandId = fields.String(required=True, validate=validate.Length(min=1, max=128))
    action = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    meters = fields.List(METER, required=True, validate=validate.Length(min=1))
    params = fields.Dict(load_default=dict)
    expiresAt = fields.AwareDateTime(metadata={"description": "never executed after this instant "
                                                              "(default: the route's default_expiry_s)"})

    @validates_schema
    def _params(self, data, **kwargs):
        action, params = data.get("action"), data.get("params") or {}
        if action == "load-limit" and not (isinstance(params.get("limit_kw"), (int, float))
                                           and params["limit_kw"] > 0):
            raise ValidationError("load-limit needs params.limit_kw > 0", "params")
        if action == "credit-update" and not isinstance(params.get("amount"), (int, float)):
            raise ValidationError("credit-update needs a numeric params.amount", "params")
        if action == "payment-mode" and params.get("mode") not in ("prepaid", "postpaid"):
            raise ValidationError("payment-mode needs params.mode prepaid or postpaid", "params")


BODIES = {"meter-readings": MeterReadingsRequest, "billing-determinants": BillingDeterminantsRequest,
          "commands": CommandRequest}


class RequestDocumentSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    Header = fields.Nested(RequestHeaderSchema, load_default=dict)
    Request = fields.Dict(required=True)
