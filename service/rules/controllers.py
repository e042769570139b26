"""HTTP surface of the rules slice: thin handlers, one service call each.

Rule bodies are taken as free JSON objects and validated by the rules schema, so that errors name the
rule, the field and the reason (422 with an ``errors`` list), exactly as ``switchboard rules check`` does.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from service.auth import scoped
from service.calls.ids import CallIdPath
from service.db.models import RuleFiring
from service.pagination import Cursor, Limit
from service.rules.offloop import COMPILE_TIMEOUT_SECONDS, off_loop
from service.rules.schemas import FiringOut, FiringPage, RuleOut, RulePage, RuleProblem, ValidationOut
from service.rules.service import RuleService, RuleView

Rules = NamedDependency[RuleService]


def rule_out(view: RuleView) -> RuleOut:
    return RuleOut(
        name=view.rule.name,
        source="file" if view.source == "file" else "api",
        document=dict(view.rule.document),
        compiled=view.rule.compiled_form(),
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


def firing_out(firing: RuleFiring) -> FiringOut:
    detail = firing.detail or {}
    return FiringOut(
        id=firing.id,
        rule=firing.rule_name,
        occurrence=firing.occurrence,
        milestone=detail.get("milestone"),
        status=firing.status,
        due_at=firing.due_at,
        fired_at=firing.fired_at,
        injection_id=firing.injection_id,
        error=firing.error,
        created_at=firing.created_at,
    )


class RuleController(Controller):
    path = "/v1/rules"
    tags = ["rules"]

    @get("/", operation_id="listRules", summary="File and stored rules, by name", **scoped("rules:read"))
    async def list_rules(self, rules: Rules, limit: Limit = 100, cursor: Cursor = None) -> RulePage:
        page, next_cursor = await rules.list_rules(limit=limit, cursor=cursor)
        return RulePage(data=[rule_out(view) for view in page], next_cursor=next_cursor)

    @post(
        "/",
        operation_id="createRule",
        summary="Store a new rule (applies to live calls at once)",
        status_code=HTTP_201_CREATED,
        **scoped("rules:write"),
    )
    async def create_rule(self, data: JSONBody[dict[str, Any]], rules: Rules) -> RuleOut:
        return rule_out(await rules.create_rule(data))

    @post(
        "/validate",
        operation_id="validateRules",
        summary="Compile a rule (or {rules: [...]}) without storing it",
        status_code=HTTP_200_OK,
        **scoped("rules:read"),
    )
    async def validate(self, data: JSONBody[dict[str, Any]], rules: Rules) -> ValidationOut:
        compiled, errors = await off_loop(COMPILE_TIMEOUT_SECONDS, rules.validate, data)
        return ValidationOut(
            valid=not errors,
            rules=[rule.compiled_form() for rule in compiled],
            errors=[RuleProblem(e.rule, e.field, e.reason, e.line) for e in errors],
        )

    @get("/{name:str}", operation_id="getRule", summary="One rule", **scoped("rules:read"))
    async def get_rule(self, name: FromPath[str], rules: Rules) -> RuleOut:
        return rule_out(await rules.get_rule(name))

    @put("/{name:str}", operation_id="putRule", summary="Create or replace a stored rule", **scoped("rules:write"))
    async def put_rule(self, name: FromPath[str], data: JSONBody[dict[str, Any]], rules: Rules) -> Response[RuleOut]:
        view, created = await rules.put_rule(name, data)
        return Response(rule_out(view), status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @delete(
        "/{name:str}",
        operation_id="deleteRule",
        summary="Delete a stored rule",
        status_code=HTTP_204_NO_CONTENT,
        **scoped("rules:write"),
    )
    async def delete_rule(self, name: FromPath[str], rules: Rules) -> None:
        await rules.delete_rule(name)


class FiringController(Controller):
    path = "/v1/calls"
    tags = ["rules"]

    @get(
        "/{call_id:str}/firings",
        operation_id="listCallFirings",
        summary="A call's rule firings, oldest first",
        **scoped("calls:read"),
    )
    async def list_firings(
        self, call_id: CallIdPath, rules: Rules, limit: Limit = 100, cursor: Cursor = None
    ) -> FiringPage:
        page, next_cursor = await rules.list_firings(call_id, limit=limit, cursor=cursor)
        return FiringPage(data=[firing_out(firing) for firing in page], next_cursor=next_cursor)
